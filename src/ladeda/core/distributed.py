"""Data-parallel training with PyTorch's own engine: a training stage relaunches itself as `runtime.nproc`
processes (torch.distributed.elastic, what `torchrun` runs), or joins the processes an outer `torchrun` started
(multi-node); the collectives the fit loop and the distillation statistics need; rank 0 alone writes outputs.

Without an initialised process group every helper here is the one-process identity, so the same code runs
unchanged in a single process.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import tempfile
import uuid
from functools import partialmethod

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ladeda.core.errors import LadedaError

LADEDA_ERROR_EXIT = 2  # run_cli's exit status for a LadedaError, which rank 0 has already printed in one line


def launched_world() -> int:
    """How many processes `torchrun` (or our own relaunch) started, 1 when this process was started alone."""
    if "LOCAL_RANK" not in os.environ:
        return 1
    try:
        return int(os.environ["WORLD_SIZE"])
    except (KeyError, ValueError):
        raise LadedaError("LOCAL_RANK is set but WORLD_SIZE is not a number: start the stage with torchrun, or "
                          "unset LOCAL_RANK") from None


def relaunch(nproc: int) -> None:
    """Run this script as `nproc` local worker processes (c10d rendezvous on a free localhost port, no restarts)
    and exit with their status: 0 when all succeeded; a worker's LadedaError was printed by rank 0 and exits 2;
    any other failure is one line naming the rank and its exit status (its traceback is above)."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # failures get our one line instead
    print(f"runtime.nproc={nproc}: starting {nproc} training processes (torch.distributed.elastic)", flush=True)
    # the launcher's per-run folder (workers' error files) goes in a folder removed afterwards, not left in /tmp
    with tempfile.TemporaryDirectory(prefix="ladeda-elastic-") as log_dir:
        config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
                              rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                              logs_specs=DefaultLogsSpecs(log_dir=log_dir))
        try:
            elastic_launch(config, sys.executable)("-u", *sys.argv)
        except ChildFailedError as err:
            rank, failure = err.get_first_failure()
            if failure.exitcode == LADEDA_ERROR_EXIT:
                raise SystemExit(LADEDA_ERROR_EXIT) from None
            raise LadedaError(f"training process rank {rank} of {nproc} failed with exit status {failure.exitcode} "
                              "(its messages are above)") from None
    raise SystemExit(0)


def init_worker(nproc: int, device: torch.device) -> tuple[int, int, int, torch.device]:
    """Join the process group of a launched worker; return (rank, world size, local world size, device).

    The world size must be `runtime.nproc` (it changes results, so it is a DVC param). GPUs: one per local
    rank (NCCL); CPU: gloo. Ranks above 0 print nothing and show no progress bars; their errors still reach stderr.
    """
    world = launched_world()
    if world != nproc:
        raise LadedaError(f"runtime.nproc is {nproc} but {world} processes were started (torchrun --nnodes x "
                          f"--nproc-per-node); set runtime.nproc: {world} in params.yaml so DVC records it")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if device.type == "cuda":
        if device.index is not None:
            raise LadedaError(f"runtime.device {device} with runtime.nproc {nproc}: each process takes the GPU of "
                              "its local rank; use device: cuda (or auto)")
        if local_rank >= torch.cuda.device_count():
            raise LadedaError(f"process {local_rank} on this node has no GPU of its own (torch sees "
                              f"{torch.cuda.device_count()}): lower runtime.nproc / --nproc-per-node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_destroy)
    if rank > 0:
        sys.stdout = open(os.devnull, "w")
        from tqdm import tqdm  # the class every module's `from tqdm import tqdm` holds
        tqdm.__init__ = partialmethod(tqdm.__init__, disable=True)
    return rank, world, local_world, device


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    """Processes in the group (1 without one)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without a group)."""
    return dist.get_rank() if dist.is_initialized() else 0


def _device() -> torch.device:
    """Where collective tensors must live for the group's backend (NCCL: this process's GPU)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_objects(obj) -> list:
    """Every rank's `obj`, in rank order, on every rank (picklable objects; [obj] in one process)."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce(values: list[float], op: str = "sum") -> list[float]:
    """Element-wise sum (or max) of a list of floats over the ranks, in float64 (the list itself in one process)."""
    if world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_device())
    dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return t.cpu().tolist()


def broadcast_buffers(module: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm statistics, EMA counts) to every rank, so all ranks hold one model.

    DDP keeps parameters equal; buffers are updated by each rank's own batches and drift apart.
    """
    if world_size() == 1:
        return
    for b in module.buffers():
        dist.broadcast(b, 0)


class _Dispatch(nn.Module):
    """`forward(x, method)` calls `module.method(x)`, so a patch-map call goes through DDP's forward too."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, method: str = "forward") -> torch.Tensor:
        return self.module(x) if method == "forward" else getattr(self.module, method)(x)


class DataParallelModel(nn.Module):
    """What a training step sees under several processes: `model(x)` and `model.patch_map(x)` both run through
    DistributedDataParallel, which averages the gradients over the ranks on backward.

    Buffers are not broadcast every step (`broadcast_buffers` at the end of an epoch makes the ranks agree).
    """

    def __init__(self, model: nn.Module, device: torch.device):
        super().__init__()
        ids = [device.index] if device.type == "cuda" else None
        self.ddp = DistributedDataParallel(_Dispatch(model), device_ids=ids, broadcast_buffers=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ddp(x)

    def patch_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.ddp(x, "patch_map")
