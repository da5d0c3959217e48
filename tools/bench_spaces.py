"""The built-in spec spaces through the whole demo pipeline (CPU, onnxruntime 1 thread), one row each.

    flock /tmp/hwnas-bench.lock python tools/bench_spaces.py chain resnet nb201-supernet --epochs 2

Per space: its op keys, the time to profile the full table (the demo's quick protocol), the table's
fidelity on whole subnets (`hwnas validate`, 30 subnets, calibrated: share within 10 %, Kendall
tau), the supernet's test accuracy of its largest and smallest subnet after the demo-scale training
(the shipped Fashion-MNIST subset), and the subnet the search found under the budget against a
hand-made member of the family (every choice its median) at equal or higher predicted latency, both
scored by the same supernet estimator. Writes bench/spaces/<space>/ and prints Markdown rows.

    flock /work/timing.lock python tools/bench_spaces.py nb201-supernet --latency-only

With --latency-only: the table and its fidelity alone (profile with the quick protocol, validate on
30 + 30 subnets with a retest of the held-out ones: how well the timing agrees with itself, the
ceiling of any table on this machine at this load), no training or search.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the hwnas beside this script

import numpy as np  # noqa: E402


def median_arch(space) -> dict:
    """The hand-made member: every gene its median choice."""
    xl, xu = space.bounds
    return space.decode((np.asarray(xl) + np.asarray(xu)) // 2)


def bench_space(name: str, out: Path, epochs: int) -> dict:
    import hwnas
    from hwnas.estimate import get_estimator
    from hwnas.latency.predictor import LatencyPredictor

    began = time.perf_counter()
    result = hwnas.demo(out / name, epochs=epochs, space=name).to_dict()
    table = out / name / "latency_table.json"
    predictor = LatencyPredictor.load(table)
    space = predictor.space
    best = result["search"]["best_under_budget"] or {}
    found = best.get("arch")
    hand = median_arch(space)
    estimator = get_estimator("supernet", supernet_checkpoint=out / name / "supernet.pt", space=space)
    acc_found, acc_hand = (float(v) for v in estimator.predict([found, hand]))
    ms_found, ms_hand = (float(v) for v in predictor.predict([found, hand]))
    return {
        "space": name,
        "op_keys": len(space.all_ops()),
        "profile_s": result["profile"].get("seconds"),
        "within_10pct": result["validate"]["within_10pct"],
        "kendall_tau": result["validate"]["kendall_tau"],
        "calibrated": result["validate"].get("calibrated"),
        "acc_largest": result["train"]["acc_largest"],
        "acc_smallest": result["train"]["acc_smallest"],
        "budget_ms": result["budget_ms"],
        "found": {"arch": found, "predicted_ms": ms_found, "accuracy": acc_found,
                  "measured_ms": result["summary"].get("measured_ms")},
        "hand_made": {"arch": hand, "predicted_ms": ms_hand, "accuracy": acc_hand},
        "seconds": round(time.perf_counter() - began, 1),
        "load_avg": os.getloadavg(),
    }


def bench_latency(name: str, out: Path) -> dict:
    """Profile (quick) and validate (30 + 30 subnets, retest) one space's table; no training."""
    import hwnas

    began = time.perf_counter()
    load_before = os.getloadavg()
    table = out / name / "latency_table.json"
    table.parent.mkdir(parents=True, exist_ok=True)
    prof = hwnas.profile("cpu-ort-1t", name, table, quick=True, resume=True, progress=False).to_dict()
    checked = hwnas.validate(table, 30, calib_n=30, retest=True, progress=False).to_dict()
    return {"space": name, "op_keys": prof.get("entries"), "profile_s": prof.get("seconds"),
            "validate": {k: checked.get(k) for k in ("within_10pct", "kendall_tau", "mape", "method", "raw",
                                                     "retest", "anchor", "measured_ms")},
            "seconds": round(time.perf_counter() - began, 1), "load_avg": [load_before, os.getloadavg()]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spaces", nargs="+")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--out", default="bench/spaces")
    p.add_argument("--latency-only", action="store_true", help="profile and validate only (no training)")
    args = p.parse_args()
    out = Path(args.out)
    if args.latency_only:
        for name in args.spaces:
            row = bench_latency(name, out)
            (out / name / "bench_latency.json").write_text(json.dumps(row, indent=1, default=str) + "\n")
            print(json.dumps(row, default=str), flush=True)
        return
    rows = []
    for name in args.spaces:
        row = bench_space(name, out, args.epochs)
        (out / name / "bench.json").write_text(json.dumps(row, indent=1, default=str) + "\n")
        rows.append(row)
        print(json.dumps(row, default=str), file=sys.stderr, flush=True)
    print("| space | op keys | profile (s) | within 10 % | Kendall tau | acc largest / smallest (%) | "
          "found: pred ms / acc % | hand-made: pred ms / acc % |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        f, h = r["found"], r["hand_made"]
        print(f"| {r['space']} | {r['op_keys']} | {r['profile_s']} | {r['within_10pct']:.2f} | {r['kendall_tau']:.2f} "
              f"| {r['acc_largest']:.1f} / {r['acc_smallest']:.1f} | {f['predicted_ms']:.3f} / {f['accuracy']:.1f} "
              f"| {h['predicted_ms']:.3f} / {h['accuracy']:.1f} |")


if __name__ == "__main__":
    main()
