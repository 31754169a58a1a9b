"""The workflow's decisions: diagnose band, whether to fine-tune, and the distillation recommendation."""

from __future__ import annotations

from dataclasses import dataclass

from ladeda.core.errors import LadedaError
from ladeda.evaluation.intervals import gate_margin

BANDS = ("good", "marginal", "bad")
RECOMMENDATIONS = ("ready", "limited", "skip")


def diagnose_band(auc: float, good: float = 0.65, bad: float = 0.55) -> str:
    """`good` when AUC > good, `bad` when AUC < bad, `marginal` in between."""
    if auc > good:
        return "good"
    if auc < bad:
        return "bad"
    return "marginal"


BAND_WORDS = {
    "good": "the pretrained teacher already works on this data: fine-tuning is not needed unless its interval "
            "straddles diagnose.good",
    "marginal": "the pretrained teacher is marginal on this data: fine-tuning is worth trying",
    "bad": "the pretrained teacher fails on this data: it must be fine-tuned",
}


@dataclass
class FinetuneDecision:
    """Whether `finetune_teacher` trains, and why."""

    finetune: bool
    reason: str


def finetune_decision(policy: str, band: str, good_margin: dict | None = None) -> FinetuneDecision:
    """Policy `always`/`never` override; `auto` fine-tunes unless the diagnose band is `good` and clearly so.

    `good_margin` is the diagnose AUC's margin to `diagnose.good` (`threshold_margins`): when its 95% interval
    straddles the threshold, the band is `good` only within the noise of the validation split (another CPU
    or data seed reads it `marginal`), so `auto` fine-tunes; keeping the pretrained teacher needs an
    interval wholly above `good`. Without an interval (`None`: a class with one image) the band decides.
    """
    if band not in BANDS:
        raise LadedaError(f"diagnose band must be one of {', '.join(BANDS)}, got {band!r}")
    if policy == "always":
        return FinetuneDecision(True, f"finetune.policy is always (diagnose band: {band})")
    if policy == "never":
        return FinetuneDecision(False, f"finetune.policy is never (diagnose band: {band})")
    if policy != "auto":
        raise LadedaError(f"finetune.policy must be auto, always or never, got {policy!r}")
    if band == "good" and good_margin is not None and not good_margin["clear"]:
        return FinetuneDecision(True, f"diagnose band is good, but its 95% interval straddles diagnose.good "
                                      f"{good_margin['threshold']:g}: within the noise, fine-tuning the teacher")
    if band == "good":
        return FinetuneDecision(False, "diagnose band is good: the pretrained teacher is kept")
    return FinetuneDecision(True, f"diagnose band is {band}: fine-tuning the teacher")


def distill_recommendation(auc: float, ready: float = 0.65, skip: float = 0.55) -> str:
    """`ready` when AUC >= ready, `skip` when AUC < skip, `limited` in between."""
    if auc >= ready:
        return "ready"
    if auc < skip:
        return "skip"
    return "limited"


def threshold_margins(metrics: dict, thresholds: dict[str, float]) -> dict[str, dict]:
    """How far a `detection_metrics` AUC is from each named gate threshold, relative to its 95% interval
    (`side`: above, below or straddles; a straddled threshold means the decision is within the noise)."""
    if metrics.get("auc_se") is None:
        return {}
    interval = {"auc": metrics["auc"], "se": metrics["auc_se"], "ci_low": metrics["auc_ci_low"],
                "ci_high": metrics["auc_ci_high"]}
    return {name: gate_margin(interval, value) for name, value in thresholds.items()}


def margin_words(metrics: dict, margins: dict[str, dict]) -> str:
    """One line for the log: the AUC's interval and any threshold it straddles."""
    if not margins:
        return f"AUC {metrics['auc']:.4f} (no interval: a class has a single image)"
    close = [f"{name} {m['threshold']:g}" for name, m in margins.items() if not m["clear"]]
    where = (f"straddles {', '.join(close)}: the decision is within the noise of this split" if close
             else "clear of every threshold")
    return f"AUC {metrics['auc']:.4f} (95% CI {metrics['auc_ci_low']:.3f}-{metrics['auc_ci_high']:.3f}), {where}"


RECOMMENDATION_WORDS = {
    "ready": "the teacher is ready for distillation",
    "limited": "distillation can proceed, with limited expectations",
    "skip": "the teacher is too weak to distil from: the student will train on BCE only",
}
