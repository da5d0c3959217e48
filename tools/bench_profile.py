"""Profile a device twice and report the time taken and how well the two tables agree.

Run it under the shared lock so nothing else competes for the cores:

    flock /tmp/hwnas-bench.lock python tools/bench_profile.py cpu-ort-1t --space mbv3-small-input

The first run's table goes to --out (default latency_tables/<profile>_<space>.json), the
second to --second (default: a temporary file). Printed as one JSON object: entries and
seconds of each run, and the relative difference |a - b| / ((a + b) / 2) of the medians per
op key (median, p90, max, share within 5 % and 10 %). `--compare A.json B.json` compares two
existing tables without measuring.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from hwnas.latency.profile import default_table_path, profile
from hwnas.latency.table import LatencyTable


def compare_tables(a: LatencyTable, b: LatencyTable) -> dict:
    """Agreement of two tables on their common op keys."""
    common = sorted(set(a.entries) & set(b.entries))
    if not common:
        raise SystemExit("the two tables share no op key")
    x = np.array([a.lookup(k) for k in common])
    y = np.array([b.lookup(k) for k in common])
    rel = np.abs(x - y) / ((x + y) / 2)
    worst = common[int(np.argmax(rel))]
    return {
        "common_entries": len(common),
        "median_rel_diff": round(float(np.median(rel)), 5),
        "p90_rel_diff": round(float(np.percentile(rel, 90)), 5),
        "max_rel_diff": round(float(rel.max()), 5),
        "worst_key": worst,
        "within_5pct": round(float(np.mean(rel <= 0.05)), 4),
        "within_10pct": round(float(np.mean(rel <= 0.10)), 4),
        "sum_ms": [round(float(x.sum()), 4), round(float(y.sum()), 4)],
        "median_cv": [round(float(np.median([a.entries[k]["cv"] for k in common])), 5),
                      round(float(np.median([b.entries[k]["cv"] for k in common])), 5)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("device_profile", nargs="?", help="device profile YAML or shipped name")
    parser.add_argument("--space", default="mbv3-small-input")
    parser.add_argument("--out", default=None, help="first run's table")
    parser.add_argument("--second", default=None, help="second run's table (default: a temporary file)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="only compare two existing tables")
    args = parser.parse_args(argv)

    if args.compare:
        a, b = (LatencyTable.load(p) for p in args.compare)
        print(json.dumps({"tables": args.compare, **compare_tables(a, b)}, indent=1))
        return 0
    if not args.device_profile:
        parser.error("a device profile is needed unless --compare is given")

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        first = Path(args.out) if args.out else None
        second = Path(args.second) if args.second else Path(tmp) / "second.json"
        for out in (first, second):
            result = profile(args.device_profile, args.space, out, overwrite=True, quick=args.quick)
            runs.append({k: result[k] for k in ("table", "entries", "measurements", "rounds", "seconds")})
            print(f"run {len(runs)}: {result['entries']} entries in {result['seconds']:.1f} s", file=sys.stderr)
        tables = [LatencyTable.load(r["table"]) for r in runs]
        report = {
            "profile": tables[0].profile_name,
            "space": args.space,
            "quick": args.quick,
            "cpu_model": tables[0].device.get("cpu_model"),
            "cpu_cores": tables[0].device.get("cpu_cores"),
            "runs": runs,
            **compare_tables(*tables),
        }
        if first is None:
            report["runs"][0]["table"] = str(default_table_path(tables[0].profile_name, args.space))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
