"""Model efficiency: parameter count, FLOPs per image and measured CPU throughput/latency.

Used by `evaluate_student` (teacher vs student side by side) and `benchmarks/inference.py`.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


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
    element-wise work (BatchNorm, ReLU, the NPR subtraction, the mean) is not counted.
    """
    x = torch.randn(1, 3, height, width, device=_device_of(model))
    counter = FlopCounterMode(display=False)
    with _eval_mode(model), torch.no_grad(), counter:
        model(x)
    return int(counter.get_total_flops())


def measure_throughput(model: nn.Module, height: int, width: int, batch_size: int = 32, repeats: int = 5,
                       warmup: int = 2) -> dict[str, float]:
    """Measured CPU speed of `model(x)` on a random (batch_size, 3, height, width) NCHW batch.

    Runs `warmup` untimed and `repeats` timed forward passes under `torch.inference_mode` in eval mode
    with the current torch thread setting, and reports the median: `images_per_s`,
    `latency_ms_per_batch` and `latency_ms_per_image` (batch latency / batch size). The input is a
    plain contiguous tensor, so any layout conversion a model does is part of what is timed.
    """
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError("batch_size and repeats must be >= 1 and warmup >= 0")
    if _device_of(model).type != "cpu":
        raise ValueError("measure_throughput times CPU inference: move the model to the CPU first")
    x = torch.randn(batch_size, 3, height, width)
    times = []
    with _eval_mode(model), torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    batch_s = statistics.median(times)
    return {
        "images_per_s": batch_size / batch_s,
        "latency_ms_per_batch": 1000.0 * batch_s,
        "latency_ms_per_image": 1000.0 * batch_s / batch_size,
    }
