"""Latency predictors against measurements: few-shot whole-network fits, calibrated tables.

1. fit-latency on a CSV of measured subnets (default: the public OFA MobileNetV3 GPU
   timings): for every latency column, `train_size` random rows fit the predictor and
   all other rows score it, averaged over `splits` random splits; beside it the FLOPs
   least-squares reference (same splits), the same model fitted on 4,000 rows (how
   far the data's noise lets any arch-only model go), and the median predictor.
2. with `--table T.json` (repeatable): the raw table sum and the calibrated predictor
   of each table against the held-out end-to-end measurements that `hwnas validate`
   stored in its calibration file (run validate first, under the lock).

    /work/venv/bin/python tools/bench_latency_predictor.py --json /tmp/bench_latency_predictor.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hwnas.latency.fingerprint import cpu_model  # noqa: E402
from hwnas.latency.fit import (  # noqa: E402
    WholeNetworkLatencyRegressor,
    fit_latency,
    read_arch_latency_csv,
)
from hwnas.stats import latency_metrics  # noqa: E402

DEFAULT_CSV = REPO.parent / "shared" / "benchmarks" / "ofa_mbv3_gpu_latency.csv"


def csv_columns(path: Path) -> list[str]:
    header = path.read_text().splitlines()[0].split(",")
    return [c for c in header if c.startswith("lat_")]


def ceiling(path: Path, column: str, n_train: int = 4000, seed: int = 0) -> dict:
    archs, y = read_arch_latency_csv(path, column)
    order = np.random.default_rng(seed).permutation(len(archs))
    tr, te = order[:n_train], order[n_train:]
    model = WholeNetworkLatencyRegressor().fit([archs[i] for i in tr], y[tr])
    big = latency_metrics(model.predict([archs[i] for i in te]), y[te])
    median = latency_metrics(np.full(len(te), np.median(y[tr])), y[te])
    return {"within_10pct_4000": big["within_10pct"], "kendall_tau_4000": big["kendall_tau"],
            "within_10pct_median_predictor": median["within_10pct"]}


def table_figures(table: str) -> dict:
    from hwnas.errors import InputError
    from hwnas.latency.predictor import METHODS, LatencyPredictor, calibration_path

    cal_file = calibration_path(table)
    if not cal_file.is_file():
        return {"table": table, "error": f"no calibration beside the table ({cal_file}); run hwnas validate"}
    pred = LatencyPredictor.load(table)
    prov = json.loads(cal_file.read_text())["provenance"]
    held = prov["measurements"]["held_out"]
    archs, ms = [h["arch"] for h in held], np.array([h["ms"] for h in held])
    calib = prov["measurements"]["calibration"]
    calib_archs, calib_ms = [c["arch"] for c in calib], np.array([c["ms"] for c in calib])
    per_method = {}
    for method in METHODS:  # every candidate refitted on the same timings, scored on the held-out ones
        try:
            alt = LatencyPredictor(pred.table, pred.space).fit(calib_archs, calib_ms, methods=[method])
        except InputError:
            continue
        per_method[method] = latency_metrics(alt.predict(archs), ms)
    return {"table": table, "method": pred.calibration.method, "n_calibration": prov["n_measured"],
            "raw": latency_metrics(pred.predict_raw(archs), ms),
            "calibrated": latency_metrics(pred.predict(archs), ms), "per_method": per_method,
            "fitted": prov["fitted"], "device": prov.get("device", {}).get("cpu_model")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--train-size", type=int, default=100)
    ap.add_argument("--splits", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table", action="append", default=[], help="latency table with a calibration (repeatable)")
    ap.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = ap.parse_args()

    out: dict = {"machine": cpu_model(), "date": time.strftime("%Y-%m-%d"), "fit_latency": [], "tables": []}
    if args.csv.is_file():
        print(f"fit-latency on {args.csv.name}: {args.train_size} training rows, mean of {args.splits} splits")
        print(f"{'column':24s} {'within10':>8s} {'tau':>6s} {'mape%':>6s} | {'ref w10':>7s} {'ref tau':>7s} | "
              f"{'4000-row w10':>12s} {'median w10':>10s} {'s':>5s}")
        for col in csv_columns(args.csv):
            t0 = time.perf_counter()
            r = fit_latency(args.csv, col, args.train_size, seed=args.seed, splits=args.splits)
            c = ceiling(args.csv, col)
            sec = time.perf_counter() - t0
            row = {"column": col, **{k: r[k] for k in ("train", "test", "mape", "within_10pct", "kendall_tau")},
                   "reference": r["reference"], **c, "seconds": round(sec, 2)}
            out["fit_latency"].append(row)
            print(f"{col:24s} {r['within_10pct']:8.3f} {r['kendall_tau']:6.3f} {r['mape']:6.2f} | "
                  f"{r['reference']['within_10pct']:7.3f} {r['reference']['kendall_tau']:7.3f} | "
                  f"{c['within_10pct_4000']:12.3f} {c['within_10pct_median_predictor']:10.3f} {sec:5.1f}")
    else:
        print(f"{args.csv} not found: fit-latency figures skipped")
    for table in args.table:
        f = table_figures(table)
        out["tables"].append(f)
        if "error" in f:
            print(f["error"])
            continue
        print(f"{table}: n={f['raw']['n']} held out, calibration '{f['method']}' on {f['n_calibration']} subnets")
        for name in ("raw", "calibrated"):
            m = f[name]
            print(f"  {name:10s} within10 {m['within_10pct']:.3f}  tau {m['kendall_tau']:.3f}  "
                  f"MAPE {m['mape']:.2f} %  mean ratio {m['mean_ratio']:.3f}")
        for method, m in f["per_method"].items():
            print(f"    only {method:13s} within10 {m['within_10pct']:.3f}  tau {m['kendall_tau']:.3f}  "
                  f"MAPE {m['mape']:.2f} %")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
