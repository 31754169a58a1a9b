"""DeLong intervals and paired tests: exact against a slow reference, close to a bootstrap and a textbook example."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_auc_score

from ladeda.core.errors import LadedaError
from ladeda.evaluation.intervals import _delong, auc_interval, describe_difference, gate_margin, paired_auc_test


def scored(n_real: int, n_fake: int, shift: float = 1.0, seed: int = 0, decimals: int | None = None):
    """Labels and normal scores, fakes shifted up by `shift`; rounding to `decimals` makes ties."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n_real, int), np.ones(n_fake, int)]
    s = rng.normal(size=len(y)) + shift * y
    return y, (s if decimals is None else np.round(s, decimals))


def slow_delong(y, score_sets):
    """DeLong et al. (1988) by definition, O(n^2): psi over all (fake, real) pairs, then the sample covariances."""
    pos = [np.asarray(s)[y == 1] for s in score_sets]
    neg = [np.asarray(s)[y == 0] for s in score_sets]
    m, n = len(pos[0]), len(neg[0])
    v10 = np.zeros((len(score_sets), m))
    v01 = np.zeros((len(score_sets), n))
    for r in range(len(score_sets)):
        for i in range(m):
            for j in range(n):
                psi = 1.0 if pos[r][i] > neg[r][j] else 0.5 if pos[r][i] == neg[r][j] else 0.0
                v10[r, i] += psi / n
                v01[r, j] += psi / m
    aucs = v10.mean(axis=1)
    s10 = np.array([[np.sum((v10[a] - aucs[a]) * (v10[b] - aucs[b])) / (m - 1) for b in range(len(aucs))]
                    for a in range(len(aucs))])
    s01 = np.array([[np.sum((v01[a] - aucs[a]) * (v01[b] - aucs[b])) / (n - 1) for b in range(len(aucs))]
                    for a in range(len(aucs))])
    return aucs, s10 / m + s01 / n


@pytest.mark.parametrize("decimals", [None, 1, 0])  # continuous, some ties, heavy ties (a few distinct values)
def test_delong_auc_equals_sklearn(decimals):
    y, s = scored(150, 90, seed=1, decimals=decimals)
    aucs, _ = _delong(y, s[None, :])
    assert aucs[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auc_interval(y, s)["auc"] == roc_auc_score(y, s)


@pytest.mark.parametrize("decimals", [None, 1, 0])
def test_delong_covariance_matches_slow_reference(decimals):
    y, a = scored(23, 17, shift=0.8, seed=2, decimals=decimals)
    rng = np.random.default_rng(3)
    b = a + rng.normal(scale=0.7, size=len(a))
    if decimals is not None:
        b = np.round(b, decimals)
    ref_aucs, ref_cov = slow_delong(y, [a, b])
    aucs, cov = _delong(y, np.vstack([a, b]))
    np.testing.assert_allclose(aucs, ref_aucs, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, rtol=1e-10, atol=1e-15)
    assert auc_interval(y, a)["se"] == pytest.approx(math.sqrt(ref_cov[0, 0]), rel=1e-10)
    t = paired_auc_test(y, a, b)
    assert t["se"] == pytest.approx(math.sqrt(ref_cov[0, 0] + ref_cov[1, 1] - 2 * ref_cov[0, 1]), rel=1e-10)


def test_interval_is_symmetric_normal_and_json_ready():
    y, s = scored(60, 40, seed=4)
    iv = auc_interval(y, s, level=0.90)
    assert iv["ci_low"] == pytest.approx(iv["auc"] - 1.6448536 * iv["se"], rel=1e-6)
    assert iv["ci_high"] == pytest.approx(iv["auc"] + 1.6448536 * iv["se"], rel=1e-6)
    assert (iv["n"], iv["n_real"], iv["n_fake"], iv["level"]) == (100, 60, 40, 0.90)
    assert all(type(v) in (float, int) for v in iv.values())
    assert json.loads(json.dumps(iv)) == iv
    wider = auc_interval(y, s, level=0.99)
    assert wider["ci_low"] < iv["ci_low"] and wider["ci_high"] > iv["ci_high"]


def test_interval_is_clipped_to_0_1():
    iv = auc_interval([0] * 5 + [1] * 5, [1, 2, 3, 4, 6, 5, 7, 8, 9, 10])  # one swapped pair: AUC 24/25
    assert iv["auc"] == pytest.approx(0.96) and iv["auc"] + 1.96 * iv["se"] > 1.0
    assert iv["ci_high"] == 1.0 and iv["ci_low"] == pytest.approx(iv["auc"] - 1.959964 * iv["se"])
    perfect = auc_interval([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert (perfect["auc"], perfect["se"], perfect["ci_low"], perfect["ci_high"]) == (1.0, 0.0, 1.0, 1.0)


def test_interval_agrees_with_a_stratified_bootstrap():
    """DeLong and 2000 stratified bootstrap resamples agree on n=400: measured SE ratios 0.99-1.03 over seeds."""
    y, s = scored(200, 200, seed=0, decimals=1)
    iv = auc_interval(y, s)
    rng = np.random.default_rng(12345)
    fake, real = s[y == 1], s[y == 0]
    bf = fake[rng.integers(0, len(fake), (2000, len(fake)))]
    br = real[rng.integers(0, len(real), (2000, len(real)))]
    boot = mannwhitneyu(bf, br, axis=1, method="asymptotic").statistic / (len(fake) * len(real))  # AUC = U / mn
    assert boot[0] == pytest.approx(roc_auc_score(np.r_[np.ones(200), np.zeros(200)], np.r_[bf[0], br[0]]))
    assert boot.std(ddof=1) == pytest.approx(iv["se"], rel=0.15)
    low, high = np.percentile(boot, [2.5, 97.5])
    assert low == pytest.approx(iv["ci_low"], abs=0.01) and high == pytest.approx(iv["ci_high"], abs=0.01)


def test_hanley_mcneil_1982_ratings_example():
    """Hanley & McNeil (1982) Table 1: 58 normal, 51 abnormal CT scans on a 5-point scale, AUC 0.893, SE 0.032.

    Their SE uses an exponential approximation, so DeLong's (0.0307) only agrees to a few percent."""
    normal = np.repeat([1, 2, 3, 4, 5], [33, 6, 6, 11, 2])
    abnormal = np.repeat([1, 2, 3, 4, 5], [3, 2, 2, 11, 33])
    iv = auc_interval(np.r_[np.zeros(58), np.ones(51)], np.r_[normal, abnormal])
    assert round(iv["auc"], 3) == 0.893
    assert iv["se"] == pytest.approx(0.032, rel=0.1)


def test_paired_identical_scores_is_no_difference():
    y, s = scored(300, 300, seed=6)
    t = paired_auc_test(y, s, s)
    assert (t["difference"], t["se"], t["z"], t["p_value"], t["significant"]) == (0.0, 0.0, 0.0, 1.0, False)
    assert t["auc_a"] == t["auc_b"] == roc_auc_score(y, s)
    assert json.loads(json.dumps(t)) == t


def test_paired_clearly_better_scores_on_600_images_is_significant():
    y, good = scored(300, 300, shift=1.5, seed=7)
    worse = good + np.random.default_rng(8).normal(scale=1.5, size=600)  # same images, extra noise
    t = paired_auc_test(y, good, worse)
    assert t["difference"] == pytest.approx(roc_auc_score(y, good) - roc_auc_score(y, worse))
    assert t["difference"] > 0.05 and t["ci_low"] > 0 and t["z"] > 3
    assert t["p_value"] < 0.001 and t["significant"] is True
    swapped = paired_auc_test(y, worse, good)  # antisymmetric: same p, mirrored interval
    assert swapped["difference"] == -t["difference"] and swapped["z"] == pytest.approx(-t["z"])
    assert swapped["p_value"] == pytest.approx(t["p_value"])
    assert swapped["ci_low"] == pytest.approx(-t["ci_high"])


def test_paired_against_a_constant_score_is_the_one_sample_test():
    """A constant score has AUC 0.5 and zero variance, so the paired test reduces to AUC(a) vs 0.5 with a's SE."""
    y, s = scored(40, 30, shift=0.5, seed=9)
    t = paired_auc_test(y, s, np.zeros_like(s))
    iv = auc_interval(y, s)
    assert t["auc_b"] == 0.5
    assert t["se"] == pytest.approx(iv["se"], rel=1e-10)
    assert t["z"] == pytest.approx((iv["auc"] - 0.5) / iv["se"])


def test_paired_small_difference_is_not_significant():
    y, a = scored(300, 300, shift=1.0, seed=10)
    b = a + np.random.default_rng(11).normal(scale=0.05, size=600)
    t = paired_auc_test(y, a, b)
    assert t["p_value"] > 0.05 and t["significant"] is False and t["ci_low"] < 0 < t["ci_high"]


def test_gate_margin_sides():
    iv = {"auc": 0.70, "se": 0.02, "ci_low": 0.66, "ci_high": 0.74}
    above = gate_margin(iv, 0.65)
    assert above["side"] == "above" and above["clear"] is True
    assert above["margin"] == pytest.approx(0.05) and above["in_units_of_se"] == pytest.approx(2.5)
    below = gate_margin(iv, 0.80)
    assert below["side"] == "below" and below["clear"] is True and below["in_units_of_se"] == pytest.approx(-5.0)
    inside = gate_margin(iv, 0.72)
    assert inside["side"] == "straddles" and inside["clear"] is False and inside["margin"] == pytest.approx(-0.02)
    assert gate_margin(iv, 0.66)["side"] == "straddles"  # touching the threshold is not clear of it
    real = gate_margin(auc_interval(*scored(100, 100, seed=12)), 0.5)
    assert real["side"] == "above" and real["in_units_of_se"] > 1.96


def test_describe_difference_wording():
    sig = {"auc_a": 0.7601, "auc_b": 0.6712, "difference": 0.0889, "ci_low": 0.031, "ci_high": 0.147,
           "p_value": 0.0031, "significant": True, "level": 0.95, "n": 600}
    assert describe_difference(sig, "student", "teacher") == (
        "student AUC 0.760 vs teacher 0.671: +0.089 (95% CI +0.03 to +0.15), significant (DeLong p = 0.003)")
    noise = {**sig, "difference": -0.012, "ci_low": -0.041, "ci_high": 0.017, "p_value": 0.412,
             "significant": False}
    assert describe_difference(noise, "student", "teacher").endswith(
        "-0.012 (95% CI -0.04 to +0.02), not significant (DeLong p = 0.41): "
        "the difference is within noise on 600 images")
    assert "DeLong p < 0.001" in describe_difference({**sig, "p_value": 2e-7}, "a", "b")
    y, good = scored(300, 300, shift=1.5, seed=7)
    real = describe_difference(paired_auc_test(y, good, np.zeros(600), level=0.9), "tiny", "constant")
    assert real.startswith("tiny AUC ") and "(90% CI " in real and real.endswith("significant (DeLong p < 0.001)")


def test_errors_are_clear():
    with pytest.raises(LadedaError, match="only real images"):
        auc_interval([0, 0, 0], [0.1, 0.2, 0.3], name="test")
    with pytest.raises(LadedaError, match="only fake images"):
        paired_auc_test([1, 1], [0.1, 0.2], [0.3, 0.4])
    with pytest.raises(LadedaError, match="3 labels but 2 scores"):
        auc_interval([0, 1, 1], [0.1, 0.2])
    with pytest.raises(LadedaError, match="4 labels but 3 scores"):
        paired_auc_test([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3])
    with pytest.raises(LadedaError, match="at least 2 of each"):
        auc_interval([0, 0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(LadedaError, match="0 \\(real\\) or 1 \\(fake\\)"):
        auc_interval([0, 1, 2, 1], [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(LadedaError, match="NaN"):
        auc_interval([0, 0, 1, 1], [0.1, float("nan"), 0.3, 0.4])
    with pytest.raises(LadedaError, match="level"):
        auc_interval([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], level=95)
    with pytest.raises(LadedaError, match="missing se"):
        gate_margin({"auc": 0.7, "ci_low": 0.6, "ci_high": 0.8}, 0.65)
