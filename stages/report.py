"""Stage report: metrics/report.md in words and pictures (validation AUC per epoch, ROC, robustness curves,
patch heatmaps of a few test images), rendered offline to plots/report/*.png."""

import json
import os

from ladeda.core.errors import run_cli
from ladeda.core.files import write_text
from ladeda.core.outputs import REPORT, plots_dir, read_metrics, timings_path, write_metrics
from ladeda.core.params import stage_params
from ladeda.core.runtime import seed_everything
from ladeda.evaluation.robustness import CURVES
from ladeda.models.checkpoints import load_model
from ladeda.models.geometry import patch_geometry
from ladeda.pipeline.datasets import checked_loader
from ladeda.pipeline.teachers import load_selected_teacher
from ladeda.reporting.figures import (auc_per_epoch, heatmap_examples, heatmap_grid, read_curve, robustness_curves,
                                      roc_curves)
from ladeda.reporting.report import markdown_report

MODELS = ("teacher", "student")


def read_json(path):
    return json.loads(path.read_text())


def main() -> None:
    p = stage_params(__doc__)
    seed_everything(p.seed)
    evaluation, robustness = read_metrics("evaluate_student"), read_metrics("evaluate_robustness")
    out = plots_dir("report")
    pictures = {
        "Validation AUC per epoch": auc_per_epoch(
            {f"{stage} ({'source' if stage == 'pretrain_teacher' else 'target'})":
             read_curve(plots_dir(stage) / "plots/metrics/val_auc.tsv", "val_auc")
             for stage in ("pretrain_teacher", "finetune_teacher", "train_student")}, out / "auc_per_epoch.png"),
        "ROC, teacher vs student": roc_curves(
            {m: read_json(plots_dir("evaluate_student") / f"roc_{m}.json") for m in MODELS},
            {m: evaluation[f"{m}_test_auc"] for m in MODELS}, out / "roc.png"),
        "AUC under web degradations": robustness_curves(
            {f: read_json(plots_dir("evaluate_robustness") / f"{f}.json") for f in CURVES},
            {m: robustness[f"{m}_clean_auc"] for m in MODELS}, out / "robustness.png"),
    }
    models = {"teacher": load_selected_teacher(p), "student": load_model(p.paths.student_best)}
    rows = heatmap_examples(models, checked_loader(p, "test", 1).dataset)
    pictures["Patch heatmaps (blue real, red fake)"] = heatmap_grid(
        rows, {m: patch_geometry(model) for m, model in models.items()}, out / "heatmaps.png")
    links = {title: os.path.relpath(path, REPORT.parent) for title, path in pictures.items()}
    write_text(REPORT, markdown_report(evaluation, read_json(timings_path("evaluate_student")), robustness, links,
                                       read_metrics("check_data")))
    write_metrics("report", {"pictures": {title: str(path) for title, path in pictures.items()},
                             "heatmap_examples": [{"subset": r.title, "label": r.label, **{
                                 f"{m}_fake_probability": r.probabilities[m] for m in MODELS}} for r in rows]})
    print(f"report: {REPORT} with {len(links)} pictures in {out}")


if __name__ == "__main__":
    run_cli(main)
