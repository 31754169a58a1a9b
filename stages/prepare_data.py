"""Stage prepare_data: build the embedded default dataset (source + target domains) and a sample grid.

Reads params `prepare_data.*`; writes `data/default/{source,target}/...`, `data/default/manifest.json`,
`plots/data/samples.png` and `metrics/prepare_data.json`.
"""

from __future__ import annotations

import argparse

from ladeda.core.errors import run_cli
from ladeda.core.files import write_json
from ladeda.core.outputs import metrics_path, write_timings
from ladeda.core.params import load_params
from ladeda.data.folders import discover
from ladeda.embedded.dataset import generate_default
from ladeda.embedded.grid import grid_rows, save_sample_grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="data/default", help="dataset folder (replaced atomically)")
    ap.add_argument("--grid", default="plots/data/samples.png")
    ap.add_argument("--metrics", default=str(metrics_path("prepare_data")))
    args = ap.parse_args()
    p = load_params(args.params).prepare_data
    result = generate_default(args.out, seed=p.seed, image_size=p.image_size,
                              source_counts=p.source.model_dump(), target_counts=p.target.model_dump())
    rows = grid_rows(discover(f"{args.out}/source", "test"), "source")
    rows += grid_rows(discover(f"{args.out}/target", "test"), "target")
    save_sample_grid(rows, args.grid)
    seconds = result.pop("seconds")
    write_json(args.metrics, result)
    write_timings("prepare_data", {"seconds": seconds})
    print(f"prepare_data: {result['images']} images in {args.out} ({seconds} s); grid {args.grid}")


if __name__ == "__main__":
    run_cli(main)
