"""Evaluation metrics with their uncertainty: every AUC carries a DeLong interval, student vs teacher is a
paired test on the same images, gates say how far the AUC is from their thresholds, the report says it in words."""

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ladeda.core.errors import LadedaError
from ladeda.evaluation.intervals import auc_interval
from ladeda.evaluation.metrics import detection_metrics, metrics_by_subset, student_vs_teacher
from ladeda.reporting.report import markdown_report
from ladeda.evaluation.scoring import Scores
from ladeda.pipeline.gates import margin_words, threshold_margins


def scored(n=300, shift=1.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    return y, rng.normal(size=n) + shift * y


def test_every_auc_has_its_delong_interval():
    y, s = scored()
    m = detection_metrics(y, s)
    iv = auc_interval(y, s)
    assert m["auc"] == pytest.approx(roc_auc_score(y, s))
    assert (m["auc_ci_low"], m["auc_ci_high"], m["auc_se"]) == (iv["ci_low"], iv["ci_high"], iv["se"])
    assert m["auc_ci_low"] < m["auc"] < m["auc_ci_high"] and 0.05 < m["auc_ci_high"] - m["auc_ci_low"] < 0.25
    subsets = np.where(np.arange(len(y)) % 2 == 0, "a", "b")
    by = metrics_by_subset(y, s, subsets)
    assert by["subsets"]["a"]["auc_ci_high"] - by["subsets"]["a"]["auc_ci_low"] > \
        by["overall"]["auc_ci_high"] - by["overall"]["auc_ci_low"], "half the images, a wider interval"


def test_a_class_with_one_image_gets_an_auc_but_no_interval():
    m = detection_metrics([0, 0, 1], [0.1, 0.3, 0.9])
    assert m["auc"] == 1.0 and m["auc_ci_low"] is None and m["auc_se"] is None
    json.dumps(m)


def test_student_vs_teacher_pairs_images_by_index():
    """The two models may be scored in different orders; the paired test must match image to image."""
    y, good = scored(600, shift=1.5, seed=1)
    _, weak = scored(600, shift=0.3, seed=2)
    idx = np.arange(600)
    perm = np.random.default_rng(3).permutation(600)
    student = Scores(logits=good, labels=y, indices=idx)
    teacher = Scores(logits=weak[perm], labels=y[perm], indices=idx[perm])
    t = student_vs_teacher(student, teacher)
    assert t["auc_a"] == pytest.approx(roc_auc_score(y, good)) and t["auc_b"] == pytest.approx(roc_auc_score(y, weak))
    assert t["significant"] and t["ci_low"] > 0
    same = student_vs_teacher(student, Scores(logits=good[perm], labels=y[perm], indices=idx[perm]))
    assert same["difference"] == 0 and same["p_value"] == 1.0
    with pytest.raises(LadedaError, match="different images"):
        student_vs_teacher(student, Scores(logits=weak[:10], labels=y[:10], indices=idx[:10]))


def test_gate_margins_say_when_a_decision_is_within_the_noise():
    y, s = scored(200, shift=0.5)
    m = detection_metrics(y, s)
    auc = m["auc"]
    margins = threshold_margins(m, {"near": auc - 0.01, "far": auc - 0.3})
    assert margins["near"]["side"] == "straddles" and not margins["near"]["clear"]
    assert margins["far"]["side"] == "above" and margins["far"]["margin"] == pytest.approx(0.3)
    words = margin_words(m, margins)
    assert "straddles near" in words and "far" not in words and "within the noise" in words
    assert "clear of every threshold" in margin_words(m, threshold_margins(m, {"far": auc - 0.3}))
    assert threshold_margins(detection_metrics([0, 0, 1], [0.1, 0.3, 0.9]), {"x": 0.5}) == {}


def test_report_states_the_difference_in_words():
    y, s = scored(300, shift=1.0)
    test = detection_metrics(y, s)
    side = {"arch": "X", "preprocess": "NPR", "parameters": 10, "flops": 100,
            "test": {"overall": test, "subsets": {}}}
    result = {"data_root": "d", "teacher_weights": "finetuned", "teacher": side, "student": side,
              "auc_ratio": 1.0, "patch_agreement": 0.5, "patch_agreement_spearman": 0.25,
              "student_vs_teacher_text": "student AUC 0.760 vs teacher 0.671: +0.089, significant"}
    eff = {"height": 8, "width": 8, "machine": "m", "batch_size": 1, "speedup": 1.0,
           "teacher": {"images_per_s": 1.0}, "student": {"images_per_s": 1.0}}
    text = markdown_report(result, eff)
    assert "paired DeLong test" in text and "+0.089, significant" in text
    assert "correlation = **0.5000** (Pearson; Spearman 0.2500)" in text
    assert f"| ROC-AUC 95% CI (DeLong) | {test['auc_ci_low']:.4f} - {test['auc_ci_high']:.4f} |" in text
