"""Training throughput (images/s) of the two steps the pipeline spends its time in, per device, precision and threads.

- teacher: one fine-tuning step of LaDeDa9 width 64 (the official checkpoints' size) on 224x224 crops, the
  last three residual stages and the head trainable (`finetune.unfreeze_blocks: 3`);
- student: one Tiny-LaDeDa distillation step (BCE + standardized MSE to the frozen teacher's patch map),
  teacher inference included, on 224x224 crops.

Each step is the library's own (`training.fit.bce_step`, `distillation.loss.make_distill_step`) under
`Runtime.autocast` with its GradScaler, in the layout `fit` trains in (`Runtime.memory_format`: channels-last
on the CPU), timed after warm-up steps. CPU rows for fp32 and bf16 with 1 and 2 threads; CUDA rows (fp32,
bf16, fp16) when torch sees a GPU. `--layouts contiguous channels_last` adds CPU rows in torch's default
layout for comparison; `--size 64 --teacher-width 16` measures the embedded default's shapes. Not a test:
run it on the machine you care about.

    python benchmarks/training.py [--steps 3] [--batch-teacher 8] [--batch-student 32] [--size 224]
"""

from __future__ import annotations

import argparse
import time

import torch

from ladeda.core.runtime import Runtime
from ladeda.distillation.loss import make_distill_step
from ladeda.evaluation.efficiency import machine_description
from ladeda.models import LaDeDa9, TinyLaDeDa
from ladeda.training.finetune import freeze_for_finetuning
from ladeda.training.fit import bce_step


LAYOUTS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def throughput(kind: str, rt: Runtime, batch: int, size: int, steps: int, warmup: int, width: int = 64,
               layout: torch.memory_format | None = None) -> float:
    """Images per second of `steps` optimiser steps of `kind` (teacher | student) after `warmup` steps, with
    images and weights in `layout` (default: the one `fit` uses on this device)."""
    layout = layout or rt.memory_format
    torch.manual_seed(0)
    teacher = LaDeDa9(preprocess="NPR", width=width).to(rt.device)
    if kind == "teacher":
        model = teacher
        train_mode = freeze_for_finetuning(model, 3)
        step_fn = bce_step
    else:
        model = TinyLaDeDa("right_diag").to(rt.device)
        train_mode = torch.nn.Module.train
        step_fn = make_distill_step(teacher, 0.5, 0.5, target="standardized", scale=1.0)
    model.to(memory_format=layout)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-4)
    scaler = rt.grad_scaler()
    x = torch.randn(batch, 3, size, size, device=rt.device).contiguous(memory_format=layout)
    y = torch.arange(batch, device=rt.device) % 2
    train_mode(model)
    for i in range(warmup + steps):
        if i == warmup:
            if rt.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with rt.autocast():
            loss, _ = step_fn(model, x, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    if rt.device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch-teacher", type=int, default=8)
    ap.add_argument("--batch-student", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--teacher-width", type=int, default=64)
    ap.add_argument("--layouts", nargs="+", choices=sorted(LAYOUTS), default=["channels_last"],
                    help="CPU memory layouts to time (fit trains channels-last on the CPU)")
    ap.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    args = ap.parse_args()
    rows = [(torch.device("cpu"), precision, threads, layout) for precision in args.precisions
            for threads in args.threads for layout in args.layouts]
    if torch.cuda.is_available():
        rows += [(torch.device("cuda"), precision, 1, None) for precision in ("fp32", "bf16", "fp16")]
    w = args.teacher_width
    print(f"machine: {machine_description()}; torch {torch.__version__}; {args.size}x{args.size} crops")
    if not torch.cuda.is_available():
        print("no CUDA GPU here: CPU rows only")
    print(f"| device | precision | threads | layout | LaDeDa9 w{w} fine-tuning img/s | "
          "Tiny-LaDeDa distillation img/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for device, precision, threads, layout in rows:
        torch.set_num_threads(threads)
        rt = Runtime(device, precision, 0, threads)
        fmt = LAYOUTS[layout] if layout else None
        teacher = throughput("teacher", rt, args.batch_teacher, args.size, args.steps, args.warmup, w, fmt)
        student = throughput("student", rt, args.batch_student, args.size, args.steps, args.warmup, w, fmt)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(f"| {name} | {precision} | {threads if device.type == 'cpu' else '-'} | {layout or 'default'} | "
              f"{teacher:.2f} | {student:.1f} |", flush=True)


if __name__ == "__main__":
    main()
