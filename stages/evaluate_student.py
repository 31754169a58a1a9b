"""Stage evaluate_student: student and teacher side by side on the test split, ROC data, and efficiency."""

import json

from ladeda.core.errors import run_cli
from ladeda.core.files import write_json
from ladeda.core.outputs import plots_dir, write_metrics, write_timings
from ladeda.core.params import stage_params
from ladeda.core.runtime import seed_everything, setup_runtime
from ladeda.distillation.agreement import PatchAgreement
from ladeda.evaluation.efficiency import count_parameters, flops_per_image, machine_description, measure_throughput
from ladeda.evaluation.intervals import describe_difference
from ladeda.evaluation.metrics import metrics_by_subset, roc_points, student_vs_teacher
from ladeda.evaluation.scoring import score_models
from ladeda.models.checkpoints import load_model
from ladeda.models.fastpath import optimize_for_inference
from ladeda.pipeline.datasets import checked_loader, skipped_unreadable
from ladeda.pipeline.teachers import load_selected_teacher

FLAGS = {"--teacher-weights": ("teacher_weights", str), "--batch-size": ("evaluate.batch_size", int)}


def main() -> None:
    p = stage_params(__doc__, FLAGS)
    seed_everything(p.seed)
    rt = setup_runtime(p.runtime)
    student = load_model(p.paths.student_best)
    teacher = load_selected_teacher(p)
    loader = checked_loader(p, "test", p.evaluate.batch_size, rt)
    subsets = [s.subset for s in loader.dataset.samples]
    result = {"data_root": p.data.root, "teacher_weights": p.teacher_weights,
              "skipped_unreadable": skipped_unreadable(loader)}
    models = {"teacher": teacher, "student": student}
    agreement = PatchAgreement()  # streaming: no patch map is kept
    scores = score_models(models, loader, rt, desc="test",
                          on_maps=lambda maps: agreement.update(maps["student"], maps["teacher"]))
    for name, model in models.items():
        s = scores[name]
        result[name] = {"arch": type(model).__name__, "preprocess": model.preprocess,
                        "test": metrics_by_subset(s.labels, s.logits, [subsets[i] for i in s.indices]),
                        "parameters": count_parameters(model)}
        write_json(plots_dir("evaluate_student") / f"roc_{name}.json", roc_points(s.labels, s.logits))
    t_auc, s_auc = result["teacher"]["test"]["overall"]["auc"], result["student"]["test"]["overall"]["auc"]
    result["auc_ratio"] = s_auc / t_auc
    result["student_vs_teacher"] = student_vs_teacher(scores["student"], scores["teacher"])
    result["student_vs_teacher_text"] = describe_difference(result["student_vs_teacher"], "student", "teacher")
    agreement = agreement.result()
    result["patch_agreement"], result["patch_agreement_spearman"] = agreement["pearson"], agreement["spearman"]
    h = w = p.data.load_size or p.data.crop_size
    models = {name: model.cpu() for name, model in models.items()}  # efficiency is measured on the CPU
    eff = {"height": h, "width": w, "batch_size": p.evaluate.latency_batch, "machine": machine_description()}
    for name, model in models.items():
        result[name]["flops"] = flops_per_image(model, h, w)
        speed = measure_throughput(optimize_for_inference(model), h, w, batch_size=p.evaluate.latency_batch,
                                   repeats=p.evaluate.latency_repeats)
        eff[name] = {"images_per_s": speed["images_per_s"], "latency_ms_per_image": speed["latency_ms_per_image"]}
    result["flops_ratio"] = result["teacher"]["flops"] / result["student"]["flops"]
    result["parameter_ratio"] = result["teacher"]["parameters"] / result["student"]["parameters"]
    eff["speedup"] = eff["student"]["images_per_s"] / eff["teacher"]["images_per_s"]
    diff = result["student_vs_teacher"]
    summary = {"student_test_auc": s_auc, "teacher_test_auc": t_auc, "auc_ratio": result["auc_ratio"],
               "auc_difference": diff["difference"], "auc_difference_ci_low": diff["ci_low"],
               "auc_difference_ci_high": diff["ci_high"], "auc_difference_p_value": diff["p_value"],
               "auc_difference_significant": diff["significant"], "patch_agreement": result["patch_agreement"],
               "patch_agreement_spearman": result["patch_agreement_spearman"]}
    # Quality metrics are deterministic; measured speed lives apart so `dvc metrics diff` stays meaningful.
    write_metrics("evaluate_student", {**summary, **result})
    write_timings("evaluate_student", eff)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    run_cli(main)
