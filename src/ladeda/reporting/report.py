"""The human-readable Markdown report (metrics/report.md): teacher vs student on the test split, robustness to
web degradations, efficiency, and the pictures (PNG links relative to the report)."""

from __future__ import annotations

from ladeda.core.text import counted

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


def _drop(row: dict) -> str:
    if "drop" not in row:
        return "(reference)"
    star = ", significant" if row["drop_significant"] else ""
    return f"{-row['drop']:+.3f} (p {row['drop_p_value']:.2g}{star})"


def robustness_section(robustness: dict) -> list[str]:
    """Markdown lines: each degradation's teacher and student AUC with interval, and its change from clean
    (paired DeLong test); then the format-bias verdict."""
    lines = ["## Robustness (test split degraded as on the web)", "",
             "| condition | teacher AUC (95% CI) | change | student AUC (95% CI) | change |", "|---|---|---|---|---|"]
    for name, row in robustness["conditions"].items():
        t, s = row["teacher"], row["student"]
        lines.append(f"| {name} | {t['auc']:.3f} ({_ci(t)}) | {_drop(t)} | {s['auc']:.3f} ({_ci(s)}) | {_drop(s)} |")
    bias = [r for r in robustness["conditions"].values() if r["family"] == "format_bias"]
    if bias:
        q = bias[0]["strength"]
        lines += ["", f"Format bias (every test image re-saved as JPEG q{q:g}, which a person cannot tell from "
                      "the original):"]
        for model in ("teacher", "student"):
            row = bias[0][model]
            if robustness.get(f"{model}_format_shortcut"):
                verdict = "falls significantly: the detector leans on file format or compression history"
            elif row["drop_significant"] and row["drop"] > 0:
                verdict = (f"a significant but small drop (under {robustness['format_bias_min_drop']:g}): "
                           "no practical sign of a format shortcut")
            else:
                verdict = "no significant drop: no sign of a format shortcut"
            lines.append(f"- {model}: AUC {robustness['conditions']['clean'][model]['auc']:.3f} -> "
                         f"{row['auc']:.3f} ({-row['drop']:+.3f}, p {row['drop_p_value']:.2g}): {verdict}.")
    return lines + [""]


def data_section(check: dict) -> list[str]:
    """Markdown lines from the data check (metrics/check_data.json): images per split and class, what the
    stages leave out (unreadable, non-image, unlabelled files) and every warning, so no caveat stays in the log."""
    lines = ["## Data (`check_data`)", "", f"`{check['root']}`:", "", "| split | image files | real | fake |",
             "|---|---|---|---|"]
    for split, info in check["splits"].items():
        if info.get("present"):
            classes = info["classes"]
            lines.append(f"| {split} | {info['images']:,} | {classes['real']:,} | {classes['fake']:,} |")
    totals = check["totals"]
    left_out = [f"{counted(totals[key], noun)}{words}" for key, noun, words in (
        ("unreadable", "unreadable image", " (excluded from every stage)"),
        ("skipped_non_image", "non-image file", ""), ("unlabelled_images", "image", " outside a class folder"))
        if totals.get(key)]
    lines += ["", f"Not used: {', '.join(left_out)}." if left_out else
              "Every file found was a readable, labelled image."]
    warnings = check["warnings"]
    lines += ["", "Warnings of the data check:" if warnings else "The data check raised no warnings."]
    lines += [f"- {w}" for w in warnings]
    return lines + [""]


def pictures_section(pictures: dict[str, str]) -> list[str]:
    """Markdown image links, one per picture (title -> path relative to the report)."""
    lines = ["## Pictures", ""]
    for title, path in pictures.items():
        lines += [f"**{title}**", "", f"![{title}]({path})", ""]
    return lines


def markdown_report(result: dict, eff: dict, robustness: dict | None = None,
                    pictures: dict[str, str] | None = None, data_check: dict | None = None) -> str:
    """Teacher vs student on the test split: overall and per-subset metrics, agreement, efficiency, then the
    robustness table, the data check and the pictures when given."""
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
    if robustness:
        lines += robustness_section(robustness)
    if data_check:
        lines += data_section(data_check)
    if pictures:
        lines += pictures_section(pictures)
    return "\n".join(lines)
