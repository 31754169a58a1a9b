"""Exported TorchScript / ONNX models give the PyTorch model's logits and patch maps at any size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ladeda.inference import cli
from ladeda.inference.export import export_model, load_torchscript
from ladeda.models import LaDeDa9, TinyLaDeDa
from ladeda.models.checkpoints import save_checkpoint

SHAPES = [(2, 3, 64, 64), (1, 3, 45, 71)]  # two sizes; odd sides (NPR crops them)


def _model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    model = TinyLaDeDa("right_diag") if kind == "tiny" else LaDeDa9("NPR", width=8)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def _reference(model, x):
    with torch.no_grad():
        return model(x).numpy(), model.patch_map(x).numpy()


def _close(a, b):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=2e-5 * max(1.0, float(np.abs(a).max())))


@pytest.mark.parametrize("kind", ["tiny", "ladeda9"])
def test_torchscript_parity(kind, tmp_path):
    model = _model(kind)
    path = export_model(model, tmp_path / "m.pt", "torchscript")
    module, meta = load_torchscript(path)
    assert meta["arch"] == type(model).__name__ and meta["preprocess"] == model.preprocess
    assert "mkldnn" not in str(module.inlined_graph)  # portable ops only
    for shape in SHAPES:
        x = torch.randn(*shape)
        logit, patch = _reference(model, x)
        with torch.no_grad():
            got_logit, got_patch = module(x)
        assert got_patch.shape == patch.shape and got_logit.shape == (shape[0],)
        _close(logit, got_logit.numpy())
        _close(patch, got_patch.numpy())


@pytest.mark.parametrize("kind", ["tiny", "ladeda9"])
def test_onnx_parity(kind, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    model = _model(kind)
    path = export_model(model, tmp_path / "m.onnx", "onnx")
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["arch"] == type(model).__name__ and meta["patch_stride"] == ("2" if kind == "tiny" else "8")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logit", "patch_map"]
    for shape in SHAPES:
        x = torch.randn(*shape)
        logit, patch = _reference(model, x)
        got_logit, got_patch = session.run(None, {"image": x.numpy()})
        assert got_patch.shape == patch.shape
        _close(logit, got_logit)
        _close(patch, got_patch)


def test_export_cli(tmp_path, capsys):
    ckpt = tmp_path / "student.pt"
    save_checkpoint(ckpt, _model("tiny"), image_size=64)
    out = tmp_path / "exported" / "student.ts"
    cli.main(["export", "--weights", str(ckpt), "--format", "torchscript", "--out", str(out)])
    assert out.is_file() and "exported TinyLaDeDa" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        cli.main(["export", "--weights", str(tmp_path / "nope.pt"), "--format", "onnx", "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nope.pt" in err and "\n" not in err


def _export_error(capsys, ckpt, out) -> str:
    """Run `ladeda export` expecting failure: exit 2 and exactly one `error: ...` line, which is returned."""
    with pytest.raises(SystemExit) as exc:
        cli.main(["export", "--weights", str(ckpt), "--format", "torchscript", "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


@pytest.mark.parametrize("case", ["folder", "parent_is_file", "read_only"])
def test_export_refuses_bad_out(case, tmp_path, request, capsys):
    """`--out` that is a folder, lies under a file, or is in a read-only folder: one line naming it, no temp file."""
    ckpt = tmp_path / "student.pt"
    save_checkpoint(ckpt, _model("tiny"), image_size=64)
    if case == "folder":
        out = named = tmp_path / "exported"
        out.mkdir()
        expected = "is a folder"
    elif case == "parent_is_file":
        named = tmp_path / "somefile.txt"
        named.write_text("keep me")
        out = named / "student.ts"
        expected = "is a file"
    else:
        named = request.getfixturevalue("read_only_folder")
        out = named / "student.ts"
        expected = "not writable"
    err = _export_error(capsys, ckpt, out)
    assert "--out" in err and str(named) in err and expected in err
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # no hidden temp file
    assert not (named.is_dir() and list(named.iterdir()))


def test_export_refuses_nan_weights(tmp_path, capsys):
    """A checkpoint with an inf weight is not exported: the line names the file and the parameter."""
    model = _model("tiny")
    with torch.no_grad():
        model.fc.bias.fill_(float("inf"))
    ckpt, out = tmp_path / "diverged.pt", tmp_path / "student.ts"
    save_checkpoint(ckpt, model, image_size=64)
    err = _export_error(capsys, ckpt, out)
    assert "diverged.pt" in err and "fc.bias" in err and "not finite" in err
    assert not out.exists() and not list(tmp_path.glob(".*"))
