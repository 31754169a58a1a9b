"""Stage diagnose: score the pretrained teacher on the validation split and decide whether to fine-tune."""

from ladeda.core.errors import run_cli
from ladeda.core.outputs import write_metrics
from ladeda.core.params import stage_params
from ladeda.core.runtime import seed_everything, setup_runtime
from ladeda.evaluation.metrics import detection_metrics
from ladeda.evaluation.scoring import score
from ladeda.pipeline.datasets import checked_loader, skipped_unreadable
from ladeda.pipeline.gates import BAND_WORDS, diagnose_band, margin_words, threshold_margins
from ladeda.pipeline.teachers import load_pretrained_teacher

FLAGS = {"--checkpoint": ("teacher.pretrained", str), "--batch-size": ("diagnose.batch_size", int)}


def main() -> None:
    p = stage_params(__doc__, FLAGS)
    seed_everything(p.seed)
    rt = setup_runtime(p.runtime)
    teacher = load_pretrained_teacher(p)
    val = checked_loader(p, "val", p.diagnose.batch_size, rt)
    s = score(teacher, val, rt, desc="diagnose")
    m = detection_metrics(s.labels, s.logits, name=f"{p.data.root}/val")
    band = diagnose_band(m["auc"], p.diagnose.good, p.diagnose.bad)
    margins = threshold_margins(m, {"good": p.diagnose.good, "bad": p.diagnose.bad})
    write_metrics("diagnose", {"val_auc": m["auc"], "val_auc_ci_low": m["auc_ci_low"],
                               "val_auc_ci_high": m["auc_ci_high"], "val_ap": m["ap"], "val_acc": m["acc"],
                               "band": band, "decision": BAND_WORDS[band], "margins": margins,
                               "checkpoint": p.teacher.pretrained, "skipped_unreadable": skipped_unreadable(val),
                               "val": m})
    print(f"diagnose: {margin_words(m, margins)}")
    print(f"diagnose: pretrained teacher val AUC {m['auc']:.4f} (AP {m['ap']:.4f}, acc {m['acc']:.4f}) "
          f"-> band {band}: {BAND_WORDS[band]}")


if __name__ == "__main__":
    run_cli(main)
