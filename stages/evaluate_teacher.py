"""Stage evaluate_teacher: validation and test metrics of the chosen teacher and the distillation recommendation."""

from ladeda.core.errors import run_cli
from ladeda.core.outputs import write_metrics
from ladeda.core.params import stage_params
from ladeda.core.runtime import seed_everything, setup_runtime
from ladeda.evaluation.metrics import detection_metrics, metrics_by_subset
from ladeda.evaluation.scoring import score
from ladeda.models.checkpoints import load_model, read_checkpoint
from ladeda.pipeline.datasets import checked_loader, skipped_unreadable
from ladeda.pipeline.gates import RECOMMENDATION_WORDS, distill_recommendation, margin_words, threshold_margins

FLAGS = {"--batch-size": ("evaluate_teacher.batch_size", int)}


def main() -> None:
    p = stage_params(__doc__, FLAGS)
    seed_everything(p.seed)
    rt = setup_runtime(p.runtime)
    teacher = load_model(p.paths.finetuned)
    finetuned = bool(read_checkpoint(p.paths.finetuned).get("finetuned", False))
    bs = p.evaluate_teacher.batch_size
    val_loader = checked_loader(p, "val", bs, rt)
    val = score(teacher, val_loader, rt, desc="val")
    val_m = detection_metrics(val.labels, val.logits, name=f"{p.data.root}/val")
    test_loader = checked_loader(p, "test", bs, rt)
    test = score(teacher, test_loader, rt, desc="test")
    subsets = [test_loader.dataset.samples[i].subset for i in test.indices]
    test_m = metrics_by_subset(test.labels, test.logits, subsets, name=f"{p.data.root}/test")
    rec = distill_recommendation(val_m["auc"], p.evaluate_teacher.ready, p.evaluate_teacher.skip)
    margins = threshold_margins(val_m, {"ready": p.evaluate_teacher.ready, "skip": p.evaluate_teacher.skip})
    write_metrics("evaluate_teacher", {
        "val_auc": val_m["auc"], "val_auc_ci_low": val_m["auc_ci_low"], "val_auc_ci_high": val_m["auc_ci_high"],
        "test_auc": test_m["overall"]["auc"], "test_auc_ci_low": test_m["overall"]["auc_ci_low"],
        "test_auc_ci_high": test_m["overall"]["auc_ci_high"], "finetuned": finetuned,
        "recommendation": rec, "distill": rec != "skip", "recommendation_text": RECOMMENDATION_WORDS[rec],
        "margins": margins, "skipped_unreadable": skipped_unreadable(val_loader, test_loader),
        "val": val_m, "test": test_m})
    print(f"evaluate_teacher: validation {margin_words(val_m, margins)}")
    print(f"evaluate_teacher: val AUC {val_m['auc']:.4f}, test AUC {test_m['overall']['auc']:.4f} "
          f"-> {rec}: {RECOMMENDATION_WORDS[rec]}")


if __name__ == "__main__":
    run_cli(main)
