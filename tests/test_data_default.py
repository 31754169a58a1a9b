"""The embedded default dataset: layout, determinism, disjoint regions, greyscale fakes, the stage script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from ladeda.embedded.dataset import DOMAIN_PHOTOS, PHOTOS, generate_default, plan_tiles, tile_size
from ladeda.data.folders import SPLITS, discover, subsets
from ladeda.embedded.generators import FAMILIES, Decoder, high_pass, match_sharpness
from ladeda.core.errors import LadedaError
from helpers import write_params

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
SOURCE = {"train": 6, "val": 2, "test": 2}
TARGET = {"train": 4, "val": 2, "test": 4}


@pytest.fixture(scope="module")
def default_a(tmp_path_factory):
    out = tmp_path_factory.mktemp("a") / "default"
    return out, generate_default(out, 7, SIZE, SOURCE, TARGET, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_counts_and_formats(default_a):
    out, result = default_a
    for domain, counts, ext in (("source", SOURCE, ".png"), ("target", TARGET, ".jpg")):
        for split in SPLITS:
            samples = discover(out / domain, split)
            assert sum(s.label == 0 for s in samples) == counts[split]
            assert sum(s.label == 1 for s in samples) == counts[split]
            assert {Path(s.path).suffix for s in samples} == {ext}
            assert {Image.open(s.path).size for s in samples} == {(SIZE, SIZE)}
    assert subsets(discover(out / "target", "test")) == ["bilinear", "nearest"]
    assert subsets(discover(out / "target", "train")) == [""]
    assert result["per_domain"]["target"]["test"] == {"real": 4, "fake": 4}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folders left behind


def test_same_seed_same_bytes_other_seed_differs(default_a, tmp_path):
    out, _ = default_a
    again = tmp_path / "again"
    generate_default(again, 7, SIZE, SOURCE, TARGET, progress=False)
    a, b = _files(out), _files(again)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    other = tmp_path / "other"
    generate_default(other, 8, SIZE, SOURCE, TARGET, progress=False)
    c = _files(other)
    images = [k for k in a if k.endswith((".png", ".jpg"))]
    assert c.keys() == a.keys()
    assert sum(a[k] != c[k] for k in images) > 0.9 * len(images)


def test_splits_and_domains_share_no_photo_region(default_a):
    out, _ = default_a
    rows = json.loads((out / "manifest.json").read_text())["files"]
    assert len(rows) == 2 * (sum(SOURCE.values()) + sum(TARGET.values()))
    photos = {d: {r["photo"] for r in rows if r["path"].startswith(d)} for d in ("source", "target")}
    assert not photos["source"] & photos["target"]
    assert photos["source"] <= set(DOMAIN_PHOTOS["source"]) and photos["target"] <= set(DOMAIN_PHOTOS["target"])

    def overlap(a, b):
        return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]

    for r in rows:  # every crop (fakes with their context margin) lies inside its tile
        t, b = r["tile"], r["box"]
        assert t[0] <= b[0] and t[1] <= b[1] and b[2] <= t[2] and b[3] <= t[3]
        assert Path(r["path"]).parts[1] == r["split"]
    for i, r in enumerate(rows):
        for q in rows[i + 1:]:
            if r["photo"] == q["photo"] and r["split"] != q["split"]:
                assert not overlap(r["tile"], q["tile"]) and not overlap(r["box"], q["box"])


def test_plan_tiles_disjoint_and_proportional():
    rng = np.random.default_rng(0)
    sizes = {"a": (512, 512), "b": (300, 451)}
    tiles = plan_tiles(sizes, {"train": 70, "val": 15, "test": 15}, 64, rng)
    t = tile_size(64)
    all_tiles = [(s, x) for s, ts in tiles.items() for x in ts]
    keys = [(x.photo, x.x0, x.y0) for _, x in all_tiles]
    assert len(keys) == len(set(keys))  # each tile in exactly one split
    assert all(x.x1 - x.x0 == t and x.x1 <= sizes[x.photo][1] and x.y1 <= sizes[x.photo][0] for _, x in all_tiles)
    for photo in sizes:  # every split gets tiles of every photo; train gets the most
        n = {s: sum(x.photo == photo for x in tiles[s]) for s in tiles}
        assert min(n.values()) >= 1 and n["train"] > n["val"]
    with pytest.raises(LadedaError, match="image_size"):
        plan_tiles(sizes, {"train": 1, "val": 1, "test": 1}, 256, rng)


def test_greyscale_photos_give_greyscale_fakes(default_a):
    out, _ = default_a
    grey = {p.name for p in PHOTOS if p.grey}
    rows = json.loads((out / "manifest.json").read_text())["files"]
    checked = {"png": 0, "jpg": 0}
    for r in rows:
        arr = np.asarray(Image.open(out / r["path"]).convert("RGB")).astype(int)
        spread = (arr.max(axis=2) - arr.min(axis=2)).max()
        if r["photo"] in grey:
            assert spread <= (0 if r["path"].endswith(".png") else 1), r["path"]
            checked[r["path"][-3:]] += r["label"]
        else:
            assert spread > 3, r["path"]  # colour photos stay colour
    assert checked["png"] > 0 and checked["jpg"] > 0  # fakes of grey photos exist in both domains


@pytest.mark.parametrize("family", FAMILIES)
def test_decoder_keeps_grey_range_and_leaves_traces(family):
    torch.manual_seed(0)
    x = torch.rand(2, 1, 32, 32).expand(-1, 3, -1, -1).contiguous()
    dec = Decoder(family, seed=1)
    y = dec(x, keep=torch.tensor([0.0, 0.0]), texture=torch.tensor([0.0, 1.0]))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    full = dec(x, keep=torch.tensor([1.0, 1.0]), texture=torch.tensor([0.0, 0.0]))
    assert torch.allclose(full, x, atol=1e-6)  # keep=1, no texture: the real image back
    assert (y[0] - x[0]).abs().mean() > 0.05  # keep=0: upsampling replaced the detail
    assert not torch.equal(Decoder(family, seed=1).up_kernel, Decoder(family, seed=2).up_kernel)


def test_decoder_signed_option():
    """`signed` gives a sum-1 kernel with negative taps instead of a positive smoothing one."""
    smooth, signed = Decoder("nearest", seed=1).up_kernel, Decoder("nearest", seed=1, signed=True).up_kernel
    assert smooth.min() > 0 and signed.min() < 0
    assert torch.allclose(signed.sum(), torch.tensor(1.0)) and torch.allclose(smooth.sum(), torch.tensor(1.0))


def test_match_sharpness_equalises_detail_energy_per_image():
    torch.manual_seed(0)
    real, fake = torch.rand(3, 3, 24, 24), 0.5 + 0.1 * torch.rand(3, 3, 24, 24)  # fake far smoother
    out = match_sharpness(fake, real)
    energy = lambda t: high_pass(t).pow(2).mean(dim=(1, 2, 3))  # noqa: E731
    assert (energy(fake) / energy(real)).max() < 0.05
    ratio = energy(out) / energy(real)  # one linear gain on a 3x3 high-pass: equal to within ~10%
    assert ((ratio > 0.9) & (ratio < 1.15)).all(), ratio
    change, detail = (out - fake).flatten(1), high_pass(fake).flatten(1)  # only the detail is scaled
    gain = (change * detail).sum(1, keepdim=True) / detail.pow(2).sum(1, keepdim=True)
    assert torch.allclose(change, gain * detail, atol=1e-5)
    assert torch.allclose(match_sharpness(real, real), real)


def _stage(script: str, tmp_path: Path, image_size: int, *args: str) -> subprocess.CompletedProcess:
    counts = {"train": 2, "val": 1, "test": 2}
    write_params(tmp_path / "params.yaml", {"prepare_data": {"seed": 3, "image_size": image_size, "source": counts,
                                                             "target": counts}})
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(ROOT / "stages" / script), "--params", "params.yaml", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_prepare_data_stage_writes_outputs(tmp_path):
    proc = _stage("prepare_data.py", tmp_path, 32, "--out", "data/default")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "metrics/prepare_data.json").read_text())
    assert metrics["images"] == 2 * (5 + 5) and "seconds" not in metrics  # quality metrics hold no timings
    assert json.loads((tmp_path / "metrics/timings/prepare_data.json").read_text())["seconds"] > 0
    assert (tmp_path / "plots/data/samples.png").stat().st_size > 1000
    assert len(discover(tmp_path / "data/default/target", "test")) == 4


def test_prepare_data_stage_bad_params_one_line_error(tmp_path):
    proc = _stage("prepare_data.py", tmp_path, 33)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "prepare_data.image_size" in lines[0]
    assert not (tmp_path / "data").exists()


def _global_features(path: Path) -> dict[str, float]:
    """Whole-image statistics a shortcut could use: colour, brightness, contrast, sharpness, clipping, size."""
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    g = a.mean(2)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return {"mean_r": a[..., 0].mean(), "mean_g": a[..., 1].mean(), "mean_b": a[..., 2].mean(),
            "brightness": g.mean(), "contrast": g.std(), "sharpness": lap.var(),
            "gradient": np.abs(np.diff(g, axis=1)).mean(), "saturation": (a.max(2) - a.min(2)).mean(),
            "clipped": ((a == 0) | (a == 255)).mean(), "file_size": float(path.stat().st_size)}


@pytest.mark.parametrize("domain", ["source", "target"])
def test_no_global_feature_separates_real_from_fake(tmp_path, domain):
    """Fakes differ from reals only locally: no whole-image statistic reaches AUC 0.6 (default recipe, 64px)."""
    counts = {"train": 300, "val": 1, "test": 2}
    generate_default(tmp_path / "d", 0, 64, counts, counts, progress=False)
    samples = discover(tmp_path / "d" / domain, "train")
    feats = [_global_features(Path(s.path)) for s in samples]
    labels = [s.label for s in samples]
    for name in feats[0]:
        auc = roc_auc_score(labels, [f[name] for f in feats])
        assert max(auc, 1 - auc) <= 0.6, f"{domain}: {name} separates real from fake (AUC {auc:.3f})"
