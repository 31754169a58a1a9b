"""Stage finetune_teacher: fine-tune the head and the last residual stages when the diagnose band asks for it."""

from _live import epoch_logger  # stages/ is on sys.path when run as `python stages/<stage>.py`

from ladeda.core.errors import run_cli
from ladeda.core.fingerprint import inputs_digest
from ladeda.core.outputs import plots_dir, read_metrics, write_metrics, write_timings
from ladeda.core.params import stage_params
from ladeda.core.runtime import seed_everything, setup_runtime, tune_allocator
from ladeda.models.checkpoints import checkpoint_on_best, save_checkpoint
from ladeda.pipeline.datasets import checked_loader, skipped_unreadable
from ladeda.pipeline.gates import finetune_decision
from ladeda.pipeline.teachers import load_pretrained_teacher
from ladeda.training.finetune import freeze_for_finetuning, set_bn_momentum
from ladeda.training.fit import FitConfig, fit

FLAGS = {"--epochs": ("finetune.epochs", int), "--batch-size": ("finetune.batch_size", int),
         "--lr": ("finetune.lr", float), "--patience": ("finetune.patience", int),
         "--unfreeze-blocks": ("finetune.unfreeze_blocks", int), "--checkpoint": ("teacher.pretrained", str),
         "--policy": ("finetune.policy", str)}


def main() -> None:
    p = stage_params(__doc__, FLAGS)
    seed_everything(p.seed)
    tune_allocator()
    rt = setup_runtime(p.runtime, data_parallel=True)  # nproc > 1: one process per rank
    out = p.paths.finetuned
    diagnosis = read_metrics("diagnose")
    decision = finetune_decision(p.finetune.policy, diagnosis["band"], diagnosis.get("margins", {}).get("good"))
    print(f"finetune_teacher: {decision.reason}")
    model = load_pretrained_teacher(p)
    used = {"teacher": p.teacher.model_dump(), "finetune": p.finetune.model_dump(), "data": p.data.model_dump(),
            "seed": p.seed}
    summary = {"finetuned": decision.finetune, "reason": decision.reason, "band": diagnosis["band"],
               "pretrained_val_auc": diagnosis["val_auc"]}
    with epoch_logger(plots_dir("finetune_teacher"), enabled=rt.is_main) as log:
        log({"epoch": 0, "val_auc": diagnosis["val_auc"]})  # the curve starts at the pretrained teacher
        if not decision.finetune:
            if not rt.is_main:
                return  # rank 0 writes the results
            save_checkpoint(out, model, image_size=p.data.crop_size, params=used,
                            metrics={"val_auc": diagnosis["val_auc"]}, finetuned=False, reason=decision.reason)
            summary.update(val_auc=diagnosis["val_auc"], best_epoch=0, epochs_run=0)
            timings = {"seconds": 0.0, "epochs_timed": 0}
        else:
            train_mode = freeze_for_finetuning(model, p.finetune.unfreeze_blocks)
            set_bn_momentum(model, p.finetune.bn_momentum)  # frozen BatchNorms stay in eval mode regardless
            train = checked_loader(p, "train", p.finetune.batch_size, rt)
            val = checked_loader(p, "val", p.finetune.val_batch_size, rt)
            result = fit(model, train, val, FitConfig.from_section(p.finetune, p.seed, params=used,
                                                                inputs=inputs_digest(p.teacher.pretrained, p.data.root)),
                         train_mode=train_mode,
                         on_best=checkpoint_on_best(out, p.data.crop_size, used, finetuned=True,
                                                    reason=decision.reason),
                         log_epoch=log, last_path=f"{p.paths.resume}/finetune_teacher.pt", desc="finetune", runtime=rt)
            summary.update(val_auc=result.best_auc, best_epoch=result.best_epoch, epochs_run=result.epochs_run,
                           stopped_early=result.stopped_early, skipped_unreadable=skipped_unreadable(train, val))
            timings = {"seconds": round(result.seconds, 1), "epochs_timed": result.epochs_run - result.resumed_from}
            if not rt.is_main:
                return  # rank 0 writes the results
    summary["val_auc_gain"] = summary["val_auc"] - diagnosis["val_auc"]
    write_metrics("finetune_teacher", summary)
    write_timings("finetune_teacher", timings)
    print(f"finetune_teacher: val AUC {diagnosis['val_auc']:.4f} -> {summary['val_auc']:.4f} -> {out}")


if __name__ == "__main__":
    run_cli(main)
