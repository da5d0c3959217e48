"""Accuracy predictor vs measured supernet accuracy on held-out subnets (and the zero-cost proxies).

    flock /tmp/hwnas-bench.lock /work/venv/bin/python tools/bench_accuracy_predictor.py \
        --checkpoint bench/supernet.pt --n-train 300 --n-test 200 --pairs bench/pairs.json

Samples n_train + n_test random subnets, measures each with the supernet on the validation
split carved from the training set (BN recalibrated on training batches), fits the MLP
predictor on the first n_train and reports RMSE and Kendall tau on the other n_test. The
measured pairs are saved as they come (an interrupted run resumes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from hwnas.estimate import AccuracyPredictor, SupernetEstimator, ZeroCostEstimator, kendall_tau
from hwnas.io import atomic_write_json
from hwnas.train import load_checkpoint


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="bench/supernet.pt")
    p.add_argument("--n-train", type=int, default=300)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--pairs", default="bench/pairs.json", help="measured (arch, accuracy) pairs, resumable")
    p.add_argument("--predictor-out", default=None, help="save the fitted predictor here")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--recal-batches", type=int, default=16)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--result", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    load_avg_start = os.getloadavg()

    supernet, meta = load_checkpoint(args.checkpoint)
    supernet.to(memory_format=torch.channels_last)
    # 16 x 128 recalibration images: with 4 x 128 the BN statistics' noise (~0.7 points) rivals
    # the accuracy spread between subnets
    estimator = SupernetEstimator(supernet=supernet, meta=meta, split="val", recal_batches=args.recal_batches)
    space = supernet.space
    rng = np.random.default_rng(args.seed)
    archs, seen = [], set()
    while len(archs) < args.n_train + args.n_test:  # distinct subnets only
        a = space.sample(rng)
        key = tuple(space.encode(a).tolist())
        if key not in seen:
            seen.add(key)
            archs.append(a)
    pairs = {}
    if os.path.exists(args.pairs):
        with open(args.pairs) as f:
            pairs = {tuple(p["x"]): p["acc"] for p in json.load(f)["pairs"]}
    t0 = time.perf_counter()
    measured_now = 0
    for i, a in enumerate(tqdm(archs, desc="measuring subnets", file=sys.stderr)):
        key = tuple(space.encode(a).tolist())
        if key not in pairs:
            pairs[key] = estimator.accuracy(a)
            measured_now += 1
        if (i + 1) % 25 == 0 or i + 1 == len(archs):
            atomic_write_json(args.pairs, {"checkpoint": args.checkpoint, "split": "val",
                                           "pairs": [{"x": list(k), "acc": v} for k, v in pairs.items()]})
    measure_seconds = time.perf_counter() - t0
    acc = np.array([pairs[tuple(space.encode(a).tolist())] for a in archs])
    train_a, test_a = archs[: args.n_train], archs[args.n_train :]
    train_y, test_y = acc[: args.n_train], acc[args.n_train :]

    t1 = time.perf_counter()
    predictor = AccuracyPredictor(space, seed=args.seed).fit(train_a, train_y)
    fit_seconds = time.perf_counter() - t1
    held_out = predictor.score(test_a, test_y)
    if args.predictor_out:
        predictor.save(args.predictor_out)
    many = [space.sample(rng) for _ in range(10_000)]
    t2 = time.perf_counter()
    predictor.predict(many)
    predict_10k_seconds = time.perf_counter() - t2

    proxies = {}
    for proxy in ("synflow", "naswot"):
        est = ZeroCostEstimator(space, proxy=proxy)
        scores = est.predict(test_a)
        proxies[proxy] = {"kendall_tau": kendall_tau(scores, test_y)}
    flops_tau = kendall_tau([space.flops(a) for a in test_a], test_y)

    result = {
        "checkpoint": args.checkpoint, "n_train": args.n_train, "n_test": args.n_test,
        "recal_images": args.recal_batches * 128, "val_images": len(estimator.eval_data.test_y),
        "measured_accuracy": {"min": float(acc.min()), "max": float(acc.max()), "mean": float(acc.mean()),
                              "std": float(acc.std())},
        "predictor_held_out": held_out, "predictor_train": predictor.metrics["train"],
        "zero_cost_held_out": proxies, "macs_kendall_tau": flops_tau,
        "seconds": {"measure": round(measure_seconds, 1), "measured_now": measured_now,
                    "fit": round(fit_seconds, 2), "predict_10000": round(predict_10k_seconds, 3),
                    "total": round(time.perf_counter() - started, 1)},
        "machine": {"cpu": next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                                 if ln.startswith("model name")), "?"), "cores": os.cpu_count(),
                    "threads": torch.get_num_threads(), "load_avg_start": load_avg_start,
                    "load_avg_end": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")},
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.result:
        with open(args.result, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
