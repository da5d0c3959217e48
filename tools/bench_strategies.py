"""Every search strategy on NAS-Bench-201: mean over (accuracy, latency) pairs and seeds.

For each strategy x accuracy column x latency column: `hwnas bench nb201` (the same
`bench` call) with the given query budget over several seeds. Prints one Markdown row per
strategy: hv_ratio (mean over pairs of the mean over seeds), the lowest pair, front
recall, seconds per search; with `--per-pair`, every pair as well. Columns given with
`--holdout` are summarised separately (data not used while developing a strategy).

    OMP_NUM_THREADS=1 python tools/bench_strategies.py --evals 500 --seeds 10 --json strategies.json
    OMP_NUM_THREADS=1 python tools/bench_strategies.py --algo bo --seeds 1 --latency lat_ms_fpga lat_ms_pixel3
    OMP_NUM_THREADS=1 python tools/bench_strategies.py --algo pareto-local-search --latency lat_ms_pixel3 \
        --synthetic wholems stairs interaction   # synthetic devices made from a shipped column
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
from bench_nb201 import ACCURACY, DEFAULT_CSV, latency_columns

from hwnas.errors import InputError
from hwnas.latency.fingerprint import cpu_model
from hwnas.search.strategies import DEFAULT_STRATEGY, strategy_names
from hwnas.search.tabular import SYNTHETIC, bench, synthetic_csv

# strategies that search one objective under a limit (scored by a sweep of limits) are left
# out by default; `bo` too, as it costs minutes per search (run it with --algo bo)
DEFAULT_ALGOS = [DEFAULT_STRATEGY, "nsga2", "random", "grid", "tpe", "rl", "morphism", "zero-cost"]


def merge_results(saved: list[dict[str, list[dict]]], accuracies: list[str], latencies: list[str]) -> dict:
    """Results of several runs, by strategy: a later run's pair replaces an earlier one's; pairs
    in the order of `accuracies` x `latencies` (then any others)."""
    merged: dict[str, dict[tuple[str, str], dict]] = {}
    for results in saved:
        for algo, rows in results.items():
            merged.setdefault(algo, {}).update({(r["accuracy"], r["latency"]): r for r in rows})
    order = {(a, lat): i for i, (a, lat) in enumerate((a, lat) for a in accuracies for lat in latencies)}
    return {algo: sorted(pairs.values(), key=lambda r: order.get((r["accuracy"], r["latency"]), len(order)))
            for algo, pairs in merged.items()}


def summarise(rows: list[dict]) -> dict:
    hv = np.array([r["hv_ratio"] for r in rows])
    worst = int(np.argmin(hv))
    return {"pairs": len(rows), "seeds": rows[0].get("seeds"), "hv_ratio": float(hv.mean()),
            "hv_ratio_min": float(hv[worst]),
            "worst_pair": f"{rows[worst]['accuracy']}/{rows[worst]['latency']}",
            "pairs_below_0.95": int((hv < 0.95).sum()),
            "front_recall": float(np.mean([r["front_recall"] for r in rows])),
            "seconds": float(np.mean([r["seconds"] for r in rows]))}


def run_all(args: argparse.Namespace) -> dict[str, list[dict]]:
    latencies = args.latency or latency_columns(args.csv)
    rows: dict[str, list[dict]] = {a: [] for a in args.algo}
    for algo in args.algo:
        for acc in args.accuracy:
            for lat in latencies:
                r = bench("nb201", args.csv, acc, lat, args.evals, strategy=algo, seed=args.first_seed,
                          seeds=args.seeds, progress=False)
                rows[algo].append(r)
                if args.json_out:  # after every pair, so an interrupted run keeps what it measured
                    Path(args.json_out).write_text(json.dumps({"partial": True, "results": rows}) + "\n")
                print(f"{algo} {acc} {lat}: hv_ratio {r['hv_ratio']:.3f} recall {r['front_recall']:.3f} "
                      f"{r['seconds']:.2f} s/search", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", default=str(DEFAULT_CSV))
    parser.add_argument("--evals", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--accuracy", nargs="+", default=ACCURACY)
    parser.add_argument("--latency", nargs="+", default=None, help="latency columns (default: every lat_ms_*)")
    parser.add_argument("--holdout", nargs="*", default=[],
                        help="latency columns (or ACCURACY:LATENCY pairs) summarised separately")
    parser.add_argument("--algo", nargs="+", default=None, choices=strategy_names(),
                        help=f"default: {' '.join(DEFAULT_ALGOS)}")
    parser.add_argument("--developed-on", nargs="*", default=[],
                        help="the reverse of --holdout: these columns or pairs, every other one held out")
    parser.add_argument("--synthetic", nargs="+", default=None, choices=SYNTHETIC,
                        help="score on these transforms of the --latency columns instead (synthetic devices)")
    parser.add_argument("--per-pair", action="store_true", help="also print every pair's figures")
    parser.add_argument("--json", dest="json_out", default=None, help="write all results here")
    parser.add_argument("--from-json", nargs="+", default=None, metavar="F",
                        help="print the tables of results written by earlier runs (--json) instead of running")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    if args.algo is None:
        args.algo = [] if args.from_json else DEFAULT_ALGOS
    if args.from_json:
        rows = merge_results([json.loads(Path(path).read_text())["results"] for path in args.from_json],
                             args.accuracy, latency_columns(args.csv))
        args.algo = [a for a in args.algo if a in rows] + [a for a in rows if a not in args.algo]
    elif args.synthetic:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "nb201_synthetic.csv"
            args.latency = synthetic_csv(args.csv, args.latency or latency_columns(args.csv), args.synthetic, out)
            args.csv = str(out)
            rows = run_all(args)
    else:
        rows = run_all(args)
    header = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": cpu_model(),
              "cores": os.cpu_count(), "evals": args.evals, "seeds": args.seeds, "first_seed": args.first_seed,
              "holdout": args.holdout, "developed_on": args.developed_on,
              "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "seconds": time.perf_counter() - t0}
    groups = [("all", lambda r: True)]
    if args.holdout or args.developed_on:
        def named(r: dict, names: list[str]) -> bool:
            return r["latency"] in names or f"{r['accuracy']}:{r['latency']}" in names

        def held_out(r: dict) -> bool:
            return named(r, args.holdout) if args.holdout else not named(r, args.developed_on)

        groups += [("developed on", lambda r: not held_out(r)), ("held out", held_out)]
    summary: dict = {}
    seeds = "saved runs" if args.from_json else f"seeds {args.first_seed}-{args.first_seed + args.seeds - 1}"
    print(f"NAS-Bench-201, {args.evals} queries, {seeds} ({header['machine']}, {header['date']})\n")
    for group, keep in groups:
        print(f"{group} pairs:\n")
        print("| strategy | pairs | seeds | mean hv_ratio | lowest pair | pairs < 0.95 | front recall | s / search |")
        print("|---|---|---|---|---|---|---|---|")
        for algo in args.algo:
            chosen = [r for r in rows[algo] if keep(r)]
            if not chosen:
                continue
            s = summary.setdefault(group, {})[algo] = summarise(chosen)
            name = f"{algo} (default)" if algo == DEFAULT_STRATEGY else algo
            print(f"| {name} | {s['pairs']} | {s['seeds']} | {s['hv_ratio']:.3f} "
                  f"| {s['hv_ratio_min']:.3f} ({s['worst_pair']}) | {s['pairs_below_0.95']} "
                  f"| {s['front_recall']:.3f} | {s['seconds']:.2f} |")
        print()
    if args.per_pair:
        print("| accuracy | latency | " + " | ".join(args.algo) + " |")
        print("|---|---|" + "---|" * len(args.algo))
        by_pair = {a: {(r["accuracy"], r["latency"]): r for r in rows[a]} for a in args.algo}
        for r0 in rows[args.algo[0]]:
            pair = (r0["accuracy"], r0["latency"])
            cells = " | ".join(f"{by_pair[a][pair]['hv_ratio']:.3f}" if pair in by_pair[a] else "-"
                               for a in args.algo)
            print(f"| {r0['accuracy'].split('_')[1]} | {r0['latency'].removeprefix('lat_ms_')} | {cells} |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({**header, "summary": summary, "results": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except InputError as exc:  # a bad column or file: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
