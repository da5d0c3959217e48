"""`hwnas bench`: score a search strategy on a tabular benchmark against its true Pareto front."""

from __future__ import annotations

import argparse

HELP = "score a search strategy on a tabular benchmark (NAS-Bench-201) against its true front"
DESCRIPTION = """\
Search a tabular benchmark, learning accuracy and latency only by querying the table
(counted per distinct architecture), and compare what was found with the table's exact
Pareto front: hv_ratio (hypervolume vs the true front's, objectives scaled by the table's
range, reference point = the median architecture) and front_recall (share of the true
front queried).

example:
  hwnas bench nb201 --csv ../shared/benchmarks/nb201.csv \\
      --accuracy acc_cifar10_test_200ep --latency lat_ms_pixel3 --evals 500 --algo nsga2 --seeds 10 --json
"""

# library field -> the flag that sets it
FLAGS = {"csv": "--csv", "accuracy": "--accuracy", "latency": "--latency", "evaluations": "--evals",
         "strategy": "--algo", "evals": "--evals", "seeds": "--seeds", "pop_size": "--pop"}


def configure(parser: argparse.ArgumentParser) -> None:
    from hwnas.search.tabular import BENCHMARKS

    parser.add_argument("benchmark", choices=BENCHMARKS, help="tabular benchmark")
    parser.add_argument("--csv", required=True, help="the benchmark table (CSV with an arch_str column)")
    parser.add_argument("--accuracy", required=True, metavar="COL", help="accuracy column (%%, maximised)")
    parser.add_argument("--latency", required=True, metavar="COL", help="latency column (minimised)")
    parser.add_argument("--evals", type=int, required=True, metavar="K", help="query budget per seed")
    from hwnas.search.strategies import DEFAULT_STRATEGY, strategy_names

    parser.add_argument("--algo", default=DEFAULT_STRATEGY,
                        help=f"{DEFAULT_STRATEGY} (default), "
                             + ", ".join(n for n in strategy_names() if n != DEFAULT_STRATEGY))
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--seeds", type=int, default=1, metavar="N", help="seeds seed..seed+N-1 (default 1)")
    parser.add_argument("--pop", type=int, default=None, metavar="N",
                        help="population size (default: the strategy's own)")


def run(args: argparse.Namespace):
    from hwnas.pipeline import bench

    return bench(args.benchmark, args.csv, args.accuracy, args.latency, args.evals, strategy=args.algo,
                 seed=args.seed, seeds=args.seeds, pop_size=args.pop)

