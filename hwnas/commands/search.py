"""`hwnas search`: Pareto search of a supernet's subnets under a latency budget."""

from __future__ import annotations

import argparse

HELP = "search subnets that are Pareto-optimal in accuracy and latency under a budget"
DESCRIPTION = """\
Search the subnets of a weight-sharing supernet for the Pareto front of accuracy (from an
estimator) and latency (predicted from a device's latency table, or from a whole-network
latency model), keeping latency within the budget; a table without a calibration yet is
said so (a note on stderr and in the result). Writes R/pareto.json (every non-dominated
subnet, settings, seed, the table and checkpoint paths, best_under_budget), R/pareto.png
and R/hypervolume.png.

example:
  hwnas search --space mbv3 --table latency_tables/cpu.json --supernet runs/supernet.pt \\
      --budget-ms 20 --max-time 10m --out runs/search-cpu-20ms

With no --pop, --gens or --evals, the search's evaluation budget is sized from the
estimator's cost, measured on a few random subnets, to fill most of --max-time (10
minutes by default); the search ends when --max-time is spent in any case. The progress
line shows subnets/s and the time left from the first generation on.
"""

# library field -> the flag that sets it
FLAGS = {"space": "--space", "table": "--table", "latency_model": "--latency-model", "supernet": "--supernet",
         "budget_ms": "--budget-ms", "strategy": "--algo", "objectives": "--objectives", "estimator": "--estimator",
         "pop_size": "--pop", "generations": "--gens", "evaluations": "--evals", "max_params": "--max-params",
         "out": "--out", "steps": "--steps", "sweep": "--sweep", "relaxation": "--relaxation",
         "max_time": "--max-time"}


def configure(parser: argparse.ArgumentParser) -> None:
    from hwnas.pipeline import OBJECTIVES
    from hwnas.search.strategies import DEFAULT_STRATEGY, strategy_names

    parser.add_argument("--space", required=True, help="search space: a name (e.g. mbv3) or a spec file (YAML)")
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--table", metavar="T.json", help="latency table of the target device")
    model.add_argument("--latency-model", metavar="M.json",
                       help="instead of a table: a whole-network latency model (hwnas fit-latency --out), for a "
                            "device that can only be timed whole")
    parser.add_argument("--supernet", default=None, metavar="C.pt",
                        help="supernet checkpoint (needed when accuracy is an objective)")
    parser.add_argument("--budget-ms", type=float, required=True, metavar="B", help="latency budget (ms)")
    parser.add_argument("--algo", default=DEFAULT_STRATEGY,
                        help=f"strategy: {DEFAULT_STRATEGY} (default; NSGA-II unless --evals is at most 2000), "
                             f"or one of {', '.join(n for n in strategy_names() if n != DEFAULT_STRATEGY)} "
                             "(differentiable: one-shot gradient search on the supernet, one run per budget of "
                             "--sweep)")
    parser.add_argument("--relaxation", default="gdas", choices=("gdas", "darts", "proxyless"),
                        help="differentiable: how the choices are relaxed (default gdas)")
    parser.add_argument("--steps", type=int, default=150, metavar="S",
                        help="differentiable: alternating weight / architecture steps per budget (default 150)")
    parser.add_argument("--sweep", type=int, default=4, metavar="N",
                        help="differentiable: budgets of the front, from --budget-ms down to 60 %% of it (default 4)")
    parser.add_argument("--objectives", default="accuracy,latency_ms",
                        help=f"comma-separated, from {', '.join(OBJECTIVES)} (default accuracy,latency_ms)")
    parser.add_argument("--estimator", default="supernet", help="accuracy estimator: supernet (default), "
                        "predictor, zero-cost, or a plugin's")
    parser.add_argument("--pop", type=int, default=None, metavar="N",
                        help="population size (default: the strategy's own)")
    parser.add_argument("--gens", type=int, default=None, metavar="G",
                        help="generations (default: 100 if --pop or --evals is given)")
    parser.add_argument("--evals", type=int, default=None, metavar="K",
                        help="stop after K distinct subnets (default, with no --pop/--gens either: as many as "
                             "the estimator's measured cost fits in 80%% of --max-time)")
    parser.add_argument("--max-time", default="10m", metavar="T",
                        help="wall-clock budget of the search, e.g. 90s, 10m, 1h (default 10m)")
    parser.add_argument("--max-params", type=float, default=None, metavar="M",
                        help="also require at most M million parameters")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, metavar="R/", help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace a search run already in --out")


def run(args: argparse.Namespace):
    from hwnas.pipeline import search

    options = {"relaxation": args.relaxation, "steps": args.steps, "sweep": args.sweep}
    return search(args.space, table=args.table, latency_model=args.latency_model, supernet=args.supernet,
                  budget_ms=args.budget_ms, strategy=args.algo, objectives=args.objectives, estimator=args.estimator,
                  pop_size=args.pop, generations=args.gens, evaluations=args.evals, max_params=args.max_params,
                  seed=args.seed, out=args.out, overwrite=args.overwrite, max_time=args.max_time,
                  strategy_options=options if args.algo == "differentiable" else None)
