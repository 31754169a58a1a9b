"""Uncertainty of AUCs: DeLong confidence intervals and paired tests, so a report can say whether a
difference or a gate decision is real or within the noise of a few hundred test images."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import norm, rankdata
from sklearn.metrics import roc_auc_score

from ladeda.core.errors import LadedaError
from ladeda.evaluation.moments import covariance


def _z_critical(level: float) -> float:
    """Two-sided normal quantile for a confidence level in (0, 1), e.g. 1.96 for 0.95."""
    if not 0.0 < level < 1.0:
        raise LadedaError(f"confidence level must be between 0 and 1 (e.g. 0.95), got {level}")
    return float(norm.ppf(0.5 + level / 2))


def _inputs(labels: Sequence[int], score_sets: Sequence[Sequence[float]], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels as 0/1 ints and scores as a (k, n) float array; LadedaError for anything DeLong cannot use."""
    y = np.asarray(labels)
    s = [np.asarray(x, dtype=np.float64) for x in score_sets]
    if y.ndim != 1 or any(x.ndim != 1 for x in s):
        raise LadedaError(f"{name}: labels and scores must be flat lists, one value per image")
    for x in s:
        if len(x) != len(y):
            raise LadedaError(f"{name}: {len(y)} labels but {len(x)} scores: they must come from the same images")
        if not np.isfinite(x).all():
            raise LadedaError(f"{name}: scores contain NaN or infinity ({int((~np.isfinite(x)).sum())} of {len(x)})")
    if not np.isin(y, (0, 1)).all():
        raise LadedaError(f"{name}: labels must be 0 (real) or 1 (fake), got {sorted(set(y.tolist()) - {0, 1})[:5]}")
    y = y.astype(int)
    n_fake, n_real = int(y.sum()), int(len(y) - y.sum())
    if n_fake == 0 or n_real == 0:
        have = "no images" if len(y) == 0 else f"only {'real' if n_fake == 0 else 'fake'} images"
        raise LadedaError(f"{name} has {have}: an AUC needs both real (0_real) and fake (1_fake) images")
    if n_fake < 2 or n_real < 2:
        raise LadedaError(f"{name} has {n_real} real and {n_fake} fake images: an AUC interval needs at least "
                          "2 of each")
    return y, np.vstack(s)


def _delong(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (k,) and their DeLong covariance (k, k) for score rows `s` (k, n); Sun & Xu (2014) with midranks."""
    pos, neg = s[:, y == 1], s[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    tx = rankdata(pos, method="average", axis=1)  # midranks within fakes, within reals, and overall
    ty = rankdata(neg, method="average", axis=1)
    tz = rankdata(np.hstack([pos, neg]), method="average", axis=1)
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:, :m] - tx) / n  # structural components: P(fake_i beats a real), ties count 1/2
    v01 = 1.0 - (tz[:, m:] - ty) / m  # P(real_j is beaten by a fake)
    cov = covariance(v10) / m + covariance(v01) / n  # not np.cov: its BLAS sums differ between CPUs
    return aucs, cov


def _counts(y: np.ndarray) -> dict[str, int]:
    return {"n": int(len(y)), "n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum())}


def auc_interval(labels: Sequence[int], scores: Sequence[float], level: float = 0.95,
                 *, name: str = "split") -> dict:
    """AUC (fake = 1 is positive) with DeLong's standard error and normal interval clipped to [0, 1].

    Keys: auc, se, ci_low, ci_high, level, n, n_real, n_fake."""
    z = _z_critical(level)
    y, s = _inputs(labels, [scores], name)
    _, cov = _delong(y, s)
    auc = float(roc_auc_score(y, s[0]))
    se = math.sqrt(max(float(cov[0, 0]), 0.0))
    return {"auc": auc, "se": se, "ci_low": max(0.0, auc - z * se), "ci_high": min(1.0, auc + z * se),
            "level": float(level), **_counts(y)}


def paired_auc_test(labels: Sequence[int], scores_a: Sequence[float], scores_b: Sequence[float],
                    level: float = 0.95, *, name: str = "split") -> dict:
    """DeLong's test of AUC(a) - AUC(b) for two score sets on the same images; two-sided p-value.

    Keys: auc_a, auc_b, difference, se, ci_low, ci_high, z, p_value, significant, level, n, n_real, n_fake.
    A zero standard error (e.g. identical scores) gives z = 0 and p = 1 for no difference, else z = +-inf, p = 0."""
    zc = _z_critical(level)
    y, s = _inputs(labels, [scores_a, scores_b], name)
    _, cov = _delong(y, s)
    auc_a, auc_b = float(roc_auc_score(y, s[0])), float(roc_auc_score(y, s[1]))
    diff = auc_a - auc_b
    se = math.sqrt(max(float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]), 0.0))
    if se > 0:
        z = diff / se
    else:
        z = 0.0 if diff == 0 else math.copysign(math.inf, diff)
    p = float(2 * norm.sf(abs(z)))
    return {"auc_a": auc_a, "auc_b": auc_b, "difference": diff, "se": se,
            "ci_low": max(-1.0, diff - zc * se), "ci_high": min(1.0, diff + zc * se),
            "z": float(z), "p_value": min(p, 1.0), "significant": bool(p < 1 - level), "level": float(level),
            **_counts(y)}


def _need(d: Mapping, keys: Sequence[str], what: str) -> None:
    missing = [k for k in keys if k not in d]
    if missing:
        raise LadedaError(f"{what} is missing {', '.join(missing)}: pass the dict that {what} returned")


def gate_margin(interval: Mapping, threshold: float) -> dict:
    """Distance of an `auc_interval` from a gate threshold: margin, margin in SEs, and which side the interval is.

    Keys: threshold, margin (auc - threshold), in_units_of_se (+-inf when se is 0), side ("above" when
    ci_low > threshold, "below" when ci_high < threshold, else "straddles"), clear (side is not "straddles")."""
    _need(interval, ("auc", "se", "ci_low", "ci_high"), "auc_interval")
    if not math.isfinite(threshold):
        raise LadedaError(f"gate threshold must be a number, got {threshold}")
    margin = float(interval["auc"]) - float(threshold)
    se = float(interval["se"])
    if se > 0:
        units = margin / se
    else:
        units = 0.0 if margin == 0 else math.copysign(math.inf, margin)
    if interval["ci_low"] > threshold:
        side = "above"
    elif interval["ci_high"] < threshold:
        side = "below"
    else:
        side = "straddles"
    return {"threshold": float(threshold), "margin": margin, "in_units_of_se": float(units), "side": side,
            "clear": side != "straddles"}


def _p_words(p: float) -> str:
    """p-value as a report writes it: `p < 0.001`, `p = 0.003`, `p = 0.41`."""
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def describe_difference(test: Mapping, name_a: str, name_b: str) -> str:
    """One sentence for a report from a `paired_auc_test` result, naming the two models."""
    _need(test, ("auc_a", "auc_b", "difference", "ci_low", "ci_high", "p_value", "significant", "level", "n"),
          "paired_auc_test")
    head = (f"{name_a} AUC {test['auc_a']:.3f} vs {name_b} {test['auc_b']:.3f}: {test['difference']:+.3f} "
            f"({test['level'] * 100:g}% CI {test['ci_low']:+.2f} to {test['ci_high']:+.2f})")
    p = _p_words(test["p_value"])
    if test["significant"]:
        return f"{head}, significant (DeLong {p})"
    return f"{head}, not significant (DeLong {p}): the difference is within noise on {test['n']} images"
