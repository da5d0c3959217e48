"""Can the demo's accuracy estimates be trusted? N demo seeds: per seed, Kendall tau between the
evaluated subnets' accuracy estimates and their MACs, and the exported subnet's estimate against its
test accuracy (within its 95 % interval, 1.96 combined standard errors, or not; and within one).

    python tools/bench_demo_signal.py --seeds 0,1,2,3,4 --out bench/demo-signal            # train + search
    python tools/bench_demo_signal.py --seeds 0,1,2,3,4 --out bench/demo-signal --full     # whole demos

Without --full each seed runs the demo's train and search steps at the demo's settings (the test
accuracy is then the picked subnet's shared weights on the test split, what the bundle's model.onnx
computes); --full runs `hwnas demo` itself (export and latency measurement included). With
--test-evaluated every evaluated subnet is scored on the test split too: tau(test accuracy, MACs) tells
whether the supernet's subnets rise with size at all, tau(estimate, test accuracy) how faithfully the
search's estimates rank them. A seed folder that holds a finished supernet.pt is reused (its training
is not run again).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from hwnas.demo import DEMO_EPOCHS, signal_benchmark
from hwnas.errors import InputError, OutputError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated demo seeds (default 0,1,2,3,4)")
    parser.add_argument("--out", required=True, help="folder for the runs (one sub-folder per seed)")
    parser.add_argument("--full", action="store_true", help="run the whole demo per seed")
    parser.add_argument("--epochs", type=int, default=DEMO_EPOCHS)
    parser.add_argument("--table", default=None, help="a calibrated latency table to search with (e.g. a demo's "
                        "latency_table.json, its calibration beside it); default: the shipped one, uncalibrated")
    parser.add_argument("--max-time", default="10m", help="the search's time limit, as the demo's (default 10m); "
                        "'none': every evaluation of pop x gens")
    parser.add_argument("--test-evaluated", action="store_true", help="also score every evaluated subnet on the "
                        "test split: tau(test, MACs) says whether the supernet's subnets rise with size, "
                        "tau(estimate, test) how faithfully the estimates rank them")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the records as JSON")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    load_start = os.getloadavg()
    max_time = None if args.max_time.lower() == "none" else args.max_time
    try:
        records = signal_benchmark(args.out, seeds, full=args.full, epochs=args.epochs, table=args.table,
                                   max_time=max_time, test_evaluated=args.test_evaluated)
    except (InputError, OutputError) as exc:  # a bad table or folder: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{'seed':>4}  {'tau(acc,MACs)':>13}  {'estimate (val)':>16}  {'test':>16}  {'test-est':>8}  "
          f"{'se':>5}  95%  1se  ties  seconds" + ("  tau(test,MACs)  tau(est,test)" if args.test_evaluated else ""))
    for r in records:
        e, t, a = r["estimate"], r["test"], r["estimate_vs_test"] or {}
        print(f"{r['seed']:>4}  {r['kendall_tau_accuracy_macs']:>13.3f}  {e['percent']:>9.2f} ± {e['stderr']:.2f}  "
              f"{t['percent']:>9.2f} ± {t['stderr']:.2f}  {a.get('difference', float('nan')):>+8.2f}  "
              f"{a.get('stderr', float('nan')):>5.2f}  {_yes(a.get('within')):>3}  {_yes(a.get('within_1se')):>3}  "
              f"{r['tied']!s:>4}  {r['seconds']:>7}"
              + (f"  {r['kendall_tau_test_macs']:>14.3f}  {r['kendall_tau_estimate_test']:>13.3f}"
                 if args.test_evaluated else ""))
    taus = np.array([r["kendall_tau_accuracy_macs"] for r in records], dtype=float)
    within = sum(bool((r["estimate_vs_test"] or {}).get("within")) for r in records)
    within_1se = sum(bool((r["estimate_vs_test"] or {}).get("within_1se")) for r in records)
    print(f"tau: mean {taus.mean():.3f}, min {taus.min():.3f}; test accuracy within the estimate's 95 % interval "
          f"on {within} of {len(records)} seeds, within one standard error on {within_1se}; "
          f"load average {load_start} at start, "
          f"{os.getloadavg()} at the end", file=sys.stderr)
    if args.test_evaluated:
        sizes = np.mean([r["kendall_tau_test_macs"] for r in records])
        faithful = np.mean([r["kendall_tau_estimate_test"] for r in records])
        print(f"tau(test accuracy, MACs): mean {sizes:.3f}; tau(estimate, test accuracy): mean {faithful:.3f}",
              file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"records": records, "load_average_start": load_start, "load_average_end": os.getloadavg(),
                       "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "full_demo": args.full}, f, indent=1)
    return 0


def _yes(flag) -> str:
    return "-" if flag is None else ("yes" if flag else "no")


if __name__ == "__main__":
    sys.exit(main())
