"""Every search strategy on a MobileNetV3 space with the accuracy predictor: hypervolume against evaluations.

Objectives: accuracy from a saved accuracy predictor (`--predictor P.pt`, hwnas.estimate's
"predictor" estimator, as `hwnas search --estimator predictor` uses it) and latency from a
device's latency table (`--table T.json`), both maximised / minimised with no constraint.
Every strategy gets the same number of distinct evaluations (`--evals`) over several seeds;
the hypervolume of what it has evaluated after 25 %, 50 %, 75 % and 100 % of them is
normalised by one box fixed before any search (tools/bench_search.py's `hypervolume_box`:
each objective's best and worst over the smallest, the largest and 1,000 random subnets
drawn from a stream that no search seed uses; reference point 1.1). Prints a Markdown table, mean ± std over seeds.

    OMP_NUM_THREADS=1 python tools/bench_strategies_mbv3.py --space mbv3-small-input \\
        --table latency_table.json --predictor supernet.predictor.pt --evals 400 --seeds 3
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
from bench_search import hypervolume_box

from hwnas.estimate import get_estimator
from hwnas.latency.fingerprint import cpu_model
from hwnas.latency.model import load_latency_model
from hwnas.search import hypervolume, normalize, search
from hwnas.search.optimize import HV_REFERENCE
from hwnas.search.problem import ObjectiveSpec
from hwnas.search.strategies import DEFAULT_STRATEGY, get_strategy, strategy_names
from hwnas.space import get_space

DEFAULT_ALGOS = [DEFAULT_STRATEGY, "nsga2", "random", "tpe", "bo", "rl", "morphism", "zero-cost"]
FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def hypervolume_curve(result, spec: ObjectiveSpec, box, counts: list[int]) -> list[float]:
    """Normalised hypervolume of the first n evaluated architectures, for each n in `counts`."""
    F = spec.minimised({n: np.array([e["objectives"][n] for e in result.evaluated]) for n in spec.objectives})
    Fn = normalize(F, *box)
    ref = np.full(len(spec.objectives), HV_REFERENCE)
    return [hypervolume(Fn[:n], ref) for n in counts]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="mbv3-small-input")
    parser.add_argument("--table", required=True, help="latency table of the space (hwnas profile --out)")
    parser.add_argument("--predictor", required=True, help="a saved accuracy predictor (hwnas.estimate)")
    parser.add_argument("--evals", type=int, default=400)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=1,
                        help="seeds first-seed, first-seed+1, ... (not 0: `fit_predictor` draws its training "
                             "subnets with seed 0, and a seed-0 search would start from them)")
    parser.add_argument("--algo", nargs="+", default=DEFAULT_ALGOS, choices=strategy_names())
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args(argv)

    latency_model = load_latency_model(args.table)
    space = getattr(latency_model, "space", None) or get_space(args.space)
    if space.name != args.space:
        parser.error(f"the table is of space {space.name!r}, not {args.space!r}")
    accuracy = get_estimator("predictor", predictor_path=args.predictor, space=space)
    metrics = {"accuracy": lambda archs: np.asarray(accuracy.predict(list(archs)), float),
               "latency_ms": lambda archs: np.asarray(latency_model.predict(list(archs)), float)}
    objectives = ("accuracy", "latency_ms")
    spec = ObjectiveSpec.build(metrics, objectives)
    # the box's random subnets come from a stream no search seed draws (a search with seed 0
    # would otherwise start from the very subnets that set the box)
    rng = np.random.default_rng(np.random.SeedSequence(0, spawn_key=(1,)))
    box = hypervolume_box(space, metrics, spec, [space.sample(rng) for _ in range(1000)])
    counts = [max(1, int(round(f * args.evals))) for f in FRACTIONS]
    rows: dict[str, dict] = {}
    for algo in args.algo:
        curves, seconds, ran = [], [], set()
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            strategy = get_strategy(algo)
            t0 = time.perf_counter()
            result = search(space, metrics, objectives, None, strategy, evaluations=args.evals, seed=seed,
                            progress=False)
            seconds.append(time.perf_counter() - t0)
            ran.add(result.settings.get("strategy_ran", algo))
            curves.append(hypervolume_curve(result, spec, box, [min(c, len(result.evaluated)) for c in counts]))
            print(f"{algo} seed {seed}: hv {curves[-1][-1]:.4f} ({result.evaluations} evaluations, "
                  f"{seconds[-1]:.1f} s)", file=sys.stderr, flush=True)
        C = np.array(curves)
        rows[algo] = {"ran": sorted(ran), "hv_mean": C.mean(axis=0).tolist(),
                      "hv_std": (C.std(axis=0, ddof=1) if len(C) > 1 else np.zeros(C.shape[1])).tolist(),
                      "hv_per_seed": C.tolist(), "seconds": float(np.mean(seconds))}
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": cpu_model(),
              "cores": os.cpu_count(), "space": space.name, "table": args.table, "predictor": args.predictor,
              "evals": args.evals, "seeds": args.seeds, "first_seed": args.first_seed, "counts": counts,
              "hv_box": {"ideal": box[0].tolist(), "nadir": box[1].tolist(), "reference": HV_REFERENCE},
              "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "results": rows}
    print(f"{space.name}: accuracy predictor {args.predictor}, latency table {args.table}; "
          f"{report['machine']}, {report['date']}; mean ± std over {args.seeds} seeds\n")
    print("| strategy | " + " | ".join(f"HV @ {c}" for c in counts) + " | s / search |")
    print("|---|" + "---|" * (len(counts) + 1))
    for algo, r in rows.items():
        name = f"{algo} (default)" if algo == DEFAULT_STRATEGY else algo
        cells = " | ".join(f"{m:.4f} ± {s:.4f}" for m, s in zip(r["hv_mean"], r["hv_std"], strict=True))
        print(f"| {name} | {cells} | {r['seconds']:.1f} |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
