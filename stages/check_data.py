"""Stage check_data: validate whatever `data.root` holds and stop the pipeline on broken data.

Reads params `data.root`, `data.max_unreadable_fraction`, `data.crop_size`, `data.load_size`, `teacher.arch`,
`teacher.preprocess` (the smallest test image the teacher scores at full size; none when `data.load_size` resizes
every image); writes `metrics/check_data.json` (also when the check fails, so the problems can be read) and exits
with status 2 on a blocking problem. Files are read by one process per CPU on large datasets (the automatic
`workers` of `analyze_dataset`); the report does not depend on how many.
"""

from __future__ import annotations

import argparse
import sys

from ladeda.core.errors import run_cli
from ladeda.core.files import write_json
from ladeda.core.outputs import metrics_path
from ladeda.core.params import load_params
from ladeda.data.check import analyze_dataset, raise_on_blocking
from ladeda.models.geometry import min_image_side


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default=str(metrics_path("check_data")))
    args = ap.parse_args()
    p = load_params(args.params)
    d = p.data
    min_side = min_image_side(p.teacher.arch, p.teacher.preprocess) if d.load_size is None else None
    report = analyze_dataset(d.root, max_unreadable_fraction=d.max_unreadable_fraction, crop_size=d.crop_size,
                             min_side=min_side, workers=None)  # None: automatic (a pool on large datasets)
    write_json(args.out, report)
    for split, info in report["splits"].items():
        if info.get("present"):
            c = info["classes"]
            print(f"check_data: {split}: {info['images']} images ({c['real']} real, {c['fake']} fake)")
    for w in report["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    raise_on_blocking(report, args.out)
    print(f"check_data: {d.root} ok ({report['totals']['images']} images); report {args.out}")


if __name__ == "__main__":
    run_cli(main)
