"""Benchmark `hwnas export` on subnets of a space: ONNX and TVM parity, ONNX Runtime vs TVM latency
(untuned, and tuned with a small MetaSchedule trial budget).

Subnets: the Pareto set of a search run (--run R/pareto.json, spread over its latency range), or
subnets of the space spread over FLOPs (--space). Each is exported to a temporary bundle with
the profile's protocol and threads; the figures come from the bundle manifests.

    flock /tmp/hwnas-bench.lock python tools/bench_export.py --space mbv3-small-input --n 5 \
        --profile cpu-ort-1t --tune-trials 16 --out /tmp/bench_export.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def spread(values: list[float], n: int) -> list[int]:
    """Indices of `n` entries spread evenly over the sorted range of `values`."""
    order = np.argsort(values)
    picks = np.unique(np.round(np.linspace(0, len(order) - 1, n)).astype(int))
    return [int(order[i]) for i in picks]


def subnets(args) -> list[dict]:
    from hwnas.export.source import select_from_run
    from hwnas.space import get_space

    if args.run:
        record = json.loads(Path(args.run).read_text())
        lat = [e["objectives"].get("latency_ms", 0.0) for e in record["pareto"]]
        return [{"selection": select_from_run(args.run, str(i)), "label": f"pareto[{i}]"}
                for i in spread(lat, args.n)]
    space = get_space(args.space)
    rng = np.random.default_rng(args.seed)
    pool = [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(200)]
    flops = [space.flops(a) for a in pool]
    return [{"arch": pool[i], "space": space, "label": f"{flops[i] / 1e6:.2f} MFLOPs"} for i in spread(flops, args.n)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="mbv3-small-input")
    parser.add_argument("--run", default=None, help="a search run's pareto.json (its Pareto set is exported)")
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--profile", default="cpu-ort-1t")
    parser.add_argument("--tune-trials", type=int, default=16, help="MetaSchedule trials (0: untuned only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args()

    from hwnas.device_profile import load_profile
    from hwnas.errors import NotAvailableError
    from hwnas.export import export, export_selection
    from hwnas.export.source import untrained_subnet
    from hwnas.latency.fingerprint import cpu_model

    torch.set_num_threads(1)
    profile = load_profile(args.profile)
    rows = []
    began = time.perf_counter()
    tuning_unavailable = None
    for item in subnets(args):
        row = {"subnet": item["label"]}
        for trials in ([0, args.tune_trials] if args.tune_trials else [0]):
            if trials and tuning_unavailable:
                row["tuned"] = tuning_unavailable  # the same build fails the same way: not retried per subnet
                continue
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                try:
                    if "selection" in item:
                        result = export_selection(item["selection"], Path(tmp) / "D", formats="onnx,tvm",
                                                  profile=profile, tune_trials=trials, untrained=True, progress=False)
                    else:
                        space, arch = item["space"], item["arch"]
                        result = export(untrained_subnet(space, arch), space.input_shape(arch), Path(tmp) / "D",
                                        formats="onnx,tvm", profile=profile, tune_trials=trials, arch=arch,
                                        space=space.config(), progress=False)
                except NotAvailableError as exc:
                    tuning_unavailable = row["tuned"] = f"not available: {exc}"
                    print(f"{item['label']}: tuning with {trials} trials not available: {exc}", file=sys.stderr)
                    continue
                seconds = time.perf_counter() - t0
            m = result.manifest
            measured = m["latency"]["measured"]
            key = "untuned" if trials == 0 else f"tuned{trials}"
            if trials == 0:
                row.update({
                    "input": m["input_shape"],
                    "onnx_max_abs_diff": m["parity"]["onnxruntime_vs_torch"]["max_abs_diff"],
                    "tvm_max_abs_diff": m["parity"]["tvm_vs_torch"]["max_abs_diff"],
                    "ort_ms": measured["onnxruntime"]["median_ms"], "ort_cv": measured["onnxruntime"]["cv"],
                    "ort_round_medians_ms": measured["onnxruntime"].get("round_medians_ms"),
                    "ort_settled": measured["onnxruntime"].get("settled"),
                    "predicted_ms": m["latency"].get("predicted_ms"),
                })
                if row["predicted_ms"]:
                    row["ort_error_pct"] = round(100 * (row["ort_ms"] / row["predicted_ms"] - 1), 2)
            row[f"tvm_{key}_ms"] = measured["tvm"]["median_ms"]
            row[f"tvm_{key}_cv"] = measured["tvm"]["cv"]
            row[f"export_{key}_s"] = round(seconds, 1)
            print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)

    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_model(),
              "profile": profile.name, "threads": profile.threads(), "tune_trials": args.tune_trials,
              "tuning": tuning_unavailable or "ran", "command": " ".join(sys.argv),
              "seconds": round(time.perf_counter() - began, 1), "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print("| subnet | input | ONNX-torch max diff | TVM-ORT max diff | predicted ms | ORT ms | error | "
          "TVM untuned ms | TVM tuned ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        tuned = r.get(f"tvm_tuned{args.tune_trials}_ms")
        tuned = f"{tuned:.3f}" if tuned is not None else ("n/a" if args.tune_trials else "-")
        predicted = f"{r['predicted_ms']:.3f}" if r.get("predicted_ms") else "-"
        error = f"{r['ort_error_pct']:+.1f} %" if "ort_error_pct" in r else "-"
        print(f"| {r['subnet']} | {r['input']} | {r['onnx_max_abs_diff']:.2e} | {r['tvm_max_abs_diff']:.2e} | "
              f"{predicted} | {r['ort_ms']:.3f} | {error} | {r['tvm_untuned_ms']:.3f} | {tuned} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
