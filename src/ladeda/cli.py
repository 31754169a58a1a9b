"""The `ladeda` console script: `ladeda predict ...` (score images) and `ladeda export ...` (ONNX/TorchScript)."""

from __future__ import annotations

import argparse
from typing import Sequence

from ladeda import __version__, export, predict
from ladeda.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ladeda", description="LaDeDa / Tiny-LaDeDa detectors of generated images.")
    parser.add_argument("--version", action="version", version=f"ladeda {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{predict,export}")
    p = sub.add_parser("predict", help="score images (file, folder, glob): CSV, metrics, optional heatmaps",
                       description="Score images as real or generated; write a CSV and optional patch heatmaps.")
    predict.add_arguments(p)
    p.set_defaults(run=predict.run)
    e = sub.add_parser("export", help="export a checkpoint to ONNX or TorchScript",
                       description="Export a checkpoint (image logit + patch map outputs, dynamic sizes).")
    export.add_arguments(e)
    e.set_defaults(run=export.run)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `ladeda` console script."""
    args = build_parser().parse_args(argv)
    run_cli(lambda: args.run(args))


if __name__ == "__main__":
    main()
