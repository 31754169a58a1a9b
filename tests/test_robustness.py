"""Robustness evaluation: the perturbations (deterministic, size-keeping, ordered by strength), the per-condition
metrics with their paired drop tests, the plot rows, and the report's robustness section and pictures."""

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score
from torch import nn

from ladeda.data.folders import LabeledImages
from ladeda.data.loaders import make_loader
from ladeda.data.transforms import build_transform
from ladeda.evaluation.robustness import (CLEAN, DownUp, curves, evaluate_robustness, gaussian_blur,
                                          perturbations, perturbed_dataset, summary)
from ladeda.evaluation.scoring import score
from ladeda.models import TinyLaDeDa
from ladeda.models.geometry import patch_geometry
from ladeda.reporting.figures import (auc_per_epoch, heatmap_examples, heatmap_grid, read_curve,
                                      robustness_curves, roc_curves)
from ladeda.reporting.report import markdown_report, robustness_section

SOCIAL = {"resize_scale": 0.75, "blur_sigma": 0.5, "jpeg_quality": 80}


def photo(seed=0, size=48) -> Image.Image:
    """A smooth colour image with some fine texture (what JPEG, resizing and blur all change)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in range(3)], -1) * 80 + 128
    return Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))


def error(cond, img) -> float:
    ref = torch.as_tensor(np.array(img)).permute(2, 0, 1).float()
    return float((cond(img).float() - ref).abs().mean())


def test_conditions_are_named_clean_first_and_keep_the_image_size():
    conds = perturbations([95, 40], [0.5], [1.0], SOCIAL, 96)
    assert [c.name for c in conds] == ["clean", "jpeg_q95", "jpeg_q40", "resize_0.5", "blur_1", "social_media",
                                       "format_bias_jpeg_q96"]
    assert conds[0] is CLEAN and conds[-1].family == "format_bias" and conds[-1].strength == 96
    img = photo(size=47)  # odd size: down-and-up must come back to 47x47
    for cond in conds:
        out = cond(img)
        assert out.dtype == torch.uint8 and tuple(out.shape) == (3, 47, 47), cond.name
        assert torch.equal(out, cond(img)), f"{cond.name} is not deterministic"
    assert error(CLEAN, img) == 0


def test_stronger_perturbations_change_the_image_more():
    img = photo()
    jpeg = [error(c, img) for c in perturbations([95, 75, 40], [], [], SOCIAL, 96)[1:4]]
    assert 0 < jpeg[0] < jpeg[1] < jpeg[2]
    resize = [error(lambda im, s=s: DownUp(s)(torch.as_tensor(np.array(im)).permute(2, 0, 1)), img)
              for s in (0.75, 0.5)]
    assert 0 < resize[0] < resize[1]
    x = torch.as_tensor(np.array(img)).permute(2, 0, 1)
    blur = [float((gaussian_blur(s)(x).float() - x.float()).abs().mean()) for s in (0.5, 1.0, 2.0)]
    assert 0 < blur[0] < blur[1] < blur[2]
    chain = perturbations([], [], [], SOCIAL, 96)[1]
    assert chain.name == "social_media" and error(chain, img) > max(jpeg[0], resize[0])


def write_images(root, n=12, size=32):
    """Folder split: real = smooth photos, fake = the same with a 2x2 checkerboard (an upsampling-like trace)."""
    checker = (np.indices((size, size)).sum(0) % 2 * 2 - 1)[..., None] * 18
    for i in range(n):
        img = np.asarray(photo(i, size)).astype(float)
        for label, cls in ((0, "0_real"), (1, "1_fake")):
            out = root / "test" / cls
            out.mkdir(parents=True, exist_ok=True)
            arr = img + (checker if label else 0)
            Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(out / f"{i}.png")
    return LabeledImages.from_split(root, "test", build_transform("test", size))


class HighFrequency(nn.Module):
    """A fixed detector: the patch logit is the local energy of the 2x2-periodic component (no training)."""

    def __init__(self):
        super().__init__()
        self.preprocess = "raw"

    def patch_map(self, x):
        k = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).view(1, 1, 2, 2).repeat(1, 3, 1, 1) / 12
        return nn.functional.avg_pool2d(nn.functional.conv2d(x, k, stride=2).abs(), 4) - 0.5

    def forward(self, x):
        return self.patch_map(x).mean(dim=(1, 2, 3))


def test_each_condition_has_intervals_and_a_paired_drop_from_clean(tmp_path):
    ds = write_images(tmp_path)
    conds = perturbations([90, 20], [0.5], [2.0], SOCIAL, 96)
    models = {"teacher": HighFrequency(), "student": TinyLaDeDa("right_diag").eval()}
    res = evaluate_robustness(models, ds, conds, batch_size=5)
    assert list(res) == [c.name for c in conds]
    plain = score(models["student"], make_loader(ds, 5, shuffle=False))  # the clean condition is plain scoring
    assert res["clean"]["student"]["auc"] == roc_auc_score(plain.labels, plain.logits)
    assert res["clean"]["teacher"]["auc"] == pytest.approx(1.0) and "drop" not in res["clean"]["teacher"]
    for name, row in res.items():
        for m in models:
            r = row[m]
            assert r["auc_ci_low"] <= r["auc"] <= r["auc_ci_high"]
            if name != "clean":
                assert r["drop"] == pytest.approx(res["clean"][m]["auc"] - r["auc"])
    # the checkerboard survives light JPEG but not a strong blur or halving the resolution
    assert res["jpeg_q90"]["teacher"]["auc"] > 0.9 and not res["jpeg_q90"]["teacher"]["drop_significant"]
    for strong in ("blur_2", "resize_0.5"):
        assert res[strong]["teacher"]["auc"] < 0.75 and res[strong]["teacher"]["drop_significant"], strong
    head = summary(res, models)
    assert head["teacher_clean_auc"] == res["clean"]["teacher"]["auc"]
    assert head["teacher_worst_condition"] in ("blur_2", "resize_0.5", "jpeg_q20", "social_media")
    assert head["teacher_format_bias_drop"] == res["format_bias_jpeg_q96"]["teacher"]["drop"]
    rows = curves(res, models)
    assert [r["quality"] for r in rows["jpeg"]] == [20, 90]
    assert [r["scale"] for r in rows["resize"]] == [0.5, 1.0] and rows["resize"][1]["teacher_auc"] == head[
        "teacher_clean_auc"]
    assert [r["sigma"] for r in rows["blur"]] == [0.0, 2.0]


def test_perturbed_dataset_applies_the_perturbation_before_the_test_transform(tmp_path):
    ds = write_images(tmp_path, n=2)
    same = perturbed_dataset(ds, CLEAN)
    blurred = perturbed_dataset(ds, perturbations([], [], [2.0], SOCIAL, 96)[1])
    assert same.samples == ds.samples and same.output_sizes() == ds.output_sizes() == blurred.output_sizes()
    assert torch.equal(same[1][0], ds[1][0]) and not torch.equal(blurred[1][0], ds[1][0])
    assert same[1][1:] == ds[1][1:] == blurred[1][1:]


def test_report_pictures_and_robustness_section(tmp_path):
    ds = write_images(tmp_path / "data", n=4)
    models = {"teacher": HighFrequency(), "student": TinyLaDeDa("right_diag").eval()}
    res = evaluate_robustness(models, ds, perturbations([75], [0.5], [1.0], SOCIAL, 96), batch_size=8)
    tsv = tmp_path / "val_auc.tsv"
    tsv.write_text("step\tval_auc\n1\t0.6\n2\t0.7\n")
    assert read_curve(tsv, "val_auc") == [(1.0, 0.6), (2.0, 0.7)] and read_curve(tmp_path / "no.tsv", "x") == []
    roc = [{"fpr": 0.0, "tpr": 0.0}, {"fpr": 0.5, "tpr": 0.8}, {"fpr": 1.0, "tpr": 1.0}]
    rows = heatmap_examples({"teacher": models["teacher"], "student": models["student"]}, ds)
    assert [(r.title, r.label) for r in rows] == [("test", 0), ("test", 1)]
    assert rows[1].maps["student"].shape == (14, 14) and 0 <= rows[1].probabilities["teacher"] <= 1
    geometries = {"teacher": patch_geometry(TinyLaDeDa("raw")), "student": patch_geometry(models["student"])}
    paths = [auc_per_epoch({"a": read_curve(tsv, "val_auc")}, tmp_path / "auc.png"),
             roc_curves({"teacher": roc, "student": roc}, {"teacher": 0.7, "student": 0.8}, tmp_path / "roc.png"),
             robustness_curves(curves(res, models), {m: res["clean"][m]["auc"] for m in models}, tmp_path / "r.png"),
             heatmap_grid(rows, geometries, tmp_path / "h.png")]
    for path in paths:
        img = np.asarray(Image.open(path).convert("RGB"))
        assert img.shape[0] > 100 and len(np.unique(img.reshape(-1, 3), axis=0)) > 20, path
    again = robustness_curves(curves(res, models), {m: res["clean"][m]["auc"] for m in models}, tmp_path / "r2.png")
    assert again.read_bytes() == paths[2].read_bytes(), "the same numbers must give the same PNG bytes"
    text = "\n".join(line for line in markdown_report_lines(res, {"ROC": "../plots/report/roc.png"}))
    assert "| jpeg_q75 |" in text and "(reference)" in text and "![ROC](../plots/report/roc.png)" in text
    assert "Format bias (every test image re-saved as JPEG q96" in text


def test_an_empty_sweep_is_left_out_of_metrics_plot_and_report(tmp_path):
    """`robustness.jpeg_quality: []` drops the JPEG sweep: no jpeg condition, an empty plot panel, no table row."""
    ds = write_images(tmp_path / "data", n=4)
    models = {"teacher": HighFrequency(), "student": TinyLaDeDa("right_diag").eval()}
    res = evaluate_robustness(models, ds, perturbations([], [0.5], [1.0], SOCIAL, 96), batch_size=8)
    assert list(res) == ["clean", "resize_0.5", "blur_1", "social_media", "format_bias_jpeg_q96"]
    rows = curves(res, models)
    assert rows["jpeg"] == [] and [r["scale"] for r in rows["resize"]] == [0.5, 1.0]
    path = robustness_curves(rows, {m: res["clean"][m]["auc"] for m in models}, tmp_path / "r.png")
    assert np.asarray(Image.open(path)).shape[0] > 100
    text = "\n".join(markdown_report_lines(res, {}))
    assert "| resize_0.5 |" in text and "| jpeg_q" not in text


def markdown_report_lines(res, pictures):
    side = {"arch": "X", "preprocess": "raw", "parameters": 10, "flops": 100,
            "test": {"overall": res["clean"]["teacher"] | {"ap": 0.5, "acc": 0.5, "balanced_acc": 0.5, "eer": 0.5,
                                                           "tpr_at_fpr_1": 0.1, "tpr_at_fpr_5": 0.2},
                     "subsets": {}}}
    result = {"data_root": "d", "teacher_weights": "finetuned", "teacher": side, "student": side,
              "auc_ratio": 1.0, "patch_agreement": 0.5, "patch_agreement_spearman": 0.25,
              "student_vs_teacher_text": "no difference"}
    eff = {"height": 8, "width": 8, "machine": "m", "batch_size": 1, "speedup": 1.0,
           "teacher": {"images_per_s": 1.0}, "student": {"images_per_s": 1.0}}
    robustness = {"conditions": res, "format_bias_min_drop": 0.02, **summary(res, ("teacher", "student"))}
    return markdown_report(result, eff, robustness, pictures).splitlines()


def bias_results(drop: float, significant: bool) -> dict:
    row = {"auc": 0.8, "drop": drop, "drop_p_value": 0.01 if significant else 0.5, "drop_significant": significant}
    return {"clean": {"family": "clean", "strength": None, "teacher": {"auc": 0.8 + drop}},
            "format_bias_jpeg_q96": {"family": "format_bias", "strength": 96, "teacher": row}}


@pytest.mark.parametrize("drop, significant, shortcut, words", [
    (0.10, True, True, "leans on file format"),
    (0.001, True, False, "significant but small drop (under 0.02)"),
    (0.10, False, False, "no significant drop"),
    (-0.05, True, False, "no significant drop"),  # a rise is no shortcut
])
def test_format_shortcut_needs_a_significant_and_material_drop(drop, significant, shortcut, words):
    res = bias_results(drop, significant)
    head = summary(res, ["teacher"], format_bias_min_drop=0.02)
    assert head["teacher_format_shortcut"] is shortcut and head["teacher_format_bias_drop"] == drop
    res["clean"]["student"] = res["format_bias_jpeg_q96"]["student"] = {"auc": 0.5, "drop": 0.0,
                                                                         "drop_p_value": 1.0,
                                                                         "drop_significant": False}
    text = "\n".join(robustness_section({"conditions": res, "format_bias_min_drop": 0.02, **head}))
    teacher_line = next(line for line in text.splitlines() if line.startswith("- teacher:"))
    assert words in teacher_line, teacher_line
