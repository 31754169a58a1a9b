"""The data check: each listed problem is caught, blocking ones stop the stage with one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ladeda.data.check import analyze_dataset, raise_on_blocking, unreadable_files
from ladeda.data.folders import scan_split
from ladeda.core.errors import LadedaError
from helpers import write_params

ROOT = Path(__file__).resolve().parents[1]


def _img(path: Path, seed: int, fmt: str = "PNG", size=(16, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)


def _dataset(root: Path, n: int = 3, fake_fmt: str = "PNG", real_fmt: str = "PNG", splits=("train", "val", "test")):
    """A clean dataset: n real + n fake distinct random images per split."""
    seed = 0
    for split in splits:
        for cls, fmt in (("0_real", real_fmt), ("1_fake", fake_fmt)):
            for i in range(n):
                seed += 1
                _img(root / split / cls / f"{i}.{'jpg' if fmt == 'JPEG' else 'png'}", seed, fmt)
    return root


def _check(root, **kw):
    return analyze_dataset(root, progress=False, **kw)


def test_clean_dataset_passes_with_counts(tmp_path):
    rep = _check(_dataset(tmp_path), crop_size=16)
    assert rep["ok"] and not rep["blocking"] and not rep["warnings"]
    assert rep["splits"]["val"]["classes"] == {"real": 3, "fake": 3}
    assert rep["splits"]["val"]["subsets"] == {}  # no subset folders: no unnamed entry (`subsets..real` in DVC)
    assert rep["splits"]["train"]["formats"]["fake"] == {"PNG": 3}
    assert rep["splits"]["test"]["sizes"]["real"]["most_common"] == [["16x16", 3]]
    assert rep["totals"]["images"] == 18
    raise_on_blocking(rep)  # no error
    json.dumps(rep)  # JSON-ready


def test_format_bias_is_a_warning(tmp_path):
    rep = _check(_dataset(tmp_path, real_fmt="JPEG", fake_fmt="PNG"))
    assert rep["ok"] and rep["splits"]["train"]["format_bias"]["biased"]
    assert any("file format predicts the label" in w for w in rep["warnings"])


def test_duplicates_across_splits_and_conflicting_labels(tmp_path):
    _dataset(tmp_path)
    (tmp_path / "test/0_real/dup.png").write_bytes((tmp_path / "train/0_real/0.png").read_bytes())
    (tmp_path / "val/1_fake/dup.png").write_bytes((tmp_path / "val/0_real/1.png").read_bytes())
    rep = _check(tmp_path)
    assert rep["ok"]
    assert rep["totals"]["duplicates_across_splits"] == 1
    assert rep["duplicates_across_splits"][0]["files"] == ["train:train/0_real/0.png", "test:test/0_real/dup.png"]
    assert rep["totals"]["duplicates_with_both_labels"] == 1
    assert sum("duplicates across splits (leakage): 1 group of identical files" in w
               or "carry both labels: 1 group" in w for w in rep["warnings"]) == 2


def test_few_unreadable_warn_many_block(tmp_path):
    _dataset(tmp_path, n=10)
    (tmp_path / "train/1_fake/bad.png").write_bytes(b"\x89PNG broken")
    rep = _check(tmp_path, max_unreadable_fraction=0.05)
    assert rep["ok"] and unreadable_files(rep) == {"train/1_fake/bad.png"}
    assert any("bad.png" in w for w in rep["warnings"])
    scan = scan_split(tmp_path, "train", exclude=unreadable_files(rep))  # the way training leaves them out
    assert len(scan.samples) == 20 and len(scan.excluded) == 1
    good = (tmp_path / "val/0_real/0.png").read_bytes()
    (tmp_path / "val/0_real/cut.png").write_bytes(good[: len(good) // 2])  # truncated
    rep = _check(tmp_path, max_unreadable_fraction=0.01)
    assert not rep["ok"] and rep["totals"]["unreadable"] == 2
    with pytest.raises(LadedaError, match=r"unreadable.*bad\.png.*cut\.png"):
        raise_on_blocking(rep)


def test_report_names_what_the_data_check_left_out(tmp_path):
    """metrics/report.md carries the data check: counts per split, the excluded files and every warning."""
    from ladeda.reporting.report import data_section

    _dataset(tmp_path, n=10)
    (tmp_path / "train/1_fake/bad.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "train/notes.txt").write_text("not an image")
    (tmp_path / "val/notes.md").write_text("not an image either")
    lines = data_section(_check(tmp_path, max_unreadable_fraction=0.05))
    text = "\n".join(lines)
    assert "| train | 21 | 10 | 11 |" in text and "| test | 20 | 10 | 10 |" in text
    assert "Not used: 1 unreadable image (excluded from every stage), 2 non-image files." in text
    assert any(line.startswith("- ") and "unreadable" in line and "train/1_fake/bad.png" in line
               for line in lines)  # the unreadable-file warning, as a bullet of its own
    clean = "\n".join(data_section(_check(_dataset(tmp_path / "clean"))))
    assert "Every file found was a readable, labelled image." in clean and "raised no warnings" in clean


def test_stages_skip_the_unreadable_files_check_data_reported(tmp_path, monkeypatch):
    """`checked_loader` (what diagnose/finetune/train_student load) reads metrics/check_data.json and leaves
    the tolerated unreadable file out, so a long run does not crash on it."""
    from ladeda.core.outputs import write_metrics
    from ladeda.core.params import params_from_dict
    from ladeda.pipeline.datasets import checked_loader
    from helpers import project_params

    data = _dataset(tmp_path / "data", n=10)
    (data / "train/1_fake/bad.png").write_bytes(b"\x89PNG broken")
    monkeypatch.chdir(tmp_path)
    write_metrics("check_data", _check(data, max_unreadable_fraction=0.05))
    p = params_from_dict(project_params({"data": {"root": str(data), "crop_size": 16, "load_size": 16}}))
    loader = checked_loader(p, "train", batch_size=4)
    assert len(loader.dataset) == 20 and len(loader.dataset.scan.excluded) == 1
    assert sum(len(labels) for _, labels, _ in loader) == 20  # iterating never touches bad.png


def test_parallel_report_equals_serial(tmp_path):
    """With workers=2 the pool reads the files, in order: the report (unreadable files and their errors,
    duplicate groups in file order, formats, sizes) is the serial one, exactly."""
    _dataset(tmp_path, n=6, real_fmt="JPEG")
    (tmp_path / "train/1_fake/bad.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "test/0_real/a_bad.jpg").write_bytes(b"not a jpeg")
    good = (tmp_path / "test/1_fake/0.png").read_bytes()
    (tmp_path / "test/1_fake/z_cut.png").write_bytes(good[: len(good) // 2])  # a second, different error
    (tmp_path / "test/1_fake/dup.png").write_bytes((tmp_path / "train/1_fake/0.png").read_bytes())
    (tmp_path / "train/1_fake/dup.jpg").write_bytes((tmp_path / "train/0_real/3.jpg").read_bytes())
    for name, size in (("s1.png", (8, 12)), ("s2.png", (12, 8))):
        _img(tmp_path / "val/1_fake" / name, 70, size=size)

    def report(**kw):
        return _check(tmp_path, crop_size=16, **kw)

    serial = report(workers=1)
    assert serial == report(workers=1)  # no memory address (PIL names the buffer it read) or other run-specific text
    assert serial["totals"]["unreadable"] == 3 and serial["totals"]["duplicates_across_splits"] == 1
    assert serial["duplicates_with_both_labels"][0]["files"] == ["train:train/0_real/3.jpg",
                                                                 "train:train/1_fake/dup.jpg"]
    assert [u["path"] for u in serial["splits"]["test"]["unreadable"]] == ["test/0_real/a_bad.jpg",
                                                                           "test/1_fake/z_cut.png"]
    assert serial["splits"]["val"]["smaller_than_crop_files"] == ["val/1_fake/s1.png", "val/1_fake/s2.png"]
    assert "cannot identify image file" in serial["splits"]["test"]["unreadable"][0]["error"]
    assert report(workers=2) == serial
    assert report() == serial  # auto: serial for so few files


@pytest.mark.parametrize("problem", ["one_class_val", "one_class_test", "empty_split", "missing_train", "no_images"])
def test_blocking_problems(tmp_path, problem):
    _dataset(tmp_path)
    import shutil
    if problem == "one_class_val":
        shutil.rmtree(tmp_path / "val/1_fake")
        expect = r"val: only one class \(no fake"
    elif problem == "one_class_test":
        shutil.rmtree(tmp_path / "test/0_real")
        expect = r"test: only one class \(no real"
    elif problem == "empty_split":
        shutil.rmtree(tmp_path / "test")
        (tmp_path / "test/0_real").mkdir(parents=True)
        expect = "test: split holds no labelled images"
    elif problem == "missing_train":
        shutil.rmtree(tmp_path / "train")
        expect = "train: split folder missing"
    else:
        for split in ("train", "val", "test"):
            shutil.rmtree(tmp_path / split)
            (tmp_path / split).mkdir()
        expect = "no labelled images"
    rep = _check(tmp_path)
    assert not rep["ok"]
    with pytest.raises(LadedaError, match=expect):
        raise_on_blocking(rep)


def test_skipped_files_small_images_and_subset_with_one_class(tmp_path):
    _dataset(tmp_path)
    (tmp_path / "train/0_real/readme.txt").write_text("x")
    _img(tmp_path / "train/stray.png", 99)
    _img(tmp_path / "test/reddit/0_real/a.png", 100, size=(8, 8))
    rep = _check(tmp_path, crop_size=12)
    assert rep["ok"]
    assert rep["splits"]["train"]["skipped_non_image"] == 1 and rep["splits"]["train"]["unlabelled_images"] == 1
    assert rep["splits"]["test"]["smaller_than_crop"] == 1
    text = " ".join(rep["warnings"])
    assert "1 non-image file and 1 image outside a class folder" in text
    assert "test/reddit: only one class" in text and "smaller than the crop" in text


def test_test_images_the_teacher_cannot_score_block(tmp_path):
    """Test images are scored at full size, so one under the teacher's minimum side would crash evaluate_teacher:
    blocking, naming how many, which and the minimum; smaller train/val images are only padded (a warning)."""
    _dataset(tmp_path)
    for name, size in (("a.png", (9, 9)), ("b.png", (64, 8)), ("c.png", (10, 10))):
        _img(tmp_path / "test/1_fake" / name, 50, size=size)
    _img(tmp_path / "val/0_real/tiny.png", 51, size=(4, 4))
    rep = _check(tmp_path, crop_size=16, min_side=10)
    assert not rep["ok"] and rep["min_side"] == 10
    assert rep["splits"]["test"]["smaller_than_min_side"] == 2 and rep["splits"]["val"]["smaller_than_min_side"] == 0
    with pytest.raises(LadedaError, match=r"test: 2 images smaller than 10x10 pixels.*test/1_fake/a\.png, "
                                          r"test/1_fake/b\.png; remove or resize them") as err:
        raise_on_blocking(rep)
    assert "c.png" not in str(err.value) and "tiny.png" not in str(err.value)
    assert sum("smaller than the crop (16px)" in w for w in rep["warnings"]) == 2  # test and val
    assert _check(tmp_path, crop_size=16)["ok"]  # no minimum given (data.load_size resizes every image)


@pytest.mark.parametrize("arch,preprocess,side", [("LaDeDa9", "NPR", 10), ("LaDeDa9", "x_grad", 10),
                                                  ("LaDeDa5", "raw", 6), ("LaDeDa17", "NPR", 18)])
def test_min_image_side_is_what_the_teacher_really_scores(arch, preprocess, side):
    """The check's minimum is measured against the model behind the test transform (odd sides lose a pixel)."""
    import torch
    from ladeda.data.transforms import build_transform
    from ladeda.models import build_model
    from ladeda.models.geometry import min_image_side

    assert min_image_side(arch, preprocess) == side
    model, transform = build_model(arch, preprocess, width=1).eval(), build_transform("test", 16)
    with torch.no_grad():
        model(transform(Image.new("RGB", (side, side + 1))).unsqueeze(0))
        with pytest.raises(RuntimeError):
            model(transform(Image.new("RGB", (side - 1, side + 1))).unsqueeze(0))


def _stage(tmp_path: Path, root: str, **data) -> subprocess.CompletedProcess:
    write_params(tmp_path / "params.yaml", {"data": {"root": root, **data}})
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(ROOT / "stages/check_data.py"), "--params", "params.yaml"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_check_data_stage_ok_then_blocking(tmp_path):
    _dataset(tmp_path / "d")
    proc = _stage(tmp_path, "d")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "metrics/check_data.json").read_text())["ok"] is True
    (tmp_path / "d/val/1_fake/0.png").unlink()
    for p in (tmp_path / "d/val/1_fake").iterdir():
        p.unlink()
    proc = _stage(tmp_path, "d")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]  # besides tqdm's bars
    assert len(errors) == 1 and proc.stderr.strip().endswith(errors[0])
    assert errors[0].startswith("error: data check failed") and "d/val: only one class" in errors[0]
    assert json.loads((tmp_path / "metrics/check_data.json").read_text())["ok"] is False  # report kept


def test_check_data_stage_blocks_test_images_below_the_teachers_minimum(tmp_path):
    """The stage takes the minimum from teacher.arch (LaDeDa9: 10, as NPR drops odd sides' last pixel) and lifts
    it when data.load_size resizes every image."""
    _dataset(tmp_path / "d")
    _img(tmp_path / "d/test/0_real/small.png", 60, size=(9, 9))
    proc = _stage(tmp_path, "d")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "1 image smaller than 10x10 pixels" in errors[0] and "small.png" in errors[0]
    assert _stage(tmp_path, "d", load_size=64).returncode == 0


def test_check_data_stage_missing_root(tmp_path):
    proc = _stage(tmp_path, "nowhere")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "nowhere" in proc.stderr
