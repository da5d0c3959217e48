"""`hwnas fit-latency`: few-shot latency predictor from whole-network measurements."""

from __future__ import annotations

import argparse

HELP = "learn latency from a few whole-network measurements (CSV) and score it on the rest"
DESCRIPTION = """\
Fit a latency predictor on TRAIN-SIZE random rows of a CSV of measured subnets (columns
r, d, ks, e and one latency column in ms), score it on every other row, and repeat over
random splits. Reports MAPE, share within +-10 %, Kendall tau, and the same for a FLOPs
least-squares reference.

example:
  hwnas fit-latency --csv ../shared/benchmarks/ofa_mbv3_gpu_latency.csv \\
      --target lat_ms_titan_xp_1 --train-size 100 --splits 3 --json
"""

# library field -> the flag that sets it
FLAGS = {"csv": "--csv", "target": "--target", "train_size": "--train-size", "splits": "--splits", "space": "--space"}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--csv", required=True, help="CSV with columns r, d, ks, e and latency columns")
    parser.add_argument("--target", required=True, help="latency column to learn (ms)")
    parser.add_argument("--train-size", type=int, required=True, help="rows used for fitting")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random splits (default 0)")
    parser.add_argument("--splits", type=int, default=3, help="random train/test splits averaged (default 3)")
    parser.add_argument("--space", default="mbv3", help="search space of the CSV's subnets (default mbv3)")
    parser.add_argument("--out", default=None, help="save the first split's model here (JSON)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file at --out")


def run(args: argparse.Namespace):
    from hwnas.pipeline import fit_latency

    return fit_latency(args.csv, args.target, args.train_size, seed=args.seed, splits=args.splits,
                       space=args.space, out=args.out, overwrite=args.overwrite)

