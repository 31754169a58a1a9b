"""Stage pretrain_teacher: train LaDeDa from scratch on the source domain (stands in for the official weights)."""

from _live import epoch_logger  # stages/ is on sys.path when run as `python stages/<stage>.py`

from ladeda.errors import run_cli
from ladeda.io import write_json
from ladeda.models import build_model
from ladeda.params import stage_params
from ladeda.runtime import tune_allocator
from ladeda.train import fit, seed_everything, set_bn_momentum
from ladeda.workflow import as_dict, checkpoint_on_best, fit_config, split_loader

OUT = "weights/pretrained/default_LaDeDa.pth"
FLAGS = {"--epochs": ("pretrain.epochs", int), "--batch-size": ("pretrain.batch_size", int),
         "--lr": ("pretrain.lr", float), "--patience": ("pretrain.patience", int)}


def main() -> None:
    p = stage_params(__doc__, FLAGS)
    seed_everything(p.seed)
    tune_allocator()
    t, d = p.teacher, p.data
    model = build_model(t.arch, t.preprocess, t.npr_scale, t.width)
    set_bn_momentum(model, p.pretrain.bn_momentum)
    train = split_loader(d, d.source_root, "train", p.pretrain.batch_size, p.seed)
    val = split_loader(d, d.source_root, "val", p.diagnose.batch_size, p.seed)
    used = {"teacher": as_dict(t), "pretrain": as_dict(p.pretrain), "data": as_dict(d), "seed": p.seed}
    with epoch_logger("plots/pretrain_teacher") as log:
        result = fit(model, train, val, fit_config(p.pretrain, p.seed, params=used),
                     on_best=checkpoint_on_best(OUT, d.crop_size, used, finetuned=False, domain="source"),
                     log_epoch=log, last_path="weights/.resume/pretrain_teacher.pt", desc="pretrain")
    write_json("metrics/pretrain_teacher.json", {
        "source_val_auc": result.best_auc, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early, "seconds": round(result.seconds, 1)})
    print(f"pretrain_teacher: best source val AUC {result.best_auc:.4f} at epoch {result.best_epoch} -> {OUT}")


if __name__ == "__main__":
    run_cli(main)
