"""The fit loop every training stage uses: Adam, a learning-rate schedule (ReduceLROnPlateau on validation AUC,
or cosine), optional weight averaging (EMA), early stopping on validation AUC, best checkpoint, per-epoch
logging, and an atomically written `last` checkpoint for exact resumption."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm  # not tqdm.auto: it calls iter() twice (DataLoader workers start twice)

from ladeda.core import distributed
from ladeda.core.distributed import DataParallelModel
from ladeda.core.errors import LadedaError
from ladeda.core.files import remove_stale_temps, save_torch
from ladeda.core.runtime import CPU, Runtime, seed_everything
from ladeda.data.loaders import reseed_loader
from ladeda.evaluation.metrics import detection_metrics
from ladeda.evaluation.scoring import score

DIVERGENCE_FACTOR = 1000.0  # a step loss above this times max(1, the run's first step loss) means divergence

# (model, images, labels) -> (loss to minimise, {term name: float value} to log)
StepFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


def bce_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """BCEWithLogitsLoss on the image logit (teacher pretraining and fine-tuning)."""
    loss = nn.functional.binary_cross_entropy_with_logits(model(x), y.float())
    return loss, {"bce": loss.item()}


@dataclass
class FitConfig:
    """What one training run does; `fingerprint` of it decides whether a `last` checkpoint may resume."""

    epochs: int
    lr: float
    weight_decay: float = 0.0
    patience: int = 5
    lr_factor: float = 0.5
    lr_patience: int = 2
    seed: int = 0
    lr_schedule: str = "plateau"  # plateau: ReduceLROnPlateau on val AUC | cosine: to 0 over `epochs`, per epoch
    ema: float = 0.0  # per-step decay of an exponential moving average of the weights; 0 = off
    extra: dict = field(default_factory=dict)  # also must match to resume: params, upstream input digests

    @classmethod
    def from_section(cls, section, seed: int, **extra) -> "FitConfig":
        """The config of a params section (pretrain, finetune, student); `extra` must also match to resume."""
        return cls(epochs=section.epochs, lr=section.lr, weight_decay=section.weight_decay, patience=section.patience,
                   lr_factor=section.lr_factor, lr_patience=section.lr_patience, seed=seed,
                   lr_schedule=section.lr_schedule, ema=section.ema, extra=extra)

    def fingerprint(self) -> str:
        blob = json.dumps(self.__dict__, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class EarlyStopping:
    """Stop once the monitored metric (higher is better) has not improved for `patience` epochs in a row."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best = -math.inf
        self.best_epoch = -1
        self.bad_epochs = 0

    def step(self, value: float, epoch: int) -> bool:
        """Record one epoch's value; True when it is a new best."""
        if value > self.best:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]


@dataclass
class FitResult:
    """What a run ended with: best validation AUC and epoch (1-based), history, why it stopped."""

    best_auc: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]]
    stopped_early: bool
    resumed_from: int = 0
    seconds: float = 0.0


def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable, config: FitConfig, *,
        step_fn: StepFn = bce_step, params: Iterable[nn.Parameter] | None = None,
        train_mode: Callable[[nn.Module], None] | None = None,
        on_best: Callable[[nn.Module, int, dict], None] | None = None,
        log_epoch: Callable[[dict], None] | None = None,
        epoch_metrics: Callable[[nn.Module, dict], dict] | None = None,
        last_path: str | Path | None = None,
        on_epoch_end: Callable[[int], None] | None = None, keep_last: bool = False,
        desc: str = "train", runtime: Runtime = CPU) -> FitResult:
    """Train `model` for up to `config.epochs` epochs and return the FitResult.

    `params` are the trainable parameters (default: all that require grad). `train_mode(model)` puts the
    model in training mode (default `model.train()`; fine-tuning keeps frozen parts in eval mode).
    `on_best(model, epoch, metrics)` is called on every new best validation AUC; `log_epoch(metrics)` once
    per epoch (also for epochs replayed from a resumed run, so logs are complete). `epoch_metrics(model, row)`
    is called after validation with the validated model and the epoch's row so far (train means, val
    metrics); what it returns is merged into the row, so it is logged, kept in the history and replayed on
    resume. When `last_path` is given, the full training state is written there atomically after every
    epoch; a later call with the same config fingerprint continues after the last finished epoch, otherwise
    it starts fresh. The file is removed when the run finishes unless `keep_last` (multi-phase schedules
    clean up themselves). A resumed run calls `on_best` again with the saved best weights, since DVC clears
    a stage's outputs before rerunning it. Every epoch reseeds all RNGs from (seed, epoch), so a resumed
    run draws exactly the numbers an uninterrupted one would.
    With `config.ema` > 0 the validation, `on_best` and the returned model use the moving average of the
    weights (BatchNorm statistics included) instead of the last step's, which carries the noise of the
    last few batches.
    `runtime` says where the model trains (it is moved there, in `runtime.memory_format`: channels-last on
    the CPU) and the autocast precision (fp16 with loss scaling); validation metrics are computed from fp32
    logits, checkpoints hold CPU tensors.
    Under several processes (`runtime.world_size` > 1, loaders sharded by `runtime.loader_options`) the step
    runs through DDP, the epoch's means, the divergence check and the validation scores cover all ranks,
    BatchNorm statistics are rank 0's, and only rank 0 calls `on_best` / `log_epoch` and writes `last_path`;
    every rank resumes from the same file.
    """
    device, layout = runtime.device, runtime.memory_format
    model.to(device, memory_format=layout)
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if not params:
        raise LadedaError(f"{desc}: nothing to train (every parameter is frozen)")
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = _scheduler(optimizer, config)
    scaler = runtime.grad_scaler()
    averaged = _averaged(model, config.ema)
    evaluated = averaged.module if averaged else model  # what is validated, checkpointed and returned
    stopper = EarlyStopping(config.patience)
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {}  # {"state": state dict, "row": metrics} of the best epoch so far
    start_epoch = 0
    fingerprint = config.fingerprint()
    last_path = Path(last_path) if last_path else None
    main = runtime.is_main
    if main and last_path and remove_stale_temps(last_path):
        print(f"{desc}: removed the temporary files an interrupted save left beside {last_path}")
    if last_path and last_path.is_file():
        state = torch.load(last_path, map_location="cpu", weights_only=True)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if averaged:
                averaged.load_state_dict(state["averaged"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            stopper.load_state_dict(state["early_stopping"])
            history = list(state["history"])
            start_epoch = int(state["epoch"])
            best = state["best"]
            print(f"{desc}: resuming after epoch {start_epoch} from {last_path}")
            if main and on_best and best:
                current = {k: v.clone() for k, v in evaluated.state_dict().items()}
                evaluated.load_state_dict(best["state"])
                on_best(evaluated, int(best["row"]["epoch"]), best["row"])
                evaluated.load_state_dict(current)
        else:
            print(f"{desc}: {last_path} is from different params or upstream inputs; starting fresh")
    for row in history:
        if main and log_epoch:
            log_epoch(row)
    trained = DataParallelModel(model, device) if runtime.distributed else model  # what the step function sees
    t0 = time.perf_counter()
    epoch = start_epoch
    stopped_early = stopper.should_stop
    loss_limit = None  # set from the first step: DIVERGENCE_FACTOR * max(1, first loss)
    while epoch < config.epochs and not stopped_early:
        epoch += 1
        runtime.retune_threads()
        seed_everything(config.seed * 100_003 + epoch)
        reseed_loader(train_loader, config.seed * 100_003 + epoch)
        (train_mode or nn.Module.train)(model)
        sums: dict[str, float] = {}
        n = 0
        bar = tqdm(train_loader, desc=f"{desc} {epoch}/{config.epochs}", leave=False, dynamic_ncols=True)
        for step, (x, y, _) in enumerate(bar):
            runtime.share_threads()
            x, y = x.to(device, non_blocking=True, memory_format=layout), y.to(device, non_blocking=True)
            with runtime.autocast():
                loss, terms = step_fn(trained, x, y)
            value = loss.item()
            worst = distributed.all_reduce([value], "max")[0] if runtime.distributed else value  # every rank stops
            loss_limit = loss_limit or DIVERGENCE_FACTOR * max(1.0, worst)
            if not math.isfinite(worst) or worst > loss_limit:
                raise LadedaError(f"{desc}: training diverged: the loss became {worst:.4g} at epoch {epoch}, step "
                                  f"{step} (limit {loss_limit:.4g}); lower the learning rate or check the data")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if averaged:
                averaged.update_parameters(model)
            b = len(y)
            n += b
            for k, v in {"loss": value, **terms}.items():
                sums[k] = sums.get(k, 0.0) + v * b
            bar.set_postfix(loss=f"{sums['loss'] / n:.4f}")
        if runtime.distributed:  # means over every rank's images; one model (rank 0's BatchNorm statistics)
            keys = sorted(sums)
            n, *totals = distributed.all_reduce([n, *(sums[k] for k in keys)])
            sums = dict(zip(keys, totals))
            distributed.broadcast_buffers(model)
            if averaged:
                distributed.broadcast_buffers(averaged)
        if n == 0:
            raise LadedaError(f"{desc}: the training split is empty")
        val = detection_metrics(*_labels_logits(evaluated, val_loader, runtime), name=f"{desc} validation split")
        lr = optimizer.param_groups[0]["lr"]
        row = {"epoch": epoch, **{f"train_{k}": v / n for k, v in sums.items()},
               "val_auc": val["auc"], "val_ap": val["ap"], "val_acc": val["acc"], "lr": lr}
        if epoch_metrics:
            row.update(epoch_metrics(evaluated, dict(row)))
        improved = stopper.step(val["auc"], epoch)
        if isinstance(scheduler, ReduceLROnPlateau):
            scheduler.step(val["auc"])
        else:
            scheduler.step()
        history.append(row)
        print(f"{desc} epoch {epoch}/{config.epochs}: loss {row['train_loss']:.4f}  val AUC {val['auc']:.4f}  "
              f"AP {val['ap']:.4f}  lr {lr:.2g}" + ("  *best*" if improved else ""))
        if improved:
            best = {"state": {k: v.detach().cpu().clone() for k, v in evaluated.state_dict().items()}, "row": row}
            if main and on_best:
                on_best(evaluated, epoch, row)
        if main and log_epoch:
            log_epoch(row)
        stopped_early = stopper.should_stop
        if main and last_path:
            _save_last(last_path, model, optimizer, scheduler, averaged, scaler, stopper, history, best, epoch,
                       fingerprint)
        if on_epoch_end:
            on_epoch_end(epoch)
    if main and last_path and not keep_last:
        last_path.unlink(missing_ok=True)
    if averaged:  # the model leaves as what was validated (a next phase continues from the average)
        model.load_state_dict(evaluated.state_dict())
    model.to(memory_format=torch.contiguous_format)  # and in torch's default layout
    return FitResult(stopper.best, stopper.best_epoch, epoch, history, stopped_early and epoch < config.epochs,
                     start_epoch, time.perf_counter() - t0)


def _scheduler(optimizer: torch.optim.Optimizer, config: FitConfig):
    """ReduceLROnPlateau on validation AUC (the official recipe), or cosine annealing to 0 over the epochs."""
    if config.lr_schedule == "plateau":
        return ReduceLROnPlateau(optimizer, mode="max", factor=config.lr_factor, patience=config.lr_patience)
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    raise LadedaError(f"unknown lr_schedule {config.lr_schedule!r}: use plateau or cosine")


def _averaged(model: nn.Module, decay: float) -> AveragedModel | None:
    """An EMA copy of `model` (parameters and buffers) updated after every step, or None when decay is 0."""
    if decay == 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _labels_logits(model: nn.Module, loader: Iterable, runtime: Runtime) -> tuple[np.ndarray, np.ndarray]:
    s = score(model, loader, runtime=runtime, desc="validate")
    return s.labels, s.logits


def _save_last(path: Path, model, optimizer, scheduler, averaged, scaler, stopper, history, best, epoch,
               fingerprint) -> None:
    """The whole training state as CPU tensors (it resumes on any device)."""
    state = {"fingerprint": fingerprint, "epoch": epoch, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "averaged": averaged.state_dict() if averaged else None,
             "scaler": scaler.state_dict() if scaler.is_enabled() else None,
             "early_stopping": stopper.state_dict(), "history": history, "best": best}
    save_torch(_to_cpu(state), path)


def _to_cpu(obj):
    """`obj` with every tensor in it (nested dicts, lists, tuples) moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
