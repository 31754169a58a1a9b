"""Process settings every stage shares: random seeds, the device, CPU threads and glibc's allocator."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import random
import time
from dataclasses import dataclass

import numpy as np
import torch

from ladeda.core import cpu_claims, distributed
from ladeda.core.errors import LadedaError
from ladeda.core.text import counted

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
THRESHOLD = 1 << 30  # 1 GiB: activations of a CPU-sized batch stay on the heap and are reused


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds (as MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ would).

    Large tensors are otherwise mmapped and unmapped on every step, and the page faults that follow
    cost a large share of CPU training time. Returns False (and changes nothing) off glibc.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, THRESHOLD))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """`auto` -> CUDA when available else CPU; asking for CUDA without one is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LadedaError(f"device {name}: torch sees no CUDA GPU here; use cpu (or auto)")
    return torch.device(name)


def configure_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op threads and return the number used.

    Default: `auto_threads()`, the cores neither other processes nor other ladeda runs are using;
    `OMP_NUM_THREADS` or `num_threads` override it. Why not simply all CPUs: torch's OpenMP threads
    wait for each other at every op, so one thread that has to share its core stalls them all.
    Measured on 2 cores while two other processes kept both busy: a LaDeDa9 (width 8) forward on
    3 images of 64x64 took 3.4 s with 2 threads and 0.01 s with 1. Inter-op threads are set to 1
    (inference runs one op at a time); torch allows that only before any parallel work, so it is
    skipped silently when too late.
    """
    if num_threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        num_threads = int(env) if env.isdigit() and int(env) > 0 else auto_threads()
    num_threads = max(1, int(num_threads))
    torch.set_num_threads(num_threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    return num_threads


def auto_threads(processes: int = 1) -> int:
    """Threads for each of `processes` processes of one run on this machine (DDP ranks; 1 otherwise).

    The idle cores (`idle_cpus`) split between the processes, and never more than this run's share of
    the CPUs among all ladeda runs computing now (`cpu_claims`): two runs started at the same moment
    both find the cores idle, and only the claims tell each to take half. This process claims first.
    """
    cpu_claims.claim()
    cpus = len(usable_cpus())
    runs = max(processes, cpu_claims.active_claims())
    return max(1, min(idle_cpus() // processes, cpus // runs))


def idle_cpus(sample_s: float = 0.2) -> int:
    """CPUs this process may use that other processes are not keeping busy (at least 1).

    Busy time of those CPUs is sampled from /proc/stat over `sample_s` seconds (instantaneous,
    unlike the load average, which still counts a run that just ended for minutes); where there is
    no /proc/stat the 1-minute load average stands in.
    """
    cpus = usable_cpus()
    before = _cpu_times(cpus)
    if before is not None:
        time.sleep(sample_s)
        after = _cpu_times(cpus)
    if before is not None and after is not None:
        busy = 0.0
        for (busy0, total0), (busy1, total1) in zip(before, after):
            busy += (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0
    else:
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):
            busy = 0.0
    return max(1, min(len(cpus), int(len(cpus) - busy + 0.5)))


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask; every CPU where there is none, e.g. not Linux)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def _cpu_times(cpus: list[int]) -> list[tuple[int, int]] | None:
    """(busy, total) clock ticks of each CPU in `cpus` from /proc/stat, or None where unavailable."""
    try:
        with open("/proc/stat") as f:
            rows = (line.split() for line in f)
            lines = {parts[0]: parts[1:] for parts in rows if parts and parts[0].startswith("cpu")}
        out = []
        for cpu in cpus:
            ticks = [int(v) for v in lines[f"cpu{cpu}"][:8]]  # user nice system idle iowait irq softirq steal
            out.append((sum(ticks) - ticks[3] - ticks[4], sum(ticks)))
        return out
    except (OSError, KeyError, ValueError, IndexError):
        return None


GPU_WORKERS = 8  # DataLoader workers with a GPU (capped at the CPUs this process may use): decoding feeds it


@dataclass(frozen=True)
class Runtime:
    """Resolved `runtime` params: where tensors live, the autocast dtype, loader workers and CPU threads."""

    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    num_workers: int
    threads: int
    auto_threads: bool = False  # `threads: auto`: re-checked by `retune_threads` (e.g. every epoch)
    rank: int = 0  # data-parallel training (`runtime.nproc` > 1): this process's rank among `world_size`
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0, the process that writes logs, checkpoints, resume state and metrics."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None for fp32."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    @property
    def memory_format(self) -> torch.memory_format:
        """How training lays out images, activations and conv weights: channels-last on the CPU, where oneDNN
        trains both models faster that way (README, Decisions); torch's default layout elsewhere."""
        return torch.channels_last if self.device.type == "cpu" else torch.contiguous_format

    def autocast(self):
        """Mixed-precision context for forward passes (a no-op at fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling for fp16 (its small range underflows gradients); disabled, a pass-through, otherwise."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def retune_threads(self) -> int:
        """With `threads: auto`, set the thread count to `auto_threads()` now; return the count in use.

        Re-checked every epoch, a run takes the cores another run has left since (or gives up what a run
        that started since claims), and follows other jobs' load (measured: see README, Hardware).
        """
        if not self.auto_threads or self.device.type != "cpu":
            return torch.get_num_threads()
        return configure_threads()

    def share_threads(self) -> None:
        """With `threads: auto`, drop at once to this run's share of the CPUs when more ladeda runs compute now
        than the thread count allows for (cheap: the claims only, no load sampling; called every step and batch).

        A run that started with every core would otherwise stall a run started just after it until its next
        epoch; taking cores back is left to `retune_threads`, which samples the load.
        """
        if not self.auto_threads or self.device.type != "cpu":
            return
        share = max(1, len(usable_cpus()) // max(1, cpu_claims.active_claims()))
        if share < torch.get_num_threads():
            torch.set_num_threads(share)

    def loader_options(self) -> dict:
        """DataLoader keywords: workers (kept alive across epochs), pinned memory for copies to a GPU, and under
        several processes this rank's `shard` (rank, world size) of every pass (see `data.loaders.ShardedBatches`)."""
        options = {"num_workers": self.num_workers, "pin_memory": self.device.type == "cuda"}
        if self.distributed:
            options["shard"] = (self.rank, self.world_size)
        return options


CPU = Runtime(torch.device("cpu"), "fp32", 0, 1)  # what library functions assume when not told otherwise


def setup_runtime(section, data_parallel: bool = False) -> Runtime:
    """Resolve a `runtime` params section and apply its thread count to this process (see configure_threads).

    Training stages pass `data_parallel`: with `runtime.nproc` > 1 the stage relaunches itself as that many
    processes and this call returns in each of them with its rank (`core.distributed`); under an outer
    `torchrun` (multi-node) it joins those processes. There, `auto` threads and loader workers are this node's
    share per process, fixed for the run. Other stages run in one process and refuse to run under torchrun.
    """
    nproc = section.nproc
    started = distributed.launched_world()
    if not data_parallel and started > 1:
        raise LadedaError("this stage runs in one process (only the training stages use runtime.nproc); run it "
                          "without torchrun")
    if data_parallel and nproc > 1 and "LOCAL_RANK" not in os.environ:
        distributed.relaunch(nproc)  # exits when the workers are done
    device = resolve_device(section.device)
    rank, world, local_world = 0, 1, 1
    if data_parallel and (nproc > 1 or started > 1):
        rank, world, local_world, device = distributed.init_worker(nproc, device)
    precision = resolve_precision(section.precision, device)
    workers = section.num_workers
    if workers == "auto":
        workers = max(1, min(GPU_WORKERS, len(usable_cpus()) // local_world)) if device.type == "cuda" else 0
    threads = section.threads
    if threads == "auto" and world > 1:
        threads = None if os.environ.get("OMP_NUM_THREADS") else auto_threads(local_world)
    threads = configure_threads(None if threads == "auto" else threads)
    rt = Runtime(device, precision, int(workers), threads, auto_threads=section.threads == "auto" and world == 1,
                 rank=rank, world_size=world)
    where = f" (rank {rank} of {world})" if world > 1 else ""
    print(f"runtime{where}: {device}, {precision}, {counted(rt.num_workers, 'loader worker')}, "
          f"{counted(threads, 'CPU thread')}")
    return rt


def resolve_precision(name: str, device: torch.device) -> str:
    """`auto`: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on the CPU; fp16 on the CPU is refused."""
    if name == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if name == "fp16" and device.type != "cuda":
        raise LadedaError("runtime.precision=fp16 needs a CUDA device (fp16 needs loss scaling, which torch "
                          "supports on GPUs); use fp32 or bf16 on the CPU")
    return name
