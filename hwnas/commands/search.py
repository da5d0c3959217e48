"""`hwnas search`: Pareto search of a supernet's subnets under a latency budget."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hwnas.errors import InputError, NotAvailableError

HELP = "search subnets that are Pareto-optimal in accuracy and latency under a budget"
DESCRIPTION = """\
Search the subnets of a weight-sharing supernet for the Pareto front of accuracy (from an
estimator) and latency (predicted from a device's latency table), keeping latency within
the budget. Writes R/pareto.json (every non-dominated subnet, settings, seed, the table
and checkpoint paths, best_under_budget), R/pareto.png and R/hypervolume.png.

example:
  hwnas search --space mbv3 --table latency_tables/cpu.json --supernet runs/supernet.pt \\
      --budget-ms 20 --max-time 10m --out runs/search-cpu-20ms

With no --pop, --gens or --evals, the search's evaluation budget is sized from the
estimator's cost, measured on a few random subnets, to fill most of --max-time (10
minutes by default); the search ends when --max-time is spent in any case. The progress
line shows subnets/s and the time left from the first generation on.
"""

OBJECTIVES = ("accuracy", "latency_ms", "params", "flops")
ESTIMATORS = ("supernet", "predictor", "zero-cost")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--space", required=True, help="search space name (e.g. mbv3)")
    parser.add_argument("--table", required=True, metavar="T.json", help="latency table of the target device")
    parser.add_argument("--supernet", default=None, metavar="C.pt",
                        help="supernet checkpoint (needed when accuracy is an objective)")
    parser.add_argument("--budget-ms", type=float, required=True, metavar="B", help="latency budget (ms)")
    from hwnas.search.strategies import strategy_names
    from hwnas.search.strategies.base import DEFAULT_STRATEGY

    parser.add_argument("--algo", default=DEFAULT_STRATEGY,
                        help=f"strategy: {DEFAULT_STRATEGY} (default; nsga2 unless --evals is at most 2000), "
                             + ", ".join(n for n in strategy_names() if n != DEFAULT_STRATEGY))
    parser.add_argument("--objectives", default="accuracy,latency_ms",
                        help=f"comma-separated, from {', '.join(OBJECTIVES)} (default accuracy,latency_ms)")
    parser.add_argument("--estimator", default="supernet", choices=ESTIMATORS, help="accuracy estimator")
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


def _parse_objectives(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in OBJECTIVES]
    if not names or unknown:
        raise InputError(f"unknown objective(s) {unknown or text!r}; choose from {', '.join(OBJECTIVES)}",
                         field="--objectives")
    return names


def run(args: argparse.Namespace) -> dict:
    import numpy as np

    from hwnas.search import best_under_budget, get_strategy, search
    from hwnas.search.artifact import fastest_latency, write_search_outputs
    from hwnas.space import get_space

    if not np.isfinite(args.budget_ms) or args.budget_ms <= 0:
        raise InputError(f"must be a positive number of milliseconds, got {args.budget_ms}", field="--budget-ms")
    for flag, value in (("--pop", args.pop), ("--gens", args.gens), ("--evals", args.evals)):
        if value is not None and value < 1:
            raise InputError(f"must be a positive integer, got {value}", field=flag)
    from hwnas.search.planning import default_budget, parse_duration

    max_seconds = parse_duration(args.max_time)
    objectives = _parse_objectives(args.objectives)
    get_strategy(args.algo)  # an unknown strategy fails before anything is loaded
    get_space(args.space)  # an unknown space too
    if "accuracy" in objectives and not args.supernet:
        raise InputError("accuracy is an objective, so a supernet checkpoint is needed", field="--supernet")
    for flag, path in (("--table", args.table), ("--supernet", args.supernet)):
        if path is not None and not Path(path).is_file():
            raise InputError("file not found", path=str(path), field=flag)

    try:
        from hwnas.latency.predictor import LatencyPredictor
    except ModuleNotFoundError as exc:
        raise NotAvailableError(f"the latency predictor is not available in this installation ({exc})") from exc
    predictor = LatencyPredictor.load(args.table)
    if predictor.table.space_name != args.space:
        raise InputError(f"the table was measured for space '{predictor.table.space_name}', not '{args.space}'",
                         path=str(args.table), field="space")
    space = predictor.space  # built with the table's space options (resolutions, width)
    metrics = {"latency_ms": lambda archs: np.asarray(predictor.predict(list(archs)), dtype=float)}
    if "params" in objectives or args.max_params is not None:
        metrics["params"] = lambda archs: np.array([space.params(a) / 1e6 for a in archs])  # millions
    if "flops" in objectives:
        metrics["flops"] = lambda archs: np.array([space.flops(a) / 1e6 for a in archs])  # MFLOPs

    fastest_arch, fastest_ms = fastest_latency(space, metrics["latency_ms"], seed=args.seed)
    if args.budget_ms < fastest_ms:
        raise InputError(f"budget {args.budget_ms:g} ms is below the fastest subnet's predicted latency "
                         f"({fastest_ms:.4g} ms on this table); no subnet can meet it", field="--budget-ms")

    if "accuracy" in objectives:
        try:
            from hwnas.estimate import get_estimator
        except ImportError as exc:
            raise NotAvailableError(f"accuracy estimators are not available in this installation ({exc})") from exc
        estimator = get_estimator(args.estimator, supernet_checkpoint=args.supernet, space=space)
        metrics["accuracy"] = lambda archs: np.asarray(estimator.predict(list(archs)), dtype=float)

    constraints = {"latency_ms": float(args.budget_ms)}
    if args.max_params is not None:
        constraints["params"] = float(args.max_params)
    evaluations, generations, plan = default_budget(space, metrics, max_seconds, pop_size=args.pop,
                                                    generations=args.gens, evaluations=args.evals, seed=args.seed)
    if plan is not None:
        print(f"search budget: {plan.describe()}", file=sys.stderr)
    result = search(space, metrics, objectives, constraints, args.algo, evaluations=evaluations,
                    generations=generations, pop_size=args.pop, seed=args.seed, max_seconds=max_seconds)
    files = write_search_outputs(args.out, result, budget_ms=float(args.budget_ms), metadata={
        "space": args.space,
        "table": str(Path(args.table).resolve()),
        "space_options": predictor.table.space.get("config", {}),
        "supernet": str(Path(args.supernet).resolve()) if args.supernet else None,
        "estimator": args.estimator if "accuracy" in objectives else None,
        "fastest_ms": fastest_ms,
        "fastest_arch": fastest_arch,
    })
    return {
        "pareto": files["pareto"],
        "budget_ms": float(args.budget_ms),
        "n_pareto": len(result.pareto),
        "hypervolume": result.hypervolume,
        "evaluations": result.evaluations,
        "seconds": result.seconds,
        "best_under_budget": best_under_budget(result, float(args.budget_ms)),
        "plots": [files["pareto_plot"], files["hypervolume_plot"]],
        "fastest_ms": fastest_ms,
        "seed": args.seed,
        "strategy_ran": result.settings["strategy_ran"],
        "stopped_on_time": result.settings["stopped_on_time"],
        "seconds_per_subnet": None if plan is None else plan.seconds_per_evaluation,
    }
