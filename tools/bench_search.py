"""Surrogate search on the MobileNetV3 space: speed, convergence, strategies under 5 budgets.

1. timing: NSGA-II, population 100 x 100 generations on the surrogate objectives; wall time
   of the whole search and the part spent outside the objective callables.
2. convergence: hypervolume of that run / mean hypervolume of runs 10x longer (one per seed),
   every run normalised by the same box, fixed before any search: each objective's best and
   worst over the smallest and largest subnets and 1,000 random ones (the worst latency
   capped at the budget); reference point 1.1 in every normalised objective.
3. budgets: nsga2 vs evolution vs random at equal evaluations, under 5 latency budgets
   (quantiles of the predicted latency of random subnets): best accuracy under each budget.
4. the same at equal TOTAL evaluations: one NSGA-II run (accuracy x latency under the
   loosest budget) with 5 x N evaluations serves all 5 budgets; evolution runs N per budget
   (its rows of part 3); one random search of 5 x N serves all budgets. N = --budget-evals.

Parts 1 and 2 run the default strategy (the registry's DEFAULT_STRATEGY): without an
evaluation budget it runs NSGA-II.

Objectives (whatever the repository offers):
- latency: `--table T.json` (hwnas.latency.predictor.LatencyPredictor), else a
  WholeNetworkLatencyRegressor fitted on every measured subnet of `--latency-csv`
  (OFA MobileNetV3 on a real GPU);
- accuracy: `--predictor P.pt` (a saved accuracy predictor) or `--supernet C.pt --estimator
  NAME` (hwnas.estimate.get_estimator), else the
  subnet's multiply-accumulates as a stand-in (more compute, more accuracy), reported as such.

    flock /tmp/hwnas-bench.lock /work/venv/bin/python tools/bench_search.py --json /tmp/bench_search.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from hwnas.latency.fingerprint import cpu_model
from hwnas.search import hypervolume, normalize, search
from hwnas.search.optimize import HV_REFERENCE
from hwnas.search.problem import ObjectiveSpec
from hwnas.search.strategies import DEFAULT_STRATEGY
from hwnas.space import get_space

DEFAULT_CSV = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks" / "ofa_mbv3_gpu_latency.csv"


def latency_objective(args):
    if args.table:
        from hwnas.latency.model import load_latency_model

        predictor = load_latency_model(args.table)
        calibrated = "calibrated" if predictor.calibrated else "raw table sum"
        return predictor.predict, f"LatencyPredictor({args.table}, {calibrated})", predictor.space
    from hwnas.latency.fit import WholeNetworkLatencyRegressor, read_arch_latency_csv

    archs, ms = read_arch_latency_csv(args.latency_csv, args.latency_column)
    model = WholeNetworkLatencyRegressor().fit(archs, ms)
    return (model.predict, f"WholeNetworkLatencyRegressor fitted on {len(archs)} rows of {args.latency_column}",
            get_space(args.space))


def accuracy_objective(args, space):
    if args.predictor:
        from hwnas.estimate import get_estimator

        estimator = get_estimator("predictor", predictor_path=args.predictor, space=space)
        return estimator.predict, f"accuracy predictor ({args.predictor})", "accuracy"
    if args.supernet:
        from hwnas.estimate import get_estimator

        estimator = get_estimator(args.estimator, supernet_checkpoint=args.supernet, space=space)
        return estimator.predict, f"{args.estimator} estimator ({args.supernet})", "accuracy"
    if space.name == "mbv3":
        from hwnas.latency.fit import mbv3_reference_features

        def macs(archs):  # millions of multiply-accumulates (OFA's count: the space's own, 8x faster)
            return np.array([mbv3_reference_features(a)[-1] / 1e6 for a in archs])
    else:
        def macs(archs):  # millions of multiply-accumulates
            return np.array([space.flops(a) / 1e6 for a in archs])

    return macs, "MACs (stand-in: no accuracy estimator given)", "macs"


def hypervolume_box(space, metrics, spec: ObjectiveSpec, archs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(ideal, nadir) of the minimised objectives, fixed before any search: each objective's
    best and worst over `archs` and the space's smallest and largest subnets, the worst
    counted over the feasible ones only (so latency's is at most the budget)."""
    archs = list(archs) + [getattr(space, end)() for end in ("smallest", "largest") if hasattr(space, end)]
    values = {name: np.asarray(metrics[name](archs), float) for name in metrics}
    F, G = spec.minimised(values), spec.violations(values)
    feasible = np.all(G <= 0, axis=1) if G.shape[1] else np.ones(len(F), dtype=bool)
    return F.min(axis=0), F[feasible].max(axis=0)


def result_hypervolume(result, spec: ObjectiveSpec, box: tuple[np.ndarray, np.ndarray]) -> float:
    """Hypervolume of every feasible architecture a search evaluated, normalised by `box`."""
    ok = [e for e in result.evaluated if e["feasible"]]
    F = spec.minimised({n: np.array([e["objectives"][n] for e in ok]) for n in spec.objectives})
    return hypervolume(normalize(F, *box), np.full(len(spec.objectives), HV_REFERENCE))


def print_budget_table(rows: list[dict], headers: tuple[str, str, str]) -> None:
    """Markdown rows: each budget's mean ± std of nsga2, evolution and random, under `headers`."""
    print("| budget ms | " + " | ".join(headers) + " |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['budget_ms']:.3f} | " + " | ".join(f"{row[a]['mean']:.3f} ± {row[a]['std']:.3f}"
                                                       for a in ("nsga2", "evolution", "random")) + " |")


def compare_under_budgets(args, space, metrics, objectives, maximize, acc_key: str,
                          budgets: list[float]) -> dict:
    """Parts 3 and 4: best `acc_key` under each budget per strategy, at equal evaluations per
    budget and at equal total evaluations."""
    # 3: strategies under 5 budgets at equal evaluations
    comparison = []
    for budget in budgets:
        row = {"budget_ms": budget}
        for algo in ("nsga2", "evolution", "random"):
            best_values = []
            for seed in range(args.seeds):
                r = search(space, metrics, objectives if algo != "evolution" else (acc_key,),
                           {"latency_ms": budget}, algo, evaluations=args.budget_evals, seed=seed,
                           maximize=maximize, progress=False)
                feasible = [e["objectives"][acc_key] for e in r.evaluated if e["feasible"]]
                best_values.append(max(feasible) if feasible else float("nan"))
            row[algo] = {"mean": float(np.mean(best_values)), "std": float(np.std(best_values, ddof=1))
                         if len(best_values) > 1 else 0.0, "per_seed": best_values}
        comparison.append(row)
        print(f"budget {budget:.3f} ms: " + ", ".join(f"{a} {row[a]['mean']:.2f}" for a in
                                                      ("nsga2", "evolution", "random")), file=sys.stderr)

    # 4: equal total evaluations; one multi-objective run serves every budget
    total = len(budgets) * args.budget_evals
    shared = {}
    for algo in ("nsga2", "random"):
        per_budget: list[list[float]] = [[] for _ in budgets]
        used = []
        for seed in range(args.seeds):
            r = search(space, metrics, objectives, {"latency_ms": budgets[-1]}, algo, evaluations=total, seed=seed,
                       maximize=maximize, progress=False)
            used.append(r.evaluations)
            for b, budget in enumerate(budgets):
                ok = [e["objectives"][acc_key] for e in r.evaluated
                      if e["feasible"] and e["objectives"]["latency_ms"] <= budget]
                per_budget[b].append(max(ok) if ok else float("nan"))
        shared[algo] = {"evaluations": used, "per_budget": per_budget}
    equal_total = []
    for b, row in enumerate(comparison):
        out = {"budget_ms": row["budget_ms"]}
        for algo in ("nsga2", "random"):
            values = shared[algo]["per_budget"][b]
            out[algo] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1
                         else 0.0, "per_seed": values}
        out["evolution"] = row["evolution"]
        equal_total.append(out)
    return {"budgets": comparison,
            "equal_total": {"evaluations": {"nsga2": shared["nsga2"]["evaluations"],
                                            "random": shared["random"]["evaluations"],
                                            "evolution": [args.budget_evals * len(budgets)] * args.seeds},
                            "budgets": equal_total}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="mbv3")
    parser.add_argument("--table", default=None)
    parser.add_argument("--latency-csv", default=str(DEFAULT_CSV))
    parser.add_argument("--latency-column", default="lat_ms_2080ti_1")
    parser.add_argument("--supernet", default=None)
    parser.add_argument("--estimator", default="predictor")
    parser.add_argument("--predictor", default=None, help="a saved accuracy predictor (hwnas.estimate)")
    parser.add_argument("--pop", type=int, default=100)
    parser.add_argument("--gens", type=int, default=100)
    parser.add_argument("--long-factor", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget-evals", type=int, default=2000, help="evaluations per strategy and budget")
    parser.add_argument("--skip-long", action="store_true", help="skip the 10x longer convergence runs")
    parser.add_argument("--skip-budgets", action="store_true", help="skip parts 3 and 4 (strategies under budgets)")
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args(argv)

    latency, latency_name, space = latency_objective(args)
    accuracy, accuracy_name, acc_key = accuracy_objective(args, space)
    metrics = {acc_key: accuracy, "latency_ms": latency}
    maximize = (acc_key,)
    objectives = (acc_key, "latency_ms")
    rng = np.random.default_rng(0)
    sample = [space.sample(rng) for _ in range(1000)]
    sample_ms = latency(sample)
    budgets = [float(np.quantile(sample_ms, q)) for q in (0.1, 0.3, 0.5, 0.7, 0.9)]
    report: dict = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "machine": cpu_model(), "cores": os.cpu_count(), "space": space.name,
                    "latency": latency_name, "accuracy": accuracy_name, "budgets_ms": budgets,
                    "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])}

    # 1 + 2: timing and convergence (constraint: the median budget)
    spec = ObjectiveSpec.build(metrics, objectives, {"latency_ms": budgets[2]}, maximize)
    box = hypervolume_box(space, metrics, spec, sample)
    report["hv_box"] = {"ideal": box[0].tolist(), "nadir": box[1].tolist(), "reference": HV_REFERENCE}
    timing = []
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        r = search(space, metrics, objectives, {"latency_ms": budgets[2]}, DEFAULT_STRATEGY, generations=args.gens,
                   pop_size=args.pop, seed=seed, maximize=maximize, progress=False)
        wall = time.perf_counter() - t0
        row = {"seed": seed, "strategy": DEFAULT_STRATEGY, "ran": r.settings.get("strategy_ran", DEFAULT_STRATEGY),
               "wall_s": wall, "search_s": r.seconds, "objective_s": r.metric_seconds,
               "overhead_s": r.seconds - r.metric_seconds, "evaluations": r.evaluations,
               "hv": result_hypervolume(r, spec, box)}
        if not args.skip_long:
            long = search(space, metrics, objectives, {"latency_ms": budgets[2]}, DEFAULT_STRATEGY,
                          generations=args.gens * args.long_factor, pop_size=args.pop, seed=seed,
                          maximize=maximize, progress=False)
            row.update(long_hv=result_hypervolume(long, spec, box), long_s=long.seconds,
                       long_evaluations=long.evaluations)
        timing.append(row)
        print(f"seed {seed}: {row}", file=sys.stderr)
    if not args.skip_long:
        long_mean = float(np.mean([t["long_hv"] for t in timing]))
        for t in timing:
            t["hv_ratio_to_long"] = t["hv"] / long_mean
        report["convergence"] = {"long_hv_mean": long_mean,
                                 "hv_ratio_mean": float(np.mean([t["hv_ratio_to_long"] for t in timing]))}
    report["timing"] = timing

    if not args.skip_budgets:
        report.update(compare_under_budgets(args, space, metrics, objectives, maximize, acc_key, budgets))

    print(f"{space.name}: latency = {latency_name}; accuracy = {accuracy_name}")
    print(f"{report['machine']}, {report['cores']} cores, {report['date']}\n")
    print(f"strategy {DEFAULT_STRATEGY} (ran: {timing[0]['ran']})\n")
    print(f"| seed | pop x gens | evaluations | search s | in objectives s | search overhead s | HV | "
          f"HV({args.long_factor}x longer) | HV / mean HV({args.long_factor}x longer) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for t in timing:
        long_hv = f"{t['long_hv']:.5f}" if "long_hv" in t else "-"
        ratio = f"{100 * t['hv_ratio_to_long']:.2f} %" if "hv_ratio_to_long" in t else "-"
        print(f"| {t['seed']} | {args.pop} x {args.gens} | {t['evaluations']} | {t['search_s']:.2f} | "
              f"{t['objective_s']:.2f} | {t['overhead_s']:.2f} | {t['hv']:.5f} | {long_hv} | {ratio} |")
    if "convergence" in report:
        print(f"\nmean HV / mean HV({args.long_factor}x longer): {100 * report['convergence']['hv_ratio_mean']:.2f} %")
    if not args.skip_budgets:
        total = len(budgets) * args.budget_evals
        print(f"\nbest {acc_key} under each budget, {args.budget_evals} evaluations, mean ± std over "
              f"{args.seeds} seeds\n")
        print_budget_table(report["budgets"], ("nsga2", "evolution", "random"))
        used = report["equal_total"]["evaluations"]
        print(f"\nbest {acc_key} under each budget at equal total evaluations, mean ± std over {args.seeds} seeds: "
              f"nsga2 one run of {total} (used {', '.join(map(str, used['nsga2']))}), evolution "
              f"{args.budget_evals} per budget x {len(budgets)}, random one run of {total} "
              f"(used {', '.join(map(str, used['random']))})\n")
        print_budget_table(report["equal_total"]["budgets"],
                           ("nsga2 (one run)", "evolution (one run per budget)", "random (one run)"))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
