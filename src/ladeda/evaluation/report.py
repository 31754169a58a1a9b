"""The human-readable Markdown report of teacher vs student (metrics/report.md)."""

from __future__ import annotations

METRIC_ROWS = [("auc", "ROC-AUC"), ("ap", "AP"), ("acc", "accuracy @0.5"), ("real_acc", "real accuracy"),
               ("fake_acc", "fake accuracy"), ("balanced_acc", "balanced accuracy"), ("eer", "EER"),
               ("tpr_at_fpr_1", "TPR @ FPR 1%"), ("tpr_at_fpr_5", "TPR @ FPR 5%")]


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _ci(metrics: dict) -> str:
    low, high = metrics.get("auc_ci_low"), metrics.get("auc_ci_high")
    return "n/a" if low is None else f"{low:.4f} - {high:.4f}"


def markdown_report(result: dict, eff: dict) -> str:
    """Teacher vs student on the test split: overall and per-subset metrics, agreement and efficiency."""
    t, s = result["teacher"], result["student"]
    lines = [f"# Teacher vs student on `{result['data_root']}` (test split)", "",
             f"Teacher: `{result['teacher_weights']}` ({t['arch']}); student: Tiny-LaDeDa "
             f"({s['preprocess']}). Student AUC / teacher AUC = **{result['auc_ratio']:.4f}**; "
             f"patch-logit correlation = **{result['patch_agreement']:.4f}** (Pearson; Spearman "
             f"{result['patch_agreement_spearman']:.4f}).", "",
             f"Difference (paired DeLong test on the same images): {result['student_vs_teacher_text']}.", "",
             "| metric | teacher | student |", "|---|---|---|"]
    for key, name in METRIC_ROWS:
        lines.append(f"| {name} | {_fmt(t['test']['overall'][key])} | {_fmt(s['test']['overall'][key])} |")
        if key == "auc":
            lines.append(f"| ROC-AUC 95% CI (DeLong) | {_ci(t['test']['overall'])} | {_ci(s['test']['overall'])} |")
    subsets = sorted(s["test"]["subsets"])
    if subsets:
        lines += ["", "| subset | n | teacher AUC (95% CI) | student AUC (95% CI) |", "|---|---|---|---|"]
        for sub in subsets:
            tm, sm = t["test"]["subsets"][sub], s["test"]["subsets"][sub]
            lines.append(f"| {sub} | {sm.get('n', '')} | {_fmt(tm.get('auc', 'n/a'))} ({_ci(tm)}) | "
                         f"{_fmt(sm.get('auc', 'n/a'))} ({_ci(sm)}) |")
    e = eff
    lines += ["", f"Efficiency at {e['height']}x{e['width']} on this machine ({e['machine']}):", "",
              "| | teacher | student | ratio |", "|---|---|---|---|",
              f"| parameters | {t['parameters']:,} | {s['parameters']:,} | {t['parameters'] / s['parameters']:,.0f}x |",
              f"| FLOPs / image | {t['flops']:,} | {s['flops']:,} | {t['flops'] / s['flops']:,.0f}x |",
              f"| images/s (batch {e['batch_size']}, fast path) | {e['teacher']['images_per_s']:,.1f} | "
              f"{e['student']['images_per_s']:,.1f} | {e['speedup']:,.1f}x |", ""]
    return "\n".join(lines)
