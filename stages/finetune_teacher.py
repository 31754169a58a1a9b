"""Stage finetune_teacher: fine-tune the head and the last residual stages when the diagnose band asks for it."""

from _live import epoch_logger  # stages/ is on sys.path when run as `python stages/<stage>.py`

from ladeda.checkpoints import save_checkpoint
from ladeda.errors import run_cli
from ladeda.gates import finetune_decision
from ladeda.io import write_json
from ladeda.params import stage_params
from ladeda.runtime import tune_allocator
from ladeda.train import fit, freeze_for_finetuning, seed_everything, set_bn_momentum
from ladeda.workflow import (as_dict, checkpoint_on_best, fit_config, load_pretrained_teacher, read_metrics,
                             split_loader)

OUT = "weights/teacher/teacher_finetuned_best.pth"
FLAGS = {"--epochs": ("finetune.epochs", int), "--batch-size": ("finetune.batch_size", int),
         "--lr": ("finetune.lr", float), "--patience": ("finetune.patience", int),
         "--unfreeze-blocks": ("finetune.unfreeze_blocks", int), "--checkpoint": ("teacher.pretrained", str),
         "--policy": ("finetune.policy", str)}


def main() -> None:
    p = stage_params(__doc__, FLAGS)
    seed_everything(p.seed)
    tune_allocator()
    diagnosis = read_metrics("metrics/diagnose.json", "diagnose")
    decision = finetune_decision(p.finetune.policy, diagnosis["band"])
    print(f"finetune_teacher: {decision.reason}")
    model = load_pretrained_teacher(p)
    used = {"teacher": as_dict(p.teacher), "finetune": as_dict(p.finetune), "data": as_dict(p.data), "seed": p.seed}
    summary = {"finetuned": decision.finetune, "reason": decision.reason, "band": diagnosis["band"],
               "pretrained_val_auc": diagnosis["val_auc"]}
    with epoch_logger("plots/finetune_teacher") as log:
        log({"epoch": 0, "val_auc": diagnosis["val_auc"]})  # the curve starts at the pretrained teacher
        if not decision.finetune:
            save_checkpoint(OUT, model, image_size=p.data.crop_size, params=used,
                            metrics={"val_auc": diagnosis["val_auc"]}, finetuned=False, reason=decision.reason)
            summary.update(val_auc=diagnosis["val_auc"], best_epoch=0, epochs_run=0)
        else:
            train_mode = freeze_for_finetuning(model, p.finetune.unfreeze_blocks)
            set_bn_momentum(model, p.finetune.bn_momentum)  # frozen BatchNorms stay in eval mode regardless
            train = split_loader(p.data, p.data.root, "train", p.finetune.batch_size, p.seed)
            val = split_loader(p.data, p.data.root, "val", p.diagnose.batch_size, p.seed)
            result = fit(model, train, val, fit_config(p.finetune, p.seed, params=used), train_mode=train_mode,
                         on_best=checkpoint_on_best(OUT, p.data.crop_size, used, finetuned=True,
                                                    reason=decision.reason),
                         log_epoch=log, last_path="weights/.resume/finetune_teacher.pt", desc="finetune")
            summary.update(val_auc=result.best_auc, best_epoch=result.best_epoch, epochs_run=result.epochs_run,
                           stopped_early=result.stopped_early, seconds=round(result.seconds, 1))
    summary["val_auc_gain"] = summary["val_auc"] - diagnosis["val_auc"]
    write_json("metrics/finetune_teacher.json", summary)
    print(f"finetune_teacher: val AUC {diagnosis['val_auc']:.4f} -> {summary['val_auc']:.4f} -> {OUT}")


if __name__ == "__main__":
    run_cli(main)
