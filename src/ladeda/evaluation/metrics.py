"""Detection metrics (scikit-learn), each AUC with its DeLong 95% interval, overall and per test subset, and
ROC points for plots."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (accuracy_score, average_precision_score, balanced_accuracy_score, roc_auc_score,
                             roc_curve)

from ladeda.core.errors import LadedaError
from ladeda.evaluation.intervals import auc_interval, paired_auc_test


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Fake probability from logits."""
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def detection_metrics(labels: Sequence[int], logits: Sequence[float], name: str = "split") -> dict[str, float]:
    """AUC with its 95% interval, AP, accuracy at p=0.5, real/fake/balanced accuracy, EER, TPR at FPR 1% and 5%.

    The interval (DeLong) is null when a class has a single image."""
    y = np.asarray(labels).astype(int)
    s = np.asarray(logits, dtype=np.float64)
    classes = set(np.unique(y).tolist())
    if classes != {0, 1}:
        have = "no images" if not classes else f"only {'real' if classes == {0} else 'fake'} images"
        raise LadedaError(f"{name} has {have}: AUC needs both real (0_real) and fake (1_fake) images")
    pred = (s > 0).astype(int)  # logit > 0  <=>  probability > 0.5
    fpr, tpr, _ = roc_curve(y, s)
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    interval = auc_interval(y, s, name=name) if min((y == 0).sum(), (y == 1).sum()) >= 2 else {}
    return {
        "auc": float(roc_auc_score(y, s)),
        "auc_ci_low": interval.get("ci_low"),
        "auc_ci_high": interval.get("ci_high"),
        "auc_se": interval.get("se"),
        "ap": float(average_precision_score(y, s)),
        "acc": float(accuracy_score(y, pred)),
        "real_acc": float(accuracy_score(y[y == 0], pred[y == 0])),
        "fake_acc": float(accuracy_score(y[y == 1], pred[y == 1])),
        "balanced_acc": float(balanced_accuracy_score(y, pred)),
        "eer": float((fpr[i] + fnr[i]) / 2),
        "tpr_at_fpr_1": float(np.interp(0.01, fpr, tpr)),
        "tpr_at_fpr_5": float(np.interp(0.05, fpr, tpr)),
        "n": int(len(y)),
        "n_real": int((y == 0).sum()),
        "n_fake": int((y == 1).sum()),
    }


def metrics_by_subset(labels: Sequence[int], logits: Sequence[float], subsets: Sequence[str],
                      name: str = "test") -> dict[str, dict]:
    """`{"overall": metrics, "subsets": {subset: metrics}}`; subsets with a single class are reported as such."""
    labels, logits, subsets = np.asarray(labels), np.asarray(logits), np.asarray(subsets)
    out: dict[str, dict] = {"overall": detection_metrics(labels, logits, name), "subsets": {}}
    names = sorted(set(subsets.tolist()) - {""})
    for sub in names:
        m = subsets == sub
        try:
            out["subsets"][sub] = detection_metrics(labels[m], logits[m], f"{name}/{sub}")
        except LadedaError as err:
            out["subsets"][sub] = {"error": str(err), "n": int(m.sum())}
    return out


def student_vs_teacher(student, teacher) -> dict:
    """DeLong's paired test of two `Scores` of the same images (student - teacher), matched by image index."""
    if sorted(student.indices.tolist()) != sorted(teacher.indices.tolist()):
        raise LadedaError("student and teacher were scored on different images: a paired test needs the same ones")
    order_s, order_t = np.argsort(student.indices), np.argsort(teacher.indices)
    return paired_auc_test(student.labels[order_s], student.logits[order_s], teacher.logits[order_t], name="test")


def roc_points(labels: Sequence[int], logits: Sequence[float], max_points: int = 200) -> list[dict[str, float]]:
    """ROC curve as rows {fpr, tpr, threshold} for DVC plots, thinned to about `max_points`."""
    fpr, tpr, thr = roc_curve(np.asarray(labels).astype(int), np.asarray(logits, dtype=np.float64))
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), max_points)).round().astype(int))
    return [{"fpr": float(fpr[k]), "tpr": float(tpr[k]), "threshold": float(min(thr[k], 1e6))} for k in keep]
