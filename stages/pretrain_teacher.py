"""Stage pretrain_teacher: train LaDeDa from scratch on the source domain (stands in for the official weights)."""

from _live import epoch_logger  # stages/ is on sys.path when run as `python stages/<stage>.py`

from ladeda.core.errors import run_cli
from ladeda.core.fingerprint import inputs_digest
from ladeda.core.outputs import plots_dir, write_metrics, write_timings
from ladeda.core.params import stage_params
from ladeda.core.runtime import seed_everything, setup_runtime, tune_allocator
from ladeda.data.loaders import split_loader
from ladeda.models import build_model
from ladeda.models.checkpoints import checkpoint_on_best
from ladeda.training.finetune import set_bn_momentum
from ladeda.training.fit import FitConfig, fit

FLAGS = {"--epochs": ("pretrain.epochs", int), "--batch-size": ("pretrain.batch_size", int),
         "--lr": ("pretrain.lr", float), "--patience": ("pretrain.patience", int)}


def main() -> None:
    p = stage_params(__doc__, FLAGS)
    seed_everything(p.seed)
    tune_allocator()
    rt = setup_runtime(p.runtime, data_parallel=True)  # nproc > 1: one process per rank
    t, d, out = p.teacher, p.data, p.paths.pretrained
    model = build_model(t.arch, t.preprocess, t.npr_scale, t.width)
    set_bn_momentum(model, p.pretrain.bn_momentum)
    train = split_loader(d, d.source_root, "train", p.pretrain.batch_size, p.seed, **rt.loader_options())
    val = split_loader(d, d.source_root, "val", p.pretrain.val_batch_size, p.seed, **rt.loader_options())
    used = {"teacher": t.model_dump(), "pretrain": p.pretrain.model_dump(), "data": d.model_dump(), "seed": p.seed}
    with epoch_logger(plots_dir("pretrain_teacher"), enabled=rt.is_main) as log:
        result = fit(model, train, val, FitConfig.from_section(p.pretrain, p.seed, params=used,
                                                                inputs=inputs_digest(d.source_root)),
                     on_best=checkpoint_on_best(out, d.crop_size, used, finetuned=False, domain="source"),
                     log_epoch=log, last_path=f"{p.paths.resume}/pretrain_teacher.pt", desc="pretrain", runtime=rt)
    if not rt.is_main:
        return  # rank 0 writes the results
    write_metrics("pretrain_teacher", {
        "source_val_auc": result.best_auc, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early})
    write_timings("pretrain_teacher", {"seconds": round(result.seconds, 1), "epochs_timed": result.epochs_run
                                       - result.resumed_from})
    print(f"pretrain_teacher: best source val AUC {result.best_auc:.4f} at epoch {result.best_epoch} -> {out}")


if __name__ == "__main__":
    run_cli(main)
