"""Score the search strategies on NAS-Bench-201 against the table's true Pareto front.

For every accuracy column x latency column x strategy: `hwnas bench nb201` with the given
query budget over several seeds; prints a Markdown table of hv_ratio and front_recall
(mean +- std over seeds) and optionally writes every number as JSON.

    flock /tmp/hwnas-bench.lock /work/venv/bin/python tools/bench_nb201.py --evals 500 --seeds 10
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

from hwnas.latency.fingerprint import cpu_model
from hwnas.search.strategies import DEFAULT_STRATEGY
from hwnas.search.tabular import bench

DEFAULT_CSV = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks" / "nb201.csv"
ACCURACY = ["acc_cifar10_test_200ep", "acc_cifar100_test_200ep"]
def latency_columns(csv_path: str) -> list[str]:
    """Every latency column of the table (`lat_ms_*`), in file order."""
    with open(csv_path, newline="") as f:
        return [c for c in next(csv.reader(f)) if c.startswith("lat_ms_")]
STRATEGIES = list(dict.fromkeys([DEFAULT_STRATEGY, "nsga2", "random", "evolution", "regularized-evolution"]))


def _cell(result: dict, key: str) -> str:
    std = result.get(f"{key}_std")
    return f"{result[key]:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", default=str(DEFAULT_CSV))
    parser.add_argument("--evals", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed+seeds-1")
    parser.add_argument("--accuracy", nargs="+", default=ACCURACY)
    parser.add_argument("--latency", nargs="+", default=None, help="latency columns (default: every lat_ms_* column)")
    parser.add_argument("--algo", nargs="+", default=STRATEGIES)
    parser.add_argument("--json", dest="json_out", default=None, help="write all results here")
    args = parser.parse_args(argv)

    latencies = args.latency or latency_columns(args.csv)
    rows = []
    t0 = time.perf_counter()
    for acc in args.accuracy:
        for lat in latencies:
            for algo in args.algo:
                r = bench("nb201", args.csv, acc, lat, args.evals, strategy=algo, seed=args.first_seed,
                          seeds=args.seeds, progress=False)
                rows.append(r)
                print(f"{acc} {lat} {algo}: hv_ratio {r['hv_ratio']:.3f} front_recall {r['front_recall']:.3f}",
                      file=sys.stderr)
    header = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": cpu_model(),
              "cores": os.cpu_count(), "evals": args.evals, "seeds": args.seeds, "first_seed": args.first_seed,
              "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "seconds": time.perf_counter() - t0}
    print(f"NAS-Bench-201, {args.evals} queries, mean +- std over {args.seeds} seeds from {args.first_seed} "
          f"({header['machine']}, {header['date']})\n")
    print("| accuracy | latency | strategy | hv_ratio | front_recall | true front |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        name = f"{r['algo']} (default)" if r["algo"] == DEFAULT_STRATEGY else r["algo"]
        print(f"| {r['accuracy']} | {r['latency']} | {name} | {_cell(r, 'hv_ratio')} "
              f"| {_cell(r, 'front_recall')} | {r['true_front_size']} |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({**header, "results": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
