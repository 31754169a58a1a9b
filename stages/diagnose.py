"""Stage diagnose: score the pretrained teacher on the validation split and decide whether to fine-tune."""

from ladeda.errors import run_cli
from ladeda.evaluate import detection_metrics, score
from ladeda.gates import BAND_WORDS, diagnose_band
from ladeda.io import write_json
from ladeda.params import stage_params
from ladeda.train import seed_everything
from ladeda.workflow import load_pretrained_teacher, read_metrics, split_loader

OUT = "metrics/diagnose.json"
FLAGS = {"--checkpoint": ("teacher.pretrained", str), "--batch-size": ("diagnose.batch_size", int)}


def main() -> None:
    p = stage_params(__doc__, FLAGS)
    seed_everything(p.seed)
    read_metrics("metrics/check_data.json", "check_data")  # the data check passed for this data
    teacher = load_pretrained_teacher(p)
    s = score(teacher, split_loader(p.data, p.data.root, "val", p.diagnose.batch_size, p.seed), desc="diagnose")
    m = detection_metrics(s.labels, s.logits, name=f"{p.data.root}/val")
    band = diagnose_band(m["auc"], p.diagnose.good, p.diagnose.bad)
    write_json(OUT, {"val_auc": m["auc"], "val_ap": m["ap"], "val_acc": m["acc"], "band": band,
                     "decision": BAND_WORDS[band], "checkpoint": p.teacher.pretrained, "val": m})
    print(f"diagnose: pretrained teacher val AUC {m['auc']:.4f} (AP {m['ap']:.4f}, acc {m['acc']:.4f}) "
          f"-> band {band}: {BAND_WORDS[band]}")


if __name__ == "__main__":
    run_cli(main)
