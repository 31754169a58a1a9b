"""Robustness to the web: the test split under JPEG re-compression, down-and-up resizing, Gaussian blur, a
social-media chain and a format-bias check, each scored by teacher and student with AUC intervals.

Every perturbation is deterministic (no random parameters), keeps the image's size (so full-size test
images batch exactly as in `evaluate_student`) and is applied to the decoded file before the test
transform, i.e. as if the file itself had been degraded. Each condition's AUC comes with its DeLong
interval and a paired DeLong test against the clean AUC of the same model on the same images, so a
drop is called significant only when it exceeds the noise. The format-bias check re-saves every test
image as JPEG at a high quality (96 by default): a detector that learnt "PNG = fake" (a known shortcut
when reals are JPEG and fakes PNG) collapses there, while a clean detector barely moves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ladeda.core.runtime import CPU, Runtime
from ladeda.data.folders import LabeledImages
from ladeda.data.loaders import make_loader
from ladeda.data.transforms import ImageTransform
from ladeda.evaluation.intervals import paired_auc_test
from ladeda.evaluation.metrics import detection_metrics
from ladeda.evaluation.scoring import score_models


class DownUp(nn.Module):
    """Resize a uint8 image tensor down by `scale` and back to its own size (bilinear, antialiased)."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        small = F.resize(img, [max(1, round(h * self.scale)), max(1, round(w * self.scale))], antialias=True)
        return F.resize(small, [h, w], antialias=True)


def gaussian_blur(sigma: float) -> v2.GaussianBlur:
    """A Gaussian blur of fixed `sigma` with a kernel of +-3 sigma (odd size, at least 3)."""
    return v2.GaussianBlur(max(3, 2 * math.ceil(3 * sigma) + 1), sigma=(sigma, sigma))


@dataclass(frozen=True)
class Perturbation:
    """A named, deterministic degradation: `family` (jpeg | resize | blur | social_media | format_bias | clean),
    its `strength` (quality, scale or sigma; None for chains) and the torchvision steps it applies."""

    name: str
    family: str
    strength: float | None
    steps: tuple[nn.Module, ...]

    def __call__(self, img) -> torch.Tensor:
        x = v2.ToImage()(img)
        for step in self.steps:
            x = step(x)
        return x


CLEAN = Perturbation("clean", "clean", None, ())


def perturbations(jpeg_quality: Iterable[int], resize_scale: Iterable[float], blur_sigma: Iterable[float],
                  social_media: dict, format_bias_quality: int) -> list[Perturbation]:
    """The conditions of a robustness run, clean first; `social_media` is the chain resize -> blur -> JPEG."""
    out = [CLEAN]
    out += [Perturbation(f"jpeg_q{q}", "jpeg", q, (v2.JPEG(q),)) for q in jpeg_quality]
    out += [Perturbation(f"resize_{s:g}", "resize", s, (DownUp(s),)) for s in resize_scale]
    out += [Perturbation(f"blur_{s:g}", "blur", s, (gaussian_blur(s),)) for s in blur_sigma]
    out.append(Perturbation("social_media", "social_media", None,
                            (DownUp(social_media["resize_scale"]), gaussian_blur(social_media["blur_sigma"]),
                             v2.JPEG(social_media["jpeg_quality"]))))
    out.append(Perturbation(f"format_bias_jpeg_q{format_bias_quality}", "format_bias", format_bias_quality,
                            (v2.JPEG(format_bias_quality),)))
    return out


def perturbed_dataset(dataset: LabeledImages, perturbation: Perturbation) -> LabeledImages:
    """The same samples with `perturbation` applied to each decoded image before the dataset's test transform."""
    base: ImageTransform = dataset.transform
    pipeline = v2.Compose([perturbation, base.pipeline]) if perturbation.steps else base.pipeline
    transform = ImageTransform(base.mode, pipeline, base.crop_size, base.load_size, base.even)
    return LabeledImages(dataset.samples, transform)


def _model_result(labels: np.ndarray, logits: np.ndarray, clean_logits: np.ndarray | None, name: str) -> dict:
    m = detection_metrics(labels, logits, name=name)
    row = {k: m[k] for k in ("auc", "auc_ci_low", "auc_ci_high", "acc", "real_acc", "fake_acc")}
    if clean_logits is not None:
        test = paired_auc_test(labels, clean_logits, logits, name=name)  # clean - perturbed: the drop
        row.update(drop=test["difference"], drop_ci_low=test["ci_low"], drop_ci_high=test["ci_high"],
                   drop_p_value=test["p_value"], drop_significant=test["significant"])
    return row


def evaluate_robustness(models: dict[str, nn.Module], dataset: LabeledImages, conditions: list[Perturbation],
                        batch_size: int, progress: Callable[[str], None] | None = None,
                        runtime: Runtime = CPU) -> dict[str, dict]:
    """`{condition: {"family", "strength", model: {auc, interval, accuracies, drop vs clean + paired test}}}`.

    `conditions` must start with `CLEAN` (the reference of every drop). Images are matched by index, so the
    paired tests compare each model with itself on exactly the same images."""
    if not conditions or conditions[0] is not CLEAN:
        raise ValueError("conditions must start with CLEAN")
    clean: dict[str, np.ndarray] = {}
    results: dict[str, dict] = {}
    for cond in conditions:
        if progress:
            progress(cond.name)
        loader = make_loader(perturbed_dataset(dataset, cond), batch_size, shuffle=False, **runtime.loader_options())
        entry: dict = {"family": cond.family, "strength": cond.strength}
        for name, s in score_models(models, loader, runtime, desc=cond.name).items():
            order = np.argsort(s.indices)
            labels, logits = s.labels[order], s.logits[order]
            entry[name] = _model_result(labels, logits, clean.get(name), f"test ({cond.name})")
            clean.setdefault(name, logits)
        results[cond.name] = entry
    return results


CURVES = {"jpeg": ("quality", None), "resize": ("scale", 1.0), "blur": ("sigma", 0.0)}  # x, where clean sits


def curves(results: dict[str, dict], models: Iterable[str]) -> dict[str, list[dict]]:
    """Plot rows per family: `jpeg` (x quality), `resize` (x scale, clean at 1), `blur` (x sigma, clean at 0),
    each row `{x: value, <model>_auc: auc, ...}` sorted by x."""
    models = list(models)
    rows: dict[str, list[dict]] = {}
    for family, (x, clean_at) in CURVES.items():
        entries = [(r["strength"], r) for r in results.values() if r["family"] == family]
        if clean_at is not None:
            entries.append((clean_at, results["clean"]))
        rows[family] = [{x: value, **{f"{m}_auc": r[m]["auc"] for m in models}}
                        for value, r in sorted(entries, key=lambda e: e[0])]
    return rows


def summary(results: dict[str, dict], models: Iterable[str], format_bias_min_drop: float = 0.02) -> dict:
    """Headline numbers: each model's clean AUC, worst AUC and the condition it occurs under, and the format-bias
    drop with its p-value and verdict: `format_shortcut` when the drop is significant and at least
    `format_bias_min_drop` (on hundreds of images the paired test calls even a 0.001 drop significant when the
    scores barely move, which is no shortcut)."""
    out: dict = {}
    bias = next((r for r in results.values() if r["family"] == "format_bias"), None)
    for m in models:
        worst_name, worst = min(((n, r[m]["auc"]) for n, r in results.items()), key=lambda t: t[1])
        out[f"{m}_clean_auc"] = results["clean"][m]["auc"]
        out[f"{m}_worst_auc"], out[f"{m}_worst_condition"] = worst, worst_name
        if bias is not None:
            row = bias[m]
            out[f"{m}_format_bias_drop"] = row["drop"]
            out[f"{m}_format_bias_p_value"] = row["drop_p_value"]
            out[f"{m}_format_bias_significant"] = row["drop_significant"]
            out[f"{m}_format_shortcut"] = bool(row["drop_significant"] and row["drop"] >= format_bias_min_drop)
    return out
