"""The `ladeda` console script: `ladeda predict ...` (score images) and `ladeda export ...` (ONNX/TorchScript).

All command-line parsing of the inference tools lives here; `ladeda.inference.predict` and
`ladeda.inference.export` are plain libraries. `python -m ladeda.inference.cli predict ...` is the same
as `ladeda predict ...`.
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path
from typing import Sequence

from ladeda import __version__
from ladeda.core.errors import run_cli
from ladeda.inference import export, predict
from ladeda.models import ARCHS, PREPROCESS_NAMES
from ladeda.models.checkpoints import load_model


def number(text: str) -> float:
    """An argparse type accepting decimals or fractions (`--npr-scale 2/3`), as papers quote NPR scales."""
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number such as 0.5 or 2/3") from None


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The checkpoint options both commands share (`--weights`, and `--arch` etc. for official files)."""
    parser.add_argument("--weights", required=True, help="checkpoint: ours (self-describing) or an official state dict")
    parser.add_argument("--arch", choices=sorted(ARCHS), help="for official files: the model class")
    parser.add_argument("--preprocess", choices=PREPROCESS_NAMES, help="for official files: the input filter")
    parser.add_argument("--npr-scale", type=number, help="for official files: NPR scale (2/3 for ForenSynth LaDeDa)")


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """The `ladeda predict` options."""
    add_model_arguments(parser)
    parser.add_argument("--input", required=True, nargs="+", metavar="FILE|DIR|GLOB",
                        help="image files, folders (recursive) or quoted globs")
    parser.add_argument("--out", required=True, help="CSV to write (path, fake_probability, logit, prediction, "
                                                     "height, width, model)")
    parser.add_argument("--heatmaps", metavar="DIR", help="also write a patch heatmap PNG per image under DIR")
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch (same-size images; default 32)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CUDA when torch sees a GPU, else CPU")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="fake when the fake probability is above this (default 0.5)")
    parser.add_argument("--resize", type=int, metavar="N",
                        help="resize every image to NxN first (off by default: resizing alters the pixel "
                             "traces the detector looks at)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: the CPUs not busy with other work)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_predict(args: argparse.Namespace) -> predict.Summary:
    """Run `ladeda predict` from parsed arguments."""
    return predict.predict(args.weights, args.input, args.out, arch=args.arch, preprocess=args.preprocess,
                           npr_scale=args.npr_scale, heatmaps=args.heatmaps, batch_size=args.batch_size,
                           device=args.device, threshold=args.threshold, resize=args.resize, threads=args.threads,
                           progress=not args.no_progress)


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """The `ladeda export` options."""
    add_model_arguments(parser)
    parser.add_argument("--format", required=True, choices=export.FORMATS, help="onnx or torchscript")
    parser.add_argument("--out", required=True, help="file to write (e.g. student.onnx, student.pt)")


def run_export(args: argparse.Namespace) -> Path:
    """Run `ladeda export` from parsed arguments: load the checkpoint, export it, print one line."""
    model = load_model(args.weights, arch=args.arch, preprocess=args.preprocess, npr_scale=args.npr_scale)
    out = export.export_model(model, args.out, args.format)
    meta = export.export_metadata(model)
    print(f"exported {meta['arch']} ({meta['preprocess']}) from {args.weights} as {args.format} to {out}: "
          f"inputs 'image' (B, 3, H, W), outputs 'logit' (B,) and 'patch_map' (B, 1, h, w)")
    return out


def build_parser(prog: str = "ladeda") -> argparse.ArgumentParser:
    """The `ladeda` parser with its `predict` and `export` subcommands."""
    parser = argparse.ArgumentParser(prog=prog, description="LaDeDa / Tiny-LaDeDa detectors of generated images.")
    parser.add_argument("--version", action="version", version=f"ladeda {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{predict,export}")
    p = sub.add_parser("predict", help="score images (file, folder, glob): CSV, metrics, optional heatmaps",
                       description="Score images as real or generated with a LaDeDa / Tiny-LaDeDa checkpoint; "
                                   "write a CSV and optional patch heatmaps.")
    add_predict_arguments(p)
    p.set_defaults(run=run_predict)
    e = sub.add_parser("export", help="export a checkpoint to ONNX or TorchScript",
                       description="Export a checkpoint (image logit + patch map outputs, dynamic sizes).")
    add_export_arguments(e)
    e.set_defaults(run=run_export)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `ladeda` console script (and `python -m ladeda.inference.cli`)."""
    args = build_parser().parse_args(argv)
    run_cli(lambda: args.run(args))


if __name__ == "__main__":
    main()
