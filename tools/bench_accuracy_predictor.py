"""Accuracy predictor vs measured supernet accuracy on held-out subnets (and the zero-cost proxies).

    flock /tmp/hwnas-bench.lock /work/venv/bin/python tools/bench_accuracy_predictor.py \
        --checkpoint bench/supernet.pt --n-train 400 --n-test 200 --repeat 100 --pairs bench/pairs.json

    flock /tmp/hwnas-bench.lock nice -n 5 /work/venv/bin/python tools/bench_accuracy_predictor.py \
        --checkpoint bench/supernet.pt --eval-set heldout --eval-images 10000 --n-train 300 --n-test 200 \
        --extra-train 1000 --repeat 100 --check-path 5 --curve 300,600 --threads 1 \
        --pairs bench/pairs_heldout.json

Samples n_train + n_test random subnets, measures each with the supernet on the validation
split carved from the training set (BN recalibrated on one fixed set of training images),
or with `--eval-set heldout` on the first `--eval-images` of the full Fashion-MNIST's images
outside the shipped subset (Debian's dataset-fashion-mnist; many more images than the
validation split, so a less noisy measurement of both the training and the held-out subnets),
fits the predictor (`--predictor gp`, the default: RBF + linear kernel ridge on the one-hot
code, also once per resolution, log MACs and parameters, the choices as numbers and each subnet's
closeness to the smallest and the largest subnet per resolution, its kernel chosen by
cross-validation on the training pairs only;
`--predictor mlp`: the MLP of before, also reported beside the gp) on the first n_train (and the
extra ones) and reports RMSE and Kendall tau on the other n_test. Each subnet is evaluated on the
extracted subnet with BN folded into its convolutions (`--dynamic`: through the supernet, the
reference path; `--check-path N` measures N held-out subnets both ways). `--repeat N` measures
N of the held-out subnets again with another draw of recalibration images and reports the
measurement's test-retest agreement (two independent halves of the evaluation images): the
ceiling any predictor's tau is bounded by. The measured pairs (with per-image outcomes) are
saved as they come (an interrupted run resumes). Two processes can share the measuring: the
second runs with `--reverse` and its own `--pairs` file; the fit then reads both
(`--also-pairs`), with `--measured-only` so that it measures nothing more.

`--export-pairs F.json.gz` writes the measured pairs without their per-image outcomes (about 20 kB
per 1,000 subnets), with the settings and the checkpoint's training figures; `--from-pairs F.json.gz`
fits and scores the predictor on such a file alone (no checkpoint, no data, nothing measured):

    python tools/bench_accuracy_predictor.py --from-pairs tools/data/accuracy_pairs_mbv3-small-input.json.gz
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's hwnas, whatever is installed

from hwnas.errors import InputError  # noqa: E402
from hwnas.estimate import AccuracyPredictor, SupernetEstimator, ZeroCostEstimator  # noqa: E402
from hwnas.estimate.predictor import GP_GRID  # noqa: E402
from hwnas.io import atomic_write_bytes, atomic_write_json  # noqa: E402
from hwnas.stats import kendall_tau  # noqa: E402
from hwnas.train import load_checkpoint  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="bench/supernet.pt")
    p.add_argument("--n-train", type=int, default=300)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--extra-train", type=int, default=0,
                   help="more training subnets, sampled after the held-out ones (which stay the same)")
    p.add_argument("--eval-set", choices=("val", "heldout"), default="val",
                   help="val: the supernet's 2,000-image validation split; heldout: full Fashion-MNIST images "
                        "outside the shipped subset (needs /usr/share/datasets/fashion-mnist)")
    p.add_argument("--eval-images", type=int, default=None,
                   help="evaluate on the first this many images of the evaluation set (default: all)")
    p.add_argument("--test-eval-images", type=int, default=None,
                   help="measure the held-out subnets on the first this many evaluation images (default: as "
                        "--eval-images): a more precise measurement to score against; their accuracy on the first "
                        "--eval-images of them (a prefix) is scored too")
    p.add_argument("--test-pairs", default=None,
                   help="where the held-out subnets measured with --test-eval-images are kept, resumable "
                        "(default: beside --pairs, named after the image count)")
    p.add_argument("--pairs", default=None, help="measured (arch, accuracy) pairs, resumable "
                   "(default bench/pairs.json, or bench/pairs_heldout.json with --eval-set heldout)")
    p.add_argument("--also-pairs", nargs="+", default=[],
                   help="more pairs files measured with the same settings (e.g. by a second process run with "
                        "--reverse, or an --export-pairs file of the same checkpoint); merged into --pairs")
    p.add_argument("--reverse", action="store_true",
                   help="measure the subnet list from its end: a second process shares the work, writing its own "
                        "--pairs file")
    p.add_argument("--measured-only", action="store_true",
                   help="measure no training subnet: fit on those already in the pairs files (the held-out "
                        "subnets are measured where missing)")
    p.add_argument("--predictor-out", default=None, help="save the fitted predictor here")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--recal-batches", type=int, default=16)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeat", type=int, default=0,
                   help="measure this many held-out subnets again with other recalibration images: "
                        "the measurement's test-retest repeatability")
    p.add_argument("--predictor", choices=("gp", "mlp"), default="gp",
                   help="gp: RBF + linear kernel ridge on the one-hot code (also per resolution), log MACs and "
                        "parameters, the choices as numbers and the closeness to the smallest and largest subnet "
                        "per resolution, kernel chosen by 5-fold CV on the training pairs; mlp: the MLP on the "
                        "one-hot code, log MACs and parameters")
    p.add_argument("--kernel-ell", default=None, metavar="LIST",
                   help="with --predictor gp: the length scales the CV chooses from, a comma list (default: "
                        "those of hwnas.estimate.predictor.GP_GRID); the grid is every (ell, noise, lin) combination")
    p.add_argument("--kernel-noise", default=None, metavar="LIST", help="the noises, likewise")
    p.add_argument("--kernel-lin", default=None, metavar="LIST", help="the linear weights, likewise")
    p.add_argument("--curve", default="",
                   help="also fit on the first N training subnets for each N of this comma list (the held-out "
                        "subnets stay the same): tau against the training set's size")
    p.add_argument("--dynamic", action="store_true",
                   help="evaluate through the dynamic supernet (the reference path, ~2x slower) instead of the "
                        "extracted subnet with BN folded into its convolutions")
    p.add_argument("--check-path", type=int, default=0,
                   help="measure this many held-out subnets with the other evaluation path as well and report "
                        "how far the two paths' accuracies differ")
    p.add_argument("--export-pairs", default=None, metavar="PATH.json.gz",
                   help="write every measured pair (merged with --also-pairs) without the per-image outcomes, with "
                        "the settings and the checkpoint's provenance, gzipped: what --from-pairs fits on")
    p.add_argument("--from-pairs", default=None, metavar="PATH.json.gz",
                   help="fit and score on pairs written by --export-pairs: no checkpoint, no data, nothing measured "
                        "(the subnet list is drawn again from the file's seed and space)")
    p.add_argument("--result", default=None)
    args = p.parse_args()
    args.kernel_grid = kernel_grid(args, p)
    if args.from_pairs:
        fit_from_pairs(args)
        return
    if args.pairs is None:
        args.pairs = "bench/pairs.json" if args.eval_set == "val" else "bench/pairs_heldout.json"
    if args.eval_images is not None and args.eval_images < 2:
        p.error("--eval-images must be at least 2")
    if args.test_eval_images is not None and args.test_eval_images < 2:
        p.error("--test-eval-images must be at least 2")
    separate_test = args.test_eval_images is not None and args.test_eval_images != args.eval_images
    if separate_test and (args.repeat or args.check_path):
        p.error("--repeat and --check-path measure the held-out subnets on --eval-images; not with --test-eval-images")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    load_avg_start = os.getloadavg()

    # the measured quantity: accuracy on the evaluation images after recalibrating BN on one
    # fixed set of training images shared by every subnet
    try:
        supernet, meta = load_checkpoint(args.checkpoint)
        supernet.to(memory_format=torch.channels_last)
        estimator = SupernetEstimator(supernet=supernet, meta=meta, split=args.eval_set,
                                      recal_batches=args.recal_batches, eval_limit=args.eval_images,
                                      fused=not args.dynamic)
    except InputError as exc:
        _fail(f"{exc}")
    test_estimator = estimator
    if separate_test:
        test_estimator = SupernetEstimator(supernet=supernet, meta=meta, split=args.eval_set,
                                           recal_batches=args.recal_batches, eval_limit=args.test_eval_images,
                                           fused=not args.dynamic)
        if test_estimator.eval_size < estimator.eval_size:
            _fail(f"--test-eval-images gives {test_estimator.eval_size} images, fewer than the "
                     f"{estimator.eval_size} of --eval-images")
    space = supernet.space
    rng = np.random.default_rng(args.seed)
    subnets = distinct_subnets(space, rng)
    archs = [next(subnets) for _ in range(args.n_train + args.n_test + args.extra_train)]
    n_val = estimator.eval_size
    store = {"checkpoint": args.checkpoint, "split": args.eval_set, "val_images": n_val,
             "recal_images": args.recal_batches * 128, "recal_seed": estimator.recal_seed, "pairs": []}
    if os.path.exists(args.pairs):
        with open(args.pairs) as f:
            old = json.load(f)
        if (old.get("split", "val") == args.eval_set and old.get("val_images") == n_val
                and old.get("recal_images") == store["recal_images"]):
            store = old
    pairs = {tuple(p["x"]): p for p in store["pairs"]}
    for path in args.also_pairs:
        other = read_pairs(path)
        if any(other.get(k) != store.get(k) for k in ("split", "val_images", "recal_images", "recal_seed")):
            _fail(f"{path}: measured with other settings (split, val_images, recal_images, recal_seed) "
                     f"than {args.pairs}")
        if other.get("format") == PAIRS_FORMAT:  # an --export-pairs file: its checkpoint must be this one
            if (other["seed"], other["n_train"], other["n_test"]) != (args.seed, args.n_train, args.n_test):
                _fail(f"{path}: drawn with seed {other['seed']}, n_train {other['n_train']}, n_test "
                      f"{other['n_test']}; this run asks {args.seed}, {args.n_train}, {args.n_test}")
            mine = (meta.get("acc_largest"), meta.get("acc_smallest"))
            theirs = (other["checkpoint"].get("acc_largest"), other["checkpoint"].get("acc_smallest"))
            if mine != theirs:
                _fail(f"{path}: measured on a supernet whose largest/smallest subnets scored {theirs}, "
                      f"not this checkpoint's {mine}")
        pairs.update({tuple(p["x"]): p for p in other["pairs"] + other.get("held_out", [])})
    test_pairs, test_store = pairs, store
    if separate_test:
        n_tv = test_estimator.eval_size
        args.test_pairs = args.test_pairs or f"{os.path.splitext(args.pairs)[0]}_test{n_tv}.json"
        test_store = {**{k: v for k, v in store.items() if k not in ("pairs", "repeat")}, "val_images": n_tv,
                      "pairs": []}
        if os.path.exists(args.test_pairs):
            with open(args.test_pairs) as f:
                old = json.load(f)
            if any(old.get(k) != test_store.get(k) for k in ("split", "val_images", "recal_images", "recal_seed")):
                _fail(f"{args.test_pairs}: measured with other settings (split, val_images, recal_images, "
                         f"recal_seed) than asked")
            test_store = old
        test_pairs = {tuple(p["x"]): p for p in test_store["pairs"]}
    n_core = args.n_train + args.n_test  # always measured: the first training and the held-out subnets
    t0 = time.perf_counter()
    measured_now = 0
    order = list(enumerate(archs))[:: -1 if args.reverse else 1]
    if separate_test and not args.reverse:  # the held-out subnets first: what every fit is scored on
        order = order[args.n_train:n_core] + order[: args.n_train] + order[n_core:]
    for done, (i, a) in enumerate(tqdm(order, desc="measuring subnets", file=sys.stderr), start=1):
        key = tuple(space.encode(a).tolist())
        held_out = args.n_train <= i < n_core
        into, by = (test_pairs, test_estimator) if held_out else (pairs, estimator)
        if key not in into and not (args.measured_only and not held_out):
            correct, loss = by.outcomes(a)
            into[key] = {"x": list(key), "acc": 100.0 * float(correct.mean()), "loss": float(loss.mean()),
                         "correct": pack(correct)}
            measured_now += 1
            if separate_test and held_out and len(test_pairs) % 5 == 0:
                test_store["pairs"] = list(test_pairs.values())
                atomic_write_json(args.test_pairs, test_store)
        if done % 25 == 0 or done == len(order):
            store["pairs"] = list(pairs.values())
            atomic_write_json(args.pairs, store)
            if separate_test:
                test_store["pairs"] = list(test_pairs.values())
                atomic_write_json(args.test_pairs, test_store)
    measure_seconds = time.perf_counter() - t0
    if args.export_pairs:
        export_pairs(args, meta, space, store, pairs, test_pairs, archs, n_core)
    n_first = args.n_train
    if args.measured_only:  # training subnets not measured (yet) are left out, the held-out ones never
        def in_pairs(a: dict) -> bool:
            return tuple(space.encode(a).tolist()) in pairs

        first = [a for a in archs[: args.n_train] if in_pairs(a)]
        archs, n_first = first + archs[args.n_train : n_core] + [a for a in archs[n_core:] if in_pairs(a)], len(first)
    measured = {**pairs, **test_pairs}  # the held-out subnets' own measurement wins
    acc = np.array([measured[tuple(space.encode(a).tolist())]["acc"] for a in archs])
    loss = np.array([measured[tuple(space.encode(a).tolist())]["loss"] for a in archs])
    # extra training subnets come after the held-out ones: the held-out set stays the same
    held = slice(n_first, n_first + args.n_test)
    train_a = archs[:n_first] + archs[held.stop :]
    train_y = np.concatenate([acc[:n_first], acc[held.stop :]])
    test_a, test_y = archs[held], acc[held]

    path_check = None
    if args.check_path:
        path_check = check_path(args, estimator, supernet, meta, space, test_a[: args.check_path], pairs)

    repeat = None
    if args.repeat:
        repeat = repeatability(args, supernet, meta, space, test_a[: args.repeat], pairs, store)

    options = predictor_options(args)
    t1 = time.perf_counter()
    predictor = AccuracyPredictor(space, seed=args.seed, **options).fit(train_a, train_y)
    fit_seconds = time.perf_counter() - t1
    held_out = predictor.score(test_a, test_y)
    held_out["kendall_tau_bootstrap_se"] = bootstrap_tau_se(predictor.predict(test_a), test_y)
    test_precise = None
    if separate_test:  # the same held-out subnets, scored on the first --eval-images of their images as well
        n_val_t = test_estimator.eval_size
        outcomes = np.array([unpack(test_pairs[tuple(space.encode(a).tolist())]["correct"], n_val_t) for a in test_a])
        prefix_y = 100.0 * outcomes[:, :n_val].mean(1)
        half = np.zeros(n_val_t, dtype=bool)
        half[np.random.default_rng(12345).permutation(n_val_t)[: n_val_t // 2]] = True
        r_half = float(np.corrcoef(outcomes[:, half].mean(1), outcomes[:, ~half].mean(1))[0, 1])
        reliability = 2 * r_half / (1 + r_half) if r_half > 0 else 0.0
        test_precise = {
            "test_images": n_val_t,
            "predictor_against_first_eval_images": predictor.score(test_a, prefix_y),
            "kendall_tau_first_eval_images_vs_all": kendall_tau(prefix_y, test_y),
            "split_half_pearson": r_half, "reliability_same_recal": reliability,
            "kendall_tau_ceiling_same_recal": float(2 / np.pi * np.arcsin(np.sqrt(max(reliability, 0.0)))),
            "accuracy": {"min": float(test_y.min()), "max": float(test_y.max()), "std": float(test_y.std())},
        }
    baseline = None
    if args.predictor != "mlp":  # the MLP of before on the same pairs
        baseline = AccuracyPredictor(space, seed=args.seed).fit(train_a, train_y).score(test_a, test_y)
    curve = {}
    for n in [int(v) for v in args.curve.split(",") if v.strip()]:
        if n <= len(train_a):
            row = {}
            for name, opts in (("this", options), ("mlp", {})):
                row[name] = AccuracyPredictor(space, seed=args.seed, **opts).fit(
                    train_a[:n], train_y[:n]).score(test_a, test_y)
            curve[n] = row
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
        "checkpoint": args.checkpoint, "n_train": len(train_a), "n_test": args.n_test,
        "recal_images": args.recal_batches * 128, "eval_set": args.eval_set, "val_images": n_val,
        "measured_accuracy": {"min": float(acc.min()), "max": float(acc.max()), "mean": float(acc.mean()),
                              "std": float(acc.std())},
        "measured_loss": {"kendall_tau_with_accuracy": kendall_tau(-loss, acc)},
        "repeatability": repeat, "eval_path": "dynamic" if args.dynamic else "fused",
        "path_check": path_check,
        "predictor": args.predictor, "predictor_options": options, "predictor_held_out": held_out,
        "held_out_measured_on": test_precise,
        "predictor_train": predictor.metrics["train"], "predictor_kernel": predictor.metrics.get("kernel"),
        "mlp_baseline_held_out": baseline, "curve": curve,
        "zero_cost_held_out": proxies, "macs_kendall_tau": flops_tau,
        "seconds": {"measure": round(measure_seconds, 1), "measured_now": measured_now,
                    "fit": round(fit_seconds, 2), "predict_10000": round(predict_10k_seconds, 3),
                    "total": round(time.perf_counter() - started, 1)},
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(),
                    "threads": torch.get_num_threads(), "load_avg_start": load_avg_start,
                    "load_avg_end": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")},
    }
    write_result(args, result)


PAIRS_FORMAT = "hwnas-accuracy-pairs"


def export_pairs(args, meta: dict, space, store: dict, pairs: dict, test_pairs: dict, archs: list[dict],
                 n_core: int) -> None:
    """The measured pairs without per-image outcomes (a few hundred kB gzipped), with their provenance."""
    held = {tuple(space.encode(a).tolist()) for a in archs[args.n_train:n_core]}
    slim = {"format": PAIRS_FORMAT, "space": space.name,
            "space_config": {k: v for k, v in space.config().items() if k != "name"},
            "seed": args.seed, "n_train": args.n_train, "n_test": args.n_test,
            "split": store["split"], "val_images": store["val_images"], "recal_images": store["recal_images"],
            "recal_seed": store["recal_seed"],
            "checkpoint": {"path": args.checkpoint, "acc_largest": meta.get("acc_largest"),
                           "acc_smallest": meta.get("acc_smallest"), "epoch": meta.get("epoch"),
                           "settings": meta.get("settings")},
            "measured_on": {"cpu": _cpu_name(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")},
            "held_out": [{"x": list(k), "acc": round(test_pairs[k]["acc"], 4), "loss": round(test_pairs[k]["loss"], 6)}
                         for k in (tuple(space.encode(a).tolist()) for a in archs[args.n_train:n_core])
                         if k in test_pairs],
            "pairs": [{"x": list(k), "acc": round(v["acc"], 4), "loss": round(v["loss"], 6)}
                      for k, v in pairs.items() if k not in held]}
    data = gzip.compress(json.dumps(slim, separators=(",", ":")).encode(), mtime=0)
    atomic_write_bytes(args.export_pairs, data)
    print(f"wrote {len(slim['pairs'])} training and {len(slim['held_out'])} held-out pairs to {args.export_pairs} "
          f"({len(data) / 1e3:.0f} kB)", file=sys.stderr)


def read_pairs(path: str) -> dict:
    """A --pairs file, or an --export-pairs file (.json.gz, no per-image outcomes)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        d = json.loads(gzip.decompress(raw) if path.endswith(".gz") else raw)
        if not isinstance(d, dict) or not isinstance(d.get("pairs"), list):
            raise ValueError("no list 'pairs'")
    except (OSError, ValueError) as exc:
        _fail(f"{path}: not a pairs file ({exc})")
    return d


def fit_from_pairs(args) -> None:
    """Fit the predictor on pairs written by --export-pairs and score it on their held-out subnets."""
    from hwnas.space import get_space

    path = args.from_pairs
    try:
        with open(path, "rb") as f:
            d = json.loads(gzip.decompress(f.read()) if path.endswith(".gz") else f.read())
        if d.get("format") != PAIRS_FORMAT:
            raise ValueError(f"format is {d.get('format')!r}, expected {PAIRS_FORMAT!r}")
        space = get_space(d["space"], **d["space_config"])
        seed, n_train, n_test = int(d["seed"]), int(d["n_train"]), int(d["n_test"])
        pairs = {tuple(p["x"]): float(p["acc"]) for p in d["pairs"]}
        held_pairs = {tuple(p["x"]): float(p["acc"]) for p in d["held_out"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _fail(f"{path}: not a pairs file written by --export-pairs ({exc})")
    torch.set_num_threads(args.threads)
    archs, keys, found = [], [], 0
    for a in distinct_subnets(space, np.random.default_rng(seed)):  # the list the pairs came from
        if len(archs) >= n_train + n_test and found == len(pairs):
            break
        if len(archs) > 50 * (len(pairs) + n_test):
            _fail(f"{path}: its pairs are not the subnets seed {seed} draws from space {space.name}")
        archs.append(a)
        keys.append(tuple(space.encode(a).tolist()))
        found += keys[-1] in pairs
    test_a = archs[n_train:n_train + n_test]
    missing = [k for k in keys[n_train:n_train + n_test] if k not in held_pairs]
    if missing:
        _fail(f"{path}: {len(missing)} of the {n_test} held-out subnets have no measurement")
    test_y = np.array([held_pairs[k] for k in keys[n_train:n_train + n_test]])
    order = [i for i in range(len(archs)) if not n_train <= i < n_train + n_test and keys[i] in pairs]
    train_a, train_y = [archs[i] for i in order], np.array([pairs[keys[i]] for i in order])
    options = predictor_options(args)
    t = time.perf_counter()
    predictor = AccuracyPredictor(space, seed=args.seed, **options).fit(train_a, train_y)
    fit_seconds = time.perf_counter() - t
    held_out = predictor.score(test_a, test_y)
    held_out["kendall_tau_bootstrap_se"] = bootstrap_tau_se(predictor.predict(test_a), test_y)
    curve = {}
    for n in [int(v) for v in args.curve.split(",") if v.strip()]:
        if n <= len(train_a):
            curve[n] = AccuracyPredictor(space, seed=args.seed, **options).fit(
                train_a[:n], train_y[:n]).score(test_a, test_y)
    result = {"pairs_file": path, "n_train": len(train_a), "n_test": n_test, "predictor": args.predictor,
              "predictor_held_out": held_out, "predictor_kernel": predictor.metrics.get("kernel"),
              "kernel_cv_kendall_tau": predictor.metrics.get("kernel_cv_kendall_tau"), "curve": curve,
              "measured": {k: d[k] for k in ("split", "val_images", "recal_images", "checkpoint", "measured_on")},
              "seconds": {"fit": round(fit_seconds, 2)},
              "machine": {"cpu": _cpu_name(), "threads": torch.get_num_threads(),
                          "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}}
    write_result(args, result)


def distinct_subnets(space, rng: np.random.Generator):
    """Random subnets of `space`, each once: the list every run with the same seed measures."""
    seen = set()
    while True:
        a = space.sample(rng)
        key = tuple(space.encode(a).tolist())
        if key not in seen:
            seen.add(key)
            yield a


def kernel_grid(args, p: argparse.ArgumentParser) -> tuple | None:
    """The (ell, noise, lin) grid of --kernel-ell/-noise/-lin (None: GP_GRID); an axis not given keeps GP_GRID's."""
    lists = (args.kernel_ell, args.kernel_noise, args.kernel_lin)
    if all(v is None for v in lists):
        return None
    axes = []
    for i, (flag, value) in enumerate(zip(("--kernel-ell", "--kernel-noise", "--kernel-lin"), lists, strict=True)):
        try:
            axis = sorted({g[i] for g in GP_GRID}) if value is None else [float(v) for v in value.split(",")]
        except ValueError:
            p.error(f"{flag}: expected a comma list of numbers, got {value!r}")
        if not all(v > 0 if i < 2 else v >= 0 for v in axis):
            p.error(f"{flag}: expected numbers {'> 0' if i < 2 else '>= 0'}, got {value!r}")
        axes.append(axis)
    return tuple(itertools.product(*axes))


def predictor_options(args) -> dict:
    if args.predictor != "gp":
        return {}
    options = {"kind": "gp", "ordinal": True, "extreme": True, "by_resolution": True}
    if args.kernel_grid is not None:  # a smaller grid: the CV costs 5 solves per grid point
        options["kernel_grid"] = args.kernel_grid
    return options


def bootstrap_tau_se(pred: np.ndarray, y: np.ndarray, resamples: int = 1000) -> float:
    """The sampling error of Kendall tau(pred, y): its spread over bootstrap resamples of the subnets."""
    rng = np.random.default_rng(0)
    return float(np.std([kendall_tau(pred[i], y[i]) for i in (rng.integers(0, len(y), len(y))
                                                               for _ in range(resamples))]))


def write_result(args, result: dict) -> None:
    text = json.dumps(result, indent=1)
    print(text)
    if args.result:
        with open(args.result, "w") as f:
            f.write(text + "\n")


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _cpu_name() -> str:
    return next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")


def pack(correct: np.ndarray) -> str:
    return np.packbits(correct.astype(bool)).tobytes().hex()


def unpack(text: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8))[:n].astype(bool)


def check_path(args, estimator, supernet, meta, space, archs: list[dict], pairs: dict) -> dict:
    """The other evaluation path (dynamic supernet vs fused subnet) on `archs`, against the stored pairs."""
    other = SupernetEstimator(supernet=supernet, meta=meta, split=args.eval_set, recal_batches=args.recal_batches,
                              eval_limit=args.eval_images, fused=args.dynamic)
    diffs, differing, seconds = [], [], {"this": 0.0, "other": 0.0}
    n_val = other.eval_size
    for a in tqdm(archs, desc="other evaluation path", file=sys.stderr):
        stored = pairs[tuple(space.encode(a).tolist())]
        t = time.perf_counter()
        estimator.outcomes(a)  # timed again here, beside the other path on the same machine state
        seconds["this"] += time.perf_counter() - t
        t = time.perf_counter()
        correct, _ = other.outcomes(a)
        seconds["other"] += time.perf_counter() - t
        diffs.append(100.0 * float(correct.mean()) - stored["acc"])
        differing.append(int((correct != unpack(stored["correct"], n_val)).sum()))
    return {"n": len(archs), "max_abs_accuracy_diff": float(np.max(np.abs(diffs))),
            "images_classified_differently": differing,
            "seconds_per_subnet": {k: round(v / len(archs), 2) for k, v in seconds.items()}}


def repeatability(args, supernet, meta, space, archs: list[dict], pairs: dict, store: dict) -> dict:
    """Test-retest agreement of the measurement on `archs`.

    Each subnet is measured a second time with an independent set of recalibration images
    (same count); the evaluation images are cut into two random halves. Kendall tau between
    (first recalibration, half 1) and (second recalibration, half 2) is the agreement of two
    fully independent measurements of half the size; the same pair on all the images shares
    the images and differs in the recalibration only. With Gaussian noise, the whole-split
    reliability follows from the halves' correlation by the Spearman-Brown formula, and the
    best any predictor can reach against one measurement is tau = 2/pi * asin(sqrt(reliability)).
    """
    second = SupernetEstimator(supernet=supernet, meta=meta, split=args.eval_set, recal_batches=args.recal_batches,
                               eval_limit=args.eval_images, recal_seed=10_007 + args.seed, fused=not args.dynamic)
    n_val = second.eval_size
    again = store.setdefault("repeat", {})
    for i, a in enumerate(tqdm(archs, desc="measuring again", file=sys.stderr)):
        key = ",".join(map(str, space.encode(a).tolist()))
        if key not in again:
            correct, loss = second.outcomes(a)
            again[key] = {"acc": 100.0 * float(correct.mean()), "loss": float(loss.mean()), "correct": pack(correct)}
        if (i + 1) % 25 == 0 or i + 1 == len(archs):
            atomic_write_json(args.pairs, store)
    half = np.zeros(n_val, dtype=bool)
    half[np.random.default_rng(12345).permutation(n_val)[: n_val // 2]] = True
    first_c, second_c = [], []
    for a in archs:
        key = tuple(space.encode(a).tolist())
        first_c.append(unpack(pairs[key]["correct"], n_val))
        second_c.append(unpack(again[",".join(map(str, key))]["correct"], n_val))
    first_c, second_c = np.array(first_c), np.array(second_c)
    a1, a2 = 100 * first_c[:, half].mean(1), 100 * second_c[:, ~half].mean(1)
    same_recal_halves = 100 * first_c[:, ~half].mean(1)
    full1, full2 = 100 * first_c.mean(1), 100 * second_c.mean(1)
    r_half = float(np.corrcoef(a1, a2)[0, 1])
    reliability = 2 * r_half / (1 + r_half) if r_half > 0 else 0.0
    return {
        "n": len(archs),
        "kendall_tau_independent_halves": kendall_tau(a1, a2),
        "kendall_tau_same_recal_other_half": kendall_tau(a1, same_recal_halves),
        "kendall_tau_whole_split_other_recal": kendall_tau(full1, full2),
        "pearson_independent_halves": r_half,
        "reliability_whole_split": reliability,
        "kendall_tau_ceiling": float(2 / np.pi * np.arcsin(np.sqrt(max(reliability, 0.0)))),
        "mean_abs_diff_other_recal": float(np.mean(np.abs(full1 - full2))),
        "std_accuracy": float(full1.std()),
    }


if __name__ == "__main__":
    main()
