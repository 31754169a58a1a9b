"""Inference benchmark: images/s and latency of LaDeDa9 (width 64) and Tiny-LaDeDa, eager vs fast path.

Not a test: run it on an otherwise idle machine and paste the printed Markdown into the README.

    .venv/bin/python benchmarks/inference.py                  # 256x256, batch 1 and 32, all CPUs
    .venv/bin/python benchmarks/inference.py --threads 2 --profile   # + where the fast path spends its time

Modes: `eager` = the plain model on a plain NCHW batch; `channels-last` = the plain model with weights
and input converted to channels-last (the only change the reference measurement made); `fast path`
= `ladeda.models.fastpath.optimize_for_inference` (folded stem and BatchNorms, channels-last, cache-sized
micro-batches/tiles). Random weights: speed does not depend on the values. Each number is the median
of 7 timed runs after 2 warm-up runs (LaDeDa9: 3 after 1) (`ladeda.evaluation.efficiency.measure_throughput`);
"images per CPU-second" divides by the process's CPU time instead of wall time. FLOPs count a
multiply-add as 2 (torch's FlopCounterMode). The 1-minute load average is printed before and after:
other processes on the same cores make every number lower.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time

import torch
from torch import nn

from ladeda.evaluation.efficiency import count_parameters, cpu_model, flops_per_image, load_average, measure_throughput
from ladeda.core.runtime import configure_threads, idle_cpus
from ladeda.models.fastpath import optimize_for_inference
from ladeda.core.files import write_json
from ladeda.models import LaDeDa9, TinyLaDeDa

GOALS = {"TinyLaDeDa": 400.0, "LaDeDa9": 2.5}  # img/s with the fast path on 2 cores, 256x256, batch 32


class ChannelsLast(nn.Module):
    """The plain model with channels-last weights, converting its input (nothing else changed)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model).to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last))


def profile_fast_path(model: nn.Module, size: int, batch: int, top: int = 12) -> str:
    """Self CPU time per op of one fast-path batch (what bounds the speed)."""
    fast = optimize_for_inference(model)
    x = torch.randn(batch, 3, size, size)
    with torch.inference_mode():
        fast(x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            fast(x)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--archs", nargs="+", default=["TinyLaDeDa", "LaDeDa9"], choices=["TinyLaDeDa", "LaDeDa9"])
    parser.add_argument("--width", type=int, default=64, help="LaDeDa9 width (official: 64)")
    parser.add_argument("--threads", type=int, help="torch threads (default: every CPU this process may use)")
    parser.add_argument("--modes", nargs="+", default=["eager", "channels-last", "fast path"],
                        choices=["eager", "channels-last", "fast path"])
    parser.add_argument("--profile", action="store_true", help="also profile the fast path at the largest batch")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    threads = configure_threads(args.threads or len(os.sched_getaffinity(0)))
    load_before, idle_before = load_average(), idle_cpus(1.0)
    builders = {"TinyLaDeDa": lambda: TinyLaDeDa("right_diag"), "LaDeDa9": lambda: LaDeDa9("NPR", width=args.width)}
    rows, flops = [], {}
    started = time.time()
    for arch in args.archs:
        torch.manual_seed(0)
        model = builders[arch]().eval()
        fast = optimize_for_inference(model)
        flops[arch] = {"params": count_parameters(model), "flops": flops_per_image(model, args.size, args.size),
                       "flops_fast": flops_per_image(fast, args.size, args.size)}
        variants = {"eager": model, "channels-last": ChannelsLast(model), "fast path": fast}
        heavy = arch == "LaDeDa9"
        for batch in args.batch_sizes:
            for mode in args.modes:
                r = measure_throughput(variants[mode], args.size, args.size, batch_size=batch,
                                       repeats=3 if heavy else 7, warmup=1 if heavy else 2, cpu_time=True)
                rows.append({"model": arch, "batch": batch, "mode": mode, **r})
                print(f"{arch:10s} batch {batch:3d} {mode:13s} {r['images_per_s']:9.1f} img/s "
                      f"{r['latency_ms_per_batch']:10.1f} ms/batch", file=sys.stderr, flush=True)
    load_after, idle_after = load_average(), idle_cpus(1.0)

    lines = [
        f"Machine: {cpu_model()}, {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
        f"torch {torch.__version__}, {threads} torch thread{'s' if threads > 1 else ''}, "
        f"Python {platform.python_version()}; {args.size}x{args.size} input; load average (1/5/15 min) "
        f"{load_before} before, {load_after} after; idle CPUs (1 s sample) {idle_before} before, "
        f"{idle_after} after; {time.time() - started:.0f} s.",
        "",
        "| model | batch | mode | images/s | latency ms/batch | latency ms/image | images per CPU-second |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch']} | {r['mode']} | {r['images_per_s']:.1f} | "
                     f"{r['latency_ms_per_batch']:.1f} | {r['latency_ms_per_image']:.2f} | "
                     f"{r['images_per_cpu_s']:.1f} |")
    lines += ["", "| model | parameters | GFLOPs/image (plain) | GFLOPs/image (fast path) |", "|---|---:|---:|---:|"]
    for arch, f in flops.items():
        lines.append(f"| {arch} | {f['params']:,} | {f['flops'] / 1e9:.3f} | {f['flops_fast'] / 1e9:.3f} |")
    if {"TinyLaDeDa", "LaDeDa9"} <= set(flops):
        ratio = flops["LaDeDa9"]["flops"] / flops["TinyLaDeDa"]["flops"]
        ratio_fast = flops["LaDeDa9"]["flops_fast"] / flops["TinyLaDeDa"]["flops_fast"]
        lines.append("")
        lines.append(f"FLOPs ratio LaDeDa9 / Tiny-LaDeDa at {args.size}x{args.size}: {ratio:.0f}x (plain models), "
                     f"{ratio_fast:.0f}x (fast paths); parameters {flops['LaDeDa9']['params'] / 1297:,.0f}x.")
    if min(idle_before, idle_after) < threads:
        lines += ["", f"Warning: other processes kept {len(os.sched_getaffinity(0)) - min(idle_before, idle_after)} "
                      f"of the CPUs busy around this run: wall-time numbers with {threads} threads are lower than "
                      f"on an idle machine (see ladeda.core.runtime.configure_threads); images per CPU-second are less affected."]
    goal_lines = []
    for r in rows:
        goal = GOALS.get(r["model"])
        if goal and r["mode"] == "fast path" and r["batch"] == 32 and args.size == 256:
            verdict = "met" if r["images_per_s"] >= goal else "NOT met"
            goal_lines.append(f"Goal {r['model']} >= {goal:g} img/s (fast path, batch 32): {verdict} "
                              f"({r['images_per_s']:.1f} img/s).")
    if goal_lines:
        lines += [""] + goal_lines
    print("\n".join(lines))
    if args.profile:
        for arch in args.archs:
            print(f"\nfast path profile, {arch}, batch {max(args.batch_sizes)}:\n")
            print(profile_fast_path(builders[arch]().eval(), args.size, max(args.batch_sizes)))
    result = {"rows": rows, "flops": flops, "threads": threads, "cpu": cpu_model(), "torch": torch.__version__,
              "load_before": load_before, "load_after": load_after, "idle_cpus": [idle_before, idle_after]}
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
