"""`ladeda predict` on a folder: CSV rows, skipped files, metrics, heatmaps, clear errors."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ladeda.data.folders import find_images, label_from_path
from ladeda.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ladeda.inference import cli, predict
from ladeda.models import LaDeDa9, TinyLaDeDa
from ladeda.models.checkpoints import save_checkpoint


def _save(path, h, w, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(arr).save(path)


@pytest.fixture
def folder(tmp_path):
    """Labelled folder: mixed sizes (odd too), png and jpg, a nested duplicate base name, a corrupt file."""
    root = tmp_path / "images"
    sizes = {"0_real/a.png": (64, 64), "0_real/b.jpg": (64, 64), "0_real/c.png": (67, 45),
             "1_fake/a.png": (64, 64), "1_fake/d.jpg": (33, 80), "1_fake/deep/a.png": (40, 41),
             "unlabelled/e.png": (50, 50)}
    for k, (rel, (h, w)) in enumerate(sizes.items()):
        _save(root / rel, h, w, k)
    (root / "1_fake" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "notes.txt").write_text("not an image")
    return root, sizes


@pytest.fixture
def tiny_ckpt(tmp_path):
    torch.manual_seed(0)
    model = TinyLaDeDa()
    path = tmp_path / "student.pt"
    save_checkpoint(path, model, image_size=64)
    return path, model.eval()


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_folder(folder, tiny_ckpt, tmp_path, capsys):
    root, sizes = folder
    ckpt, model = tiny_ckpt
    out, heat = tmp_path / "out" / "preds.csv", tmp_path / "heat"
    cli.main(["predict", "--weights", str(ckpt), "--input", str(root), "--out", str(out), "--heatmaps", str(heat),
              "--batch-size", "2", "--threads", "1", "--no-progress"])
    captured = capsys.readouterr()
    rows = _read(out)
    assert list(rows[0]) == list(predict.CSV_COLUMNS)
    assert sorted(r["path"] for r in rows) == sorted(str(root / rel) for rel in sizes)  # every readable image
    for row in rows:
        rel = str(Path(row["path"]).relative_to(root))
        assert (int(row["height"]), int(row["width"])) == sizes[rel]
        p, logit = float(row["fake_probability"]), float(row["logit"])
        assert p == pytest.approx(1 / (1 + math.exp(-logit)), abs=2e-6)
        assert row["prediction"] == ("fake" if p > 0.5 else "real")
        assert row["model"] == "TinyLaDeDa-right_diag@student.pt"
        # heatmap: mirrored relative path (the three a.png stay distinct), same size as the image
        hm = heat / (rel + ".png")
        assert Image.open(hm).size == sizes[rel][::-1]

    # the logit is the plain model's on the ImageNet-normalised image (independent reference)
    arr = np.asarray(Image.open(root / "0_real/c.png").convert("RGB"), dtype=np.float32) / 255
    x = (torch.from_numpy(arr).permute(2, 0, 1)[None] - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = float(model(x))
    row = next(r for r in rows if r["path"].endswith("c.png"))
    assert float(row["logit"]) == pytest.approx(expected, abs=1e-4)

    assert "broken.png" in captured.err and "warning: skipped" in captured.err
    assert "scored 7 images" in captured.out and "skipped 1" in captured.out
    assert "metrics on 6 labelled images (3 real, 3 fake" in captured.out and "auc" in captured.out
    assert "(1 unlabelled image not included)" in captured.out


def test_cli_glob_official_weights_threshold_and_resize(folder, tmp_path, capsys):
    root, _ = folder
    weights = tmp_path / "official.pth"
    torch.save(LaDeDa9("NPR", width=8).state_dict(), weights)
    out = tmp_path / "p.csv"
    cli.main(["predict", "--weights", str(weights), "--arch", "LaDeDa9", "--preprocess", "NPR", "--npr-scale", "2/3",
              "--input", str(root / "**" / "*.png"), "--out", str(out), "--threshold", "0", "--resize", "48",
              "--heatmaps", str(tmp_path / "heat"), "--threads", "1", "--no-progress"])
    rows = _read(out)
    assert len(rows) == 5 and all(r["path"].endswith(".png") for r in rows)
    for row in rows:  # scored at 48x48, but heatmaps and CSV sizes are the original image's
        rel = Path(row["path"]).relative_to(root)
        assert Image.open(tmp_path / "heat" / f"{rel}.png").size == (int(row["width"]), int(row["height"]))
    assert all(r["prediction"] == "fake" for r in rows)  # threshold 0: every probability is above it
    assert rows[0]["model"] == "LaDeDa9-w8-NPRx0.666667@official.pth"
    assert "(5 fake, 0 real at threshold 0)" in capsys.readouterr().out


def test_chunking_keeps_order_and_scores(folder, tiny_ckpt):
    root, _ = folder
    _, model = tiny_ckpt
    files, _ = find_images(root)
    small = list(predict.iter_predictions(model, files, batch_size=1, chunk_files=2))
    large = list(predict.iter_predictions(model, files, batch_size=8, chunk_files=100))
    assert [i.path for i in small] == [i.path for i in large] == files
    for a, b in zip(small, large):
        assert type(a) is type(b)
        if isinstance(a, predict.Prediction):
            assert a.logit == pytest.approx(b.logit, abs=1e-5)


def test_label_from_path():
    assert label_from_path("x/0_real/a.png") == 0
    assert label_from_path("x/FAKE/sub/a.png") == 1
    assert label_from_path("real/1_fake/a.png") == 1  # the nearest folder wins
    assert label_from_path("x/realistic/a.png") is None


def _one_line_error(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        cli.main(["predict", *argv])
    assert exc.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and errors[0].startswith("error: ")
    return errors[0]


def test_clear_errors(folder, tiny_ckpt, tmp_path, capsys, monkeypatch):
    root, _ = folder
    ckpt, _ = tiny_ckpt
    out = tmp_path / "p.csv"
    err = _one_line_error(capsys, ["--weights", str(tmp_path / "missing.pt"), "--input", str(root), "--out", str(out)])
    assert "missing.pt" in err
    (tmp_path / "empty").mkdir()
    err = _one_line_error(capsys, ["--weights", str(ckpt), "--input", str(tmp_path / "empty"), "--out", str(out)])
    assert "no image files" in err
    err = _one_line_error(capsys, ["--weights", str(ckpt), "--input", str(tmp_path / "nope"), "--out", str(out)])
    assert "no such file or folder" in err
    monkeypatch.chdir(root)  # an empty --input is refused, not read as the working folder
    err = _one_line_error(capsys, ["--weights", str(ckpt), "--input", "", "--out", str(out)])
    assert "--input is empty" in err and not out.exists()
    official = tmp_path / "official.pth"
    torch.save(TinyLaDeDa().state_dict(), official)
    err = _one_line_error(capsys, ["--weights", str(official), "--input", str(root), "--out", str(out)])
    assert "--arch" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"garbage")
    err = _one_line_error(capsys, ["--weights", str(ckpt), "--input", str(bad), "--out", str(out), "--no-progress"])
    assert "none of the 1 image files" in err
    assert not out.exists() and not list(tmp_path.glob(".p.csv*"))  # nothing half-written


def _no_temp_files(root):
    """No hidden `.name.XXXX.tmp` file of an atomic write anywhere under `root`."""
    return not [p for p in Path(root).rglob(".*.tmp")]


def test_out_is_a_folder(folder, tiny_ckpt, tmp_path, capsys):
    """`--out` naming an existing folder is refused up front (it cannot be replaced by a CSV)."""
    root, _ = folder
    ckpt, _ = tiny_ckpt
    out = tmp_path / "results"
    out.mkdir()
    err = _one_line_error(capsys, ["--weights", str(ckpt), "--input", str(root), "--out", str(out), "--no-progress"])
    assert "--out" in err and str(out) in err and "is a folder" in err
    assert out.is_dir() and not list(out.iterdir()) and _no_temp_files(tmp_path)


def test_out_in_read_only_folder(folder, tiny_ckpt, read_only_folder, capsys):
    """`--out` inside a folder that cannot be written to is refused before any scoring."""
    root, _ = folder
    ckpt, _ = tiny_ckpt
    out = read_only_folder / "p.csv"
    err = _one_line_error(capsys, ["--weights", str(ckpt), "--input", str(root), "--out", str(out), "--no-progress"])
    assert "--out" in err and str(read_only_folder) in err and "not writable" in err
    assert not list(read_only_folder.iterdir())


def test_out_parent_is_a_file(folder, tiny_ckpt, tmp_path, capsys):
    """`--out somefile.txt/p.csv`: the parent is a file, so no folder can be made there; say which one."""
    root, _ = folder
    ckpt, _ = tiny_ckpt
    blocker = tmp_path / "somefile.txt"
    blocker.write_text("keep me")
    out = blocker / "sub" / "p.csv"
    err = _one_line_error(capsys, ["--weights", str(ckpt), "--input", str(root), "--out", str(out), "--no-progress"])
    assert "--out" in err and str(blocker) in err and "is a file" in err
    assert blocker.read_text() == "keep me" and _no_temp_files(tmp_path)


def test_heatmaps_is_a_file(folder, tiny_ckpt, tmp_path, capsys):
    """`--heatmaps` naming an existing file is refused up front, before a CSV is written."""
    root, _ = folder
    ckpt, _ = tiny_ckpt
    heat, out = tmp_path / "heat.png", tmp_path / "p.csv"
    heat.write_bytes(b"not a folder")
    err = _one_line_error(capsys, ["--weights", str(ckpt), "--input", str(root), "--out", str(out),
                                   "--heatmaps", str(heat), "--no-progress"])
    assert "--heatmaps" in err and str(heat) in err and "is a file" in err
    assert not out.exists() and heat.read_bytes() == b"not a folder" and _no_temp_files(tmp_path)


def test_nan_weights_refused(folder, tmp_path, capsys):
    """A checkpoint with a NaN weight is refused when loaded, naming the file and the parameter, no CSV."""
    root, _ = folder
    model = TinyLaDeDa()
    with torch.no_grad():
        model.conv2.weight[0, 0, 0, 0] = float("nan")
    ckpt, out = tmp_path / "diverged.pt", tmp_path / "p.csv"
    save_checkpoint(ckpt, model, image_size=64)
    err = _one_line_error(capsys, ["--weights", str(ckpt), "--input", str(root), "--out", str(out), "--no-progress"])
    assert "diverged.pt" in err and "conv2.weight" in err and "not finite" in err
    assert not out.exists() and _no_temp_files(tmp_path)


def test_non_finite_logits_refused(folder, tmp_path, capsys):
    """Finite but huge weights overflow to inf/NaN logits: the run stops with a clear line and no CSV."""
    root, _ = folder
    model = TinyLaDeDa()
    with torch.no_grad():
        model.conv1.weight.mul_(1e30)
        model.conv2.weight.mul_(1e30)
    ckpt, out = tmp_path / "overflow.pt", tmp_path / "p.csv"
    save_checkpoint(ckpt, model, image_size=64)
    err = _one_line_error(capsys, ["--weights", str(ckpt), "--input", str(root), "--out", str(out), "--no-progress"])
    assert "overflow.pt" in err and "non-finite logit" in err
    assert not out.exists() and _no_temp_files(tmp_path)


def test_sigterm_removes_partial_csv(tiny_ckpt, tmp_path):
    """SIGTERM mid-run (a scheduler or `kill`) leaves neither the CSV nor its hidden temp file; exit non-zero."""
    ckpt, _ = tiny_ckpt
    images = tmp_path / "many"
    for k in range(600):
        _save(images / f"{k:04d}.png", 24, 24, k)
    out = tmp_path / "out" / "p.csv"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ladeda.inference.cli", "predict", "--weights", str(ckpt),
                             "--input", str(images), "--out", str(out), "--batch-size", "1", "--threads", "1",
                             "--no-progress"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(out.parent.glob(".p.csv.*.tmp")):
            assert proc.poll() is None, f"predict ended before it was signalled: {proc.communicate()}"
            assert time.monotonic() < deadline, "predict never started writing"
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and "terminated" in stderr
    assert not out.exists() and not list(out.parent.iterdir())


def test_predict_metrics_with_one_image_per_class(tmp_path, tiny_ckpt, capsys):
    """One real and one fake image: AUC is printed, its interval (undefined) reads n/a instead of a traceback."""
    root = tmp_path / "pair"
    _save(root / "0_real" / "a.png", 32, 32, 0)
    _save(root / "1_fake" / "b.png", 32, 32, 1)
    ckpt, _ = tiny_ckpt
    summary = predict.predict(ckpt, str(root), tmp_path / "p.csv", threads=1, progress=False)
    out = capsys.readouterr().out
    assert "metrics on 2 labelled images (1 real, 1 fake" in out
    assert "auc_ci_low n/a" in out and "auc_se n/a" in out
    assert summary.metrics["auc"] in (0.0, 1.0) and summary.metrics["auc_se"] is None
    assert len(_read(tmp_path / "p.csv")) == 2


def test_one_image_summary_reads_in_the_singular(tmp_path, tiny_ckpt):
    """A single file is the commonest call: its summary says "scored 1 image", not "1 images"."""
    _save(tmp_path / "one.png", 32, 32, 0)
    ckpt, _ = tiny_ckpt
    summary = predict.predict(ckpt, str(tmp_path / "one.png"), tmp_path / "p.csv", threads=1, progress=False)
    assert summary.line(0.5).startswith("scored 1 image (") and len(_read(tmp_path / "p.csv")) == 1
