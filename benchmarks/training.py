"""Training throughput (images/s) of the two steps the pipeline spends its time in, per device, precision and threads.

- teacher: one fine-tuning step of LaDeDa9 width 64 (the official checkpoints' size) on 224x224 crops, the
  last three residual stages and the head trainable (`finetune.unfreeze_blocks: 3`);
- student: one Tiny-LaDeDa distillation step (BCE + standardized MSE to the frozen teacher's patch map),
  teacher inference included, on 224x224 crops.

Each step is the library's own (`training.fit.bce_step`, `distillation.loss.make_distill_step`) under
`Runtime.autocast` with its GradScaler, timed after warm-up steps. CPU rows for fp32 and bf16 with 1 and 2
threads; CUDA rows (fp32, bf16, fp16) when torch sees a GPU. Not a test: run it on the machine you care about.

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


def throughput(kind: str, rt: Runtime, batch: int, size: int, steps: int, warmup: int) -> float:
    """Images per second of `steps` optimiser steps of `kind` (teacher | student) after `warmup` steps."""
    torch.manual_seed(0)
    teacher = LaDeDa9(preprocess="NPR", width=64).to(rt.device)
    if kind == "teacher":
        model = teacher
        train_mode = freeze_for_finetuning(model, 3)
        step_fn = bce_step
    else:
        model = TinyLaDeDa("right_diag").to(rt.device)
        train_mode = torch.nn.Module.train
        step_fn = make_distill_step(teacher, 0.5, 0.5, target="standardized", scale=1.0)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-4)
    scaler = rt.grad_scaler()
    x = torch.randn(batch, 3, size, size, device=rt.device)
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
    args = ap.parse_args()
    rows = [(torch.device("cpu"), precision, threads) for precision in ("fp32", "bf16") for threads in args.threads]
    if torch.cuda.is_available():
        rows += [(torch.device("cuda"), precision, 1) for precision in ("fp32", "bf16", "fp16")]
    print(f"machine: {machine_description()}; torch {torch.__version__}; {args.size}x{args.size} crops")
    if not torch.cuda.is_available():
        print("no CUDA GPU here: CPU rows only")
    print("| device | precision | threads | LaDeDa9 w64 fine-tuning img/s | Tiny-LaDeDa distillation img/s |")
    print("| --- | --- | --- | --- | --- |")
    for device, precision, threads in rows:
        torch.set_num_threads(threads)
        rt = Runtime(device, precision, 0, threads)
        teacher = throughput("teacher", rt, args.batch_teacher, args.size, args.steps, args.warmup)
        student = throughput("student", rt, args.batch_student, args.size, args.steps, args.warmup)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(f"| {name} | {precision} | {threads if device.type == 'cpu' else '-'} | {teacher:.2f} | "
              f"{student:.1f} |", flush=True)


if __name__ == "__main__":
    main()
