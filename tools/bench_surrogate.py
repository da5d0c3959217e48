"""How well the default strategy's GP surrogate ranks NAS-Bench-201 cells in the region a search scores.

For each (accuracy, latency) pair: `hwnas.search.tabular.surrogate_fit`, the GP fit on N cells (half
random, half from the region that beats the median in both objectives), Spearman correlation of its
predictions with the truth on the region's other cells, per objective; with and without the space's
surrogate views (the columns that say what a cell computes), and which view each objective chose.

    OMP_NUM_THREADS=1 python tools/bench_surrogate.py --n-train 300 --draws 4
    OMP_NUM_THREADS=1 python tools/bench_surrogate.py --latency lat_ms_raspi4 lat_ms_pixel3 --n-train 3000 --no-compare
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from bench_nb201 import ACCURACY, DEFAULT_CSV, latency_columns

from hwnas.errors import InputError
from hwnas.search.tabular import load_table, surrogate_fit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", default=str(DEFAULT_CSV))
    parser.add_argument("--accuracy", nargs="+", default=list(ACCURACY[:2]))
    parser.add_argument("--latency", nargs="+", default=None)
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--no-compare", action="store_true", help="only the surrogate as the default fits it")
    args = parser.parse_args(argv)
    print(f"GP fit on {args.n_train} cells, Spearman on the scored region's others, mean of {args.draws} draws\n")
    head = "| accuracy | latency | accuracy rho | latency rho | views chosen (acc / lat) |"
    if not args.no_compare:
        head += " accuracy rho, all columns | latency rho, all columns |"
    print(head)
    print("|" + "---|" * head.count(" | ") + "---|")
    sums = []
    for acc in args.accuracy:
        for lat in args.latency or latency_columns(args.csv):
            table = load_table("nb201", args.csv, acc, lat)
            fit = surrogate_fit(table, args.n_train, args.draws)
            row = [fit["accuracy"]["spearman"], fit["latency"]["spearman"]]
            views = " / ".join("".join(map(str, fit[k]["view_per_draw"])) for k in ("accuracy", "latency"))
            line = f"| {acc} | {lat} | {row[0]:.3f} | {row[1]:.3f} | {views} |"
            if not args.no_compare:
                base = surrogate_fit(table, args.n_train, args.draws, views=False)
                row += [base["accuracy"]["spearman"], base["latency"]["spearman"]]
                line += f" {row[2]:.3f} | {row[3]:.3f} |"
            sums.append(row)
            print(line, flush=True)
    print("| mean | | " + " | ".join(f"{v:.3f}" for v in np.mean(sums, axis=0)[:2]) + " | |"
          + ("" if args.no_compare else " " + " | ".join(f"{v:.3f}" for v in np.mean(sums, axis=0)[2:]) + " |"))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except InputError as exc:  # a bad column or file: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
