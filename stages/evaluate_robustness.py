"""Stage evaluate_robustness: teacher and student AUC on the test split under JPEG, resize, blur, a social-media
chain and a format-bias check (every image re-saved as JPEG), each with its interval and drop from clean."""

import json

from ladeda.core.errors import run_cli
from ladeda.core.files import write_json
from ladeda.core.outputs import plots_dir, write_metrics
from ladeda.core.params import stage_params
from ladeda.core.runtime import seed_everything, setup_runtime
from ladeda.evaluation.robustness import curves, evaluate_robustness, perturbations, summary
from ladeda.models.checkpoints import load_model
from ladeda.pipeline.datasets import checked_loader, skipped_unreadable
from ladeda.pipeline.teachers import load_selected_teacher

FLAGS = {"--teacher-weights": ("teacher_weights", str), "--batch-size": ("robustness.batch_size", int)}


def main() -> None:
    p = stage_params(__doc__, FLAGS)
    seed_everything(p.seed)
    rt = setup_runtime(p.runtime)
    r = p.robustness
    models = {"teacher": load_selected_teacher(p), "student": load_model(p.paths.student_best)}
    loader = checked_loader(p, "test", r.batch_size, rt)
    conditions = perturbations(r.jpeg_quality, r.resize_scale, r.blur_sigma, r.social_media.model_dump(),
                               r.format_bias_quality)
    results = evaluate_robustness(models, loader.dataset, conditions, r.batch_size,
                                  progress=lambda name: print(f"evaluate_robustness: {name}", flush=True), runtime=rt)
    for family, rows in curves(results, models).items():
        write_json(plots_dir("evaluate_robustness") / f"{family}.json", rows)
    head = summary(results, models, r.format_bias_min_drop)
    write_metrics("evaluate_robustness", {**head, "data_root": p.data.root, "teacher_weights": p.teacher_weights,
                                          "format_bias_min_drop": r.format_bias_min_drop,
                                          "n_images": len(loader.dataset), "skipped_unreadable":
                                          skipped_unreadable(loader), "conditions": results})
    print(json.dumps(head, indent=2))


if __name__ == "__main__":
    run_cli(main)
