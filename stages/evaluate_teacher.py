"""Stage evaluate_teacher: validation and test metrics of the chosen teacher and the distillation recommendation."""

from ladeda.checkpoints import load_model, read_checkpoint
from ladeda.errors import run_cli
from ladeda.evaluate import detection_metrics, metrics_by_subset, score
from ladeda.gates import RECOMMENDATION_WORDS, distill_recommendation
from ladeda.io import write_json
from ladeda.params import stage_params
from ladeda.train import seed_everything
from ladeda.workflow import split_loader

CHECKPOINT = "weights/teacher/teacher_finetuned_best.pth"
FLAGS = {"--batch-size": ("evaluate_teacher.batch_size", int)}


def main() -> None:
    p = stage_params(__doc__, FLAGS)
    seed_everything(p.seed)
    teacher = load_model(CHECKPOINT)
    finetuned = bool(read_checkpoint(CHECKPOINT).get("finetuned", False))
    bs = p.evaluate_teacher.batch_size
    val = score(teacher, split_loader(p.data, p.data.root, "val", bs, p.seed), desc="val")
    val_m = detection_metrics(val.labels, val.logits, name=f"{p.data.root}/val")
    test_loader = split_loader(p.data, p.data.root, "test", bs, p.seed)
    test = score(teacher, test_loader, desc="test")
    subsets = [test_loader.dataset.samples[i].subset for i in test.indices]
    test_m = metrics_by_subset(test.labels, test.logits, subsets, name=f"{p.data.root}/test")
    rec = distill_recommendation(val_m["auc"], p.evaluate_teacher.ready, p.evaluate_teacher.skip)
    write_json("metrics/evaluate_teacher.json", {
        "val_auc": val_m["auc"], "test_auc": test_m["overall"]["auc"], "finetuned": finetuned,
        "recommendation": rec, "distill": rec != "skip", "recommendation_text": RECOMMENDATION_WORDS[rec],
        "val": val_m, "test": test_m})
    print(f"evaluate_teacher: val AUC {val_m['auc']:.4f}, test AUC {test_m['overall']['auc']:.4f} "
          f"-> {rec}: {RECOMMENDATION_WORDS[rec]}")


if __name__ == "__main__":
    run_cli(main)
