"""Subnets of a space side by side: TVM compiled with a tuned table's records, ONNX Runtime, untuned TVM.

Subnets are spread over the space's FLOPs (the smallest, the largest and random ones between); each
network is compiled three ways and the three runners are timed in the same interleaved rounds (the
tuned table's protocol, lowest round median kept), so all three see the same machine.

    flock /work/timing.lock python tools/bench_tvm_tuned.py latency_tables/cpu-tvm-tuned-1t_mbv3-small-input.json \
        --n 5 --out /tmp/bench_tvm_tuned.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch


def spread(values: list[float], n: int) -> list[int]:
    """Indices of `n` entries spread evenly over the sorted range of `values`."""
    order = np.argsort(values)
    picks = np.unique(np.round(np.linspace(0, len(order) - 1, n)).astype(int))
    return [int(order[i]) for i in picks]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", help="a latency table profiled with a TVM profile that tunes (options.tune)")
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--ort-profile", default="cpu-ort-1t")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args()

    from hwnas.device_profile import load_profile, profile_from_dict
    from hwnas.export.source import untrained_subnet
    from hwnas.latency.fingerprint import cpu_model
    from hwnas.latency.predictor import LatencyPredictor
    from hwnas.latency.table import LatencyTable
    from hwnas.latency.validate import table_protocol
    from hwnas.runtime.backends import get_backend
    from hwnas.runtime.measure import measure_rounds
    from hwnas.space import get_space

    torch.set_num_threads(1)
    table = LatencyTable.load(args.table)
    if not table.tuning:
        raise SystemExit(f"{args.table}: the table holds no tuning records")
    predictor = LatencyPredictor.load(args.table)
    tvm_profile = profile_from_dict(table.profile)
    untuned_profile = replace(tvm_profile, name=tvm_profile.name + "-untuned",
                              options={**tvm_profile.options, "tune": None})
    ort_profile = load_profile(args.ort_profile)
    protocol = replace(table_protocol(table), anchor=False)
    space = get_space(table.space_name, **{k: v for k, v in table.space.get("config", {}).items() if k != "name"})
    rng = np.random.default_rng(args.seed)
    pool = [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(200)]
    flops = [space.flops(a) for a in pool]
    archs = [pool[i] for i in spread(flops, args.n)]

    tuned_backend = get_backend(tvm_profile, table)
    untuned_backend = get_backend(untuned_profile)
    ort_backend = get_backend(ort_profile)
    rows = []
    began = time.perf_counter()
    for arch in archs:
        net = untrained_subnet(space, arch)
        shape = (1, *space.input_shape(arch))
        runners = {"tvm_tuned": tuned_backend.prepare(net, shape), "onnxruntime": ort_backend.prepare(net, shape),
                   "tvm_untuned": untuned_backend.prepare(net, shape)}
        try:
            results = measure_rounds(runners, protocol, min_round_interval_s=1.0, settle_seconds=30.0)
        finally:
            for r in runners.values():
                r.close()
        row = {"arch": arch, "mflops": round(space.flops(arch) / 1e6, 3), "input": list(shape),
               "predicted_raw_ms": round(float(predictor.predict_raw([arch])[0]), 6),
               "predicted_ms": round(float(predictor.predict([arch])[0]), 6) if predictor.calibration else None}
        for name, (m, medians) in results.items():
            row[f"{name}_ms"] = round(m.median_ms, 6)
            row[f"{name}_round_medians_ms"] = [round(x, 6) for x in medians]
        row["tuned_vs_ort"] = round(row["tvm_tuned_ms"] / row["onnxruntime_ms"], 3)
        row["tuned_vs_untuned"] = round(row["tvm_tuned_ms"] / row["tvm_untuned_ms"], 3)
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)

    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_model(),
              "loadavg": [round(x, 2) for x in os.getloadavg()], "table": args.table, "target": table.tuning["target"],
              "threads": tvm_profile.threads(), "command": " ".join(sys.argv),
              "seconds": round(time.perf_counter() - began, 1), "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print("| MFLOPs | input | TVM tuned ms | ONNX Runtime ms | TVM untuned ms | tuned / ORT | tuned / untuned | "
          "predicted (calibrated) ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        predicted = f"{r['predicted_ms']:.3f}" if r["predicted_ms"] else "-"
        print(f"| {r['mflops']:.2f} | {'x'.join(map(str, r['input']))} | {r['tvm_tuned_ms']:.3f} | "
              f"{r['onnxruntime_ms']:.3f} | {r['tvm_untuned_ms']:.3f} | {r['tuned_vs_ort']:.2f} | "
              f"{r['tuned_vs_untuned']:.2f} | {predicted} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
