"""Model efficiency: parameter count, FLOPs per image and measured CPU throughput/latency.

Used by `evaluate_student` (teacher vs student side by side) and `benchmarks/inference.py`.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from ladeda.core.text import counted


def _onednn_conv_flop(x_shape, w_shape, bias, padding, stride, dilation, groups, *, out_shape=None, **_) -> int:
    """FLOPs of `aten.mkldnn_convolution`, which the fast path calls directly (FlopCounterMode has no formula)."""
    return conv_flop_count(list(x_shape), list(w_shape), list(out_shape))


CUSTOM_FLOPS = {torch.ops.aten.mkldnn_convolution: _onednn_conv_flop}


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (weights and biases; BatchNorm running statistics are buffers, not counted)."""
    return int(sum(p.numel() for p in model.parameters()))


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily put `model` in eval mode (BatchNorm must not update its statistics while measuring)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _device_of(model: nn.Module) -> torch.device:
    for tensor in [*model.parameters(), *model.buffers()]:
        return tensor.device
    return torch.device("cpu")


def flops_per_image(model: nn.Module, height: int, width: int) -> int:
    """FLOPs of one forward pass (image logit) on a (1, 3, height, width) input.

    Counted by `torch.utils.flop_counter.FlopCounterMode`, which counts convolutions and matrix
    products only, with a multiply-add as 2 FLOPs (so a 1x1 conv C->K on P pixels is 2*C*K*P);
    element-wise work (BatchNorm, ReLU, the NPR subtraction, the mean) is not counted. The oneDNN
    convolutions of `ladeda.models.fastpath` are counted the same way. Works on the `meta` device (shapes only).
    """
    x = torch.randn(1, 3, height, width, device=_device_of(model))
    counter = FlopCounterMode(display=False, custom_mapping=CUSTOM_FLOPS)
    with _eval_mode(model), torch.no_grad(), counter:
        model(x)
    return int(counter.get_total_flops())


def measure_throughput(model: nn.Module, height: int, width: int, batch_size: int = 32, repeats: int = 5,
                       warmup: int = 2, cpu_time: bool = False) -> dict[str, float]:
    """Measured CPU speed of `model(x)` on a random (batch_size, 3, height, width) NCHW batch.

    Runs `warmup` untimed and `repeats` timed forward passes under `torch.inference_mode` in eval mode
    with the current torch thread setting, and reports the median: `images_per_s`,
    `latency_ms_per_batch` and `latency_ms_per_image` (batch latency / batch size). The input is a
    plain contiguous tensor, so any layout conversion a model does is part of what is timed.
    With `cpu_time`, also `images_per_cpu_s`: images per second of this process's CPU time (all
    threads), which other processes competing for the cores affect much less than wall time.
    """
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError("batch_size and repeats must be >= 1 and warmup >= 0")
    if _device_of(model).type != "cpu":
        raise ValueError("measure_throughput times CPU inference: move the model to the CPU first")
    x = torch.randn(batch_size, 3, height, width)
    times, cpu_times = [], []
    with _eval_mode(model), torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            model(x)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - start_cpu)
    batch_s = statistics.median(times)
    out = {
        "images_per_s": batch_size / batch_s,
        "latency_ms_per_batch": 1000.0 * batch_s,
        "latency_ms_per_image": 1000.0 * batch_s / batch_size,
    }
    if cpu_time:
        out["images_per_cpu_s"] = batch_size / max(statistics.median(cpu_times), 1e-9)
    return out


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name, with its family and model numbers where /proc/cpuinfo has them (Linux).

    A VM's name alone ("AMD EPYC") does not tell CPU generations apart, and their speeds differ twofold.
    """
    cpu = platform.processor() or platform.machine()
    try:
        with open(cpuinfo) as f:
            fields: dict[str, str] = {}
            for line in f:
                if not line.strip():
                    break  # the first CPU's block
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return cpu
    cpu = fields.get("model name", cpu)
    if "cpu family" in fields and "model" in fields:
        cpu += f" (family {fields['cpu family']}, model {fields['model']})"
    return cpu


def load_average() -> str:
    """The 1/5/15-minute load averages ("n/a" where the OS has none): other work on the cores slows a timing."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def machine_description() -> str:
    """CPU model, core count, torch version and threads: what a measured speed belongs to."""
    return (f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__.split('+')[0]}, "
            f"{counted(torch.get_num_threads(), 'thread')}")
