"""Differentiable search against pareto-local-search under 5 latency budgets, each subnet exported and
measured: does one gradient run land on its budget, and how accurate is what it finds?

For each budget (spread over the space's predicted latency range: fastest + q x (largest - fastest),
q = 0.1 .. 0.9), on the same supernet and table:
- `differentiable` (hwnas.search.differentiable, one run per budget);
- `pareto-local-search` with the supernet estimator and `--pls-evals` evaluations (its best subnet
  under the budget);
each subnet is exported (ONNX) with hwnas.export.export_selection on the table's device profile:
its latency is measured (the network alone, and against the table's anchor: at the table's machine
speed, the figure comparable with the budget) and its accuracy measured on the dataset's test images
(never seen by either search). Seconds are each search's wall clock.

    python tools/bench_differentiable.py --table T.json --supernet C.pt --out bench/diff --json bench/diff.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", required=True)
    parser.add_argument("--supernet", required=True)
    parser.add_argument("--relaxation", default="gdas")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--pls-evals", type=int, default=60)
    parser.add_argument("--quantiles", default="0.1,0.3,0.5,0.7,0.9")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from hwnas.device_profile import profile_from_dict
    from hwnas.estimate import get_estimator
    from hwnas.export.bundle import export_selection
    from hwnas.export.source import Selection
    from hwnas.latency.predictor import LatencyPredictor
    from hwnas.search import best_under_budget, search
    from hwnas.search.differentiable import DifferentiableSettings, differentiable_search
    from hwnas.train import load_checkpoint

    torch.set_num_threads(args.threads)
    predictor = LatencyPredictor.load(args.table)
    profile = profile_from_dict(predictor.table.profile, source=args.table)
    supernet, meta = load_checkpoint(args.supernet)
    space = supernet.space
    lat = lambda archs: np.asarray(predictor.predict(list(archs)), dtype=float)  # noqa: E731
    lo, hi = float(lat([space.smallest()])[0]), float(lat([space.largest()])[0])
    budgets = [round(lo + float(q) * (hi - lo), 4) for q in args.quantiles.split(",")]
    state = {k: v.clone() for k, v in supernet.state_dict().items()}
    estimator = get_estimator("supernet", supernet_checkpoint=args.supernet, space=space)
    out = Path(args.out)
    rows = []

    def exported(arch: dict, name: str, accuracy: float | None) -> dict:
        selection = Selection(arch=arch, space_name=space.name, space_options=space.config(),
                              supernet=args.supernet, table=args.table, accuracy=accuracy)
        selection.space_options.pop("name", None)
        result = export_selection(selection, out / name, formats="onnx", profile=profile, progress=False)
        latency, accuracy_record = result.manifest["latency"], result.manifest["accuracy"]
        return {"arch": arch, "predicted_ms": result.predicted_ms, "measured_ms": result.measured_ms,
                "measured_at_table_speed_ms": latency.get("measured_at_table_speed_ms"),
                "test_accuracy": accuracy_record["test"]["percent"], "test_stderr": accuracy_record["test"]["stderr"],
                "val_estimate": accuracy_record["estimate"]["percent"] if accuracy_record["estimate"] else None}

    for b in budgets:
        print(f"== budget {b} ms", file=sys.stderr, flush=True)
        supernet.load_state_dict(state)
        t0 = time.perf_counter()
        run = differentiable_search(supernet, meta, predictor, b, DifferentiableSettings(
            relaxation=args.relaxation, steps=args.steps, progress=False))
        diff_seconds = time.perf_counter() - t0
        supernet.load_state_dict(state)
        t0 = time.perf_counter()
        pls = search(space, {"latency_ms": lat, "accuracy": lambda archs: estimator.predict(list(archs))},
                     ("accuracy", "latency_ms"), {"latency_ms": b}, "pareto-local-search",
                     evaluations=args.pls_evals, seed=0, progress=False)
        pls_seconds = time.perf_counter() - t0
        best = best_under_budget(pls, b)
        found = (exported(best["arch"], f"pls-{b}", best["objectives"]["accuracy"]) if best is not None
                 else {"arch": None, "note": f"no subnet under the budget in {pls.evaluations} evaluations"})
        rows.append({
            "budget_ms": b,
            "differentiable": {**exported(run.arch, f"diff-{b}", None), "seconds": round(diff_seconds, 1),
                               "expected_ms": run.expected_ms, "repaired": len(run.repaired)},
            "pareto-local-search": {**found, "seconds": round(pls_seconds, 1), "evaluations": pls.evaluations},
        })
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

    def ok(record: dict, b: float) -> tuple[bool, bool]:
        m = record["measured_at_table_speed_ms"] or record["measured_ms"]
        return m <= b, abs(m - b) <= 0.1 * b

    d = [ok(r["differentiable"], r["budget_ms"]) for r in rows]
    summary = {"budgets_ms": budgets, "relaxation": args.relaxation, "steps": args.steps,
               "pls_evals": args.pls_evals, "rows": rows,
               "differentiable_within_budget": sum(a for a, _ in d),
               "differentiable_within_10pct_of_budget": sum(b for _, b in d),
               "differentiable_within_both": sum(a and b for a, b in d)}
    text = json.dumps(summary, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
