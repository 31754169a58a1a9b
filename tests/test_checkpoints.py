"""Checkpoints: our self-describing format and the official plain state dicts, with clear mismatch errors."""

import pytest
import torch

from ladeda.models.checkpoints import load_model, read_checkpoint, save_checkpoint
from ladeda.core.errors import LadedaError
from ladeda.models import LaDeDa9, LaDeDa17, TinyLaDeDa

from test_models import randomise_bn


def same_outputs(a, b, size=64):
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        return torch.allclose(a.eval().patch_map(x), b.eval().patch_map(x), atol=1e-6)


def test_our_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = randomise_bn(LaDeDa9(preprocess="NPR", npr_scale=2 / 3, width=8))
    path = tmp_path / "teacher.pth"
    save_checkpoint(path, model, image_size=64, params={"lr": 1e-4}, metrics={"auc": 0.8}, finetuned=True)
    ckpt = read_checkpoint(path)
    assert ckpt["arch"] == "LaDeDa9" and ckpt["width"] == 8 and ckpt["preprocess"] == "NPR"
    assert ckpt["npr_scale"] == pytest.approx(2 / 3) and ckpt["image_size"] == 64
    assert ckpt["metrics"]["auc"] == 0.8 and ckpt["finetuned"] is True
    assert ckpt["normalization"]["mean"] == [0.485, 0.456, 0.406]
    assert set(ckpt["provenance"]) == {"ladeda", "torch", "python"}  # nothing that varies without the inputs
    loaded = load_model(path)
    assert isinstance(loaded, LaDeDa9) and loaded.width == 8 and not loaded.training
    assert same_outputs(model, loaded)
    assert not list(tmp_path.glob(".*tmp")), "no temporary file is left behind"


def test_same_inputs_give_the_same_checkpoint_bytes(tmp_path):
    """No wall-clock time and no temp-file name in the bytes: a rerun with the same inputs changes nothing
    for DVC (torch names its archive after the file it writes unless given an open file)."""
    torch.manual_seed(0)
    model = TinyLaDeDa()
    a, b = tmp_path / "a.pt", tmp_path / "sub" / "other_name.pt"
    save_checkpoint(a, model, image_size=64, metrics={"auc": 0.7})
    save_checkpoint(b, model, image_size=64, metrics={"auc": 0.7})
    assert a.read_bytes() == b.read_bytes()
    save_checkpoint(b, model, image_size=64, metrics={"auc": 0.71})
    assert a.read_bytes() != b.read_bytes()


def test_official_plain_state_dict_loads(tmp_path):
    torch.manual_seed(1)
    model = randomise_bn(TinyLaDeDa("right_diag"))
    path = tmp_path / "WildRF_Tiny_LaDeDa.pth"
    torch.save(model.state_dict(), path)
    loaded = load_model(path, arch="TinyLaDeDa", preprocess="right_diag")
    assert same_outputs(model, loaded)


def test_official_module_prefixed_state_dict_and_width_inferred(tmp_path):
    torch.manual_seed(2)
    model = randomise_bn(LaDeDa9(width=8))
    path = tmp_path / "ddp.pth"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    loaded = load_model(path, arch="LaDeDa9", preprocess="NPR")
    assert loaded.width == 8 and same_outputs(model, loaded)


def test_plain_state_dict_without_arch_is_a_clear_error(tmp_path):
    path = tmp_path / "x.pth"
    torch.save(TinyLaDeDa().state_dict(), path)
    with pytest.raises(LadedaError, match="plain state dict; say what it is"):
        load_model(path)


def test_width_mismatch_names_both_widths(tmp_path):
    path = tmp_path / "w8.pth"
    save_checkpoint(path, LaDeDa9(width=8))
    with pytest.raises(LadedaError, match="is LaDeDa9 width 8.*width=16"):
        load_model(path, width=16)
    torch.save(LaDeDa9(width=8).state_dict(), tmp_path / "plain.pth")
    with pytest.raises(LadedaError, match="is LaDeDa9 width 8, params ask width 16"):
        load_model(tmp_path / "plain.pth", arch="LaDeDa9", width=16)


def test_wrong_arch_names_the_mismatching_keys(tmp_path):
    path = tmp_path / "l17.pth"
    torch.save(LaDeDa17(width=8).state_dict(), path)
    with pytest.raises(LadedaError, match="does not fit LaDeDa9.*shape mismatches.*layer3.0.conv2.weight"):
        load_model(path, arch="LaDeDa9")
    torch.save(TinyLaDeDa().state_dict(), path)
    with pytest.raises(LadedaError, match="missing keys"):
        load_model(path, arch="LaDeDa9")


def test_missing_and_corrupt_files_are_clear_errors(tmp_path):
    with pytest.raises(LadedaError, match="not found"):
        load_model(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(LadedaError, match="cannot be read"):
        load_model(bad, arch="TinyLaDeDa")


def test_cuda_saved_checkpoint_is_loaded_on_cpu(tmp_path, monkeypatch):
    """Official files saved on CUDA load through map_location='cpu' (checked by intercepting torch.load)."""
    path = tmp_path / "t.pth"
    torch.save(TinyLaDeDa().state_dict(), path)
    seen = {}
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_model(path, arch="TinyLaDeDa")
    assert seen["map_location"] == "cpu" and seen["weights_only"] is True
