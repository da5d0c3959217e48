"""The built-in spec spaces through the whole demo pipeline (CPU, onnxruntime 1 thread), one row each.

    flock /tmp/hwnas-bench.lock python tools/bench_spaces.py chain resnet nb201-supernet --epochs 2

Per space: its op keys, the time to profile the full table (the demo's quick protocol), the table's
fidelity on whole subnets (`hwnas validate`, 30 subnets, calibrated: share within 10 %, Kendall
tau), the supernet's test accuracy of its largest and smallest subnet after the demo-scale training
(the shipped Fashion-MNIST subset), and the subnet the search found under the budget against a
hand-made member of the family (ResNet-50's proportions for `resnet`, NAS-Bench-201's ResNet cell
for `nb201-supernet`, MobileNetV3-Large's blocks for `mbv3`, every choice its median otherwise): the
most accurate subnet of the search's front whose measured latency (ONNX Runtime, 1 thread,
interleaved rounds) is no higher than the hand-made network's, both scored by the same supernet
estimator. Writes bench/spaces/<space>/ and prints Markdown rows.

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
    """Every gene its median choice."""
    xl, xu = space.bounds
    return space.decode((np.asarray(xl) + np.asarray(xu)) // 2)


# NAS-Bench-201's ResNet cell (|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|):
# two 3x3 convolutions in a row and the skip connection around them, in arch_str edge order
RESNET_CELL = ["conv3x3", "none", "conv3x3", "skip", "none", "skip"]

# MobileNetV3-Large after its first block: stages of depth 2, 3, 4, 2, 3 with kernels 3, 5, 3, 3, 5 and
# expansions 64/16, 72/24 | 72/24, 120/40, 120/40 | 240/40, 200/80, 184/80, 184/80 | 480/80, 672/112 |
# 672/112, 960/160, 960/160, each rounded to the nearest of 3, 4, 6 (four slots a stage, unused slots at 3)
MBV3_LARGE = {"r": 224, "d": [2, 3, 4, 2, 3],
              "k": [3, 3, 3, 3] + [5, 5, 5, 3] + [3, 3, 3, 3] + [3, 3, 3, 3] + [5, 5, 5, 3],
              "e": [4, 3, 3, 3] + [3, 3, 3, 3] + [6, 3, 3, 3] + [6, 6, 3, 3] + [6, 6, 6, 3]}


def hand_made(name: str, space) -> tuple[str, dict]:
    """A network a person would write in the space's family, and its name.

    `resnet`: ResNet-50's depths (3, 4, 6, 3) and bottleneck ratio (1/4) at the space's full widths
    and highest resolution; `nb201-supernet`: NAS-Bench-201's ResNet cell in every stage; `mbv3`:
    MobileNetV3-Large's blocks (Howard et al. 2019, table 1) with each expand ratio rounded to the
    nearest choice, at 224 px; otherwise the member whose every choice is its median.
    """
    largest = space.largest()
    if name == "mbv3":
        return "MobileNetV3-Large's depths, kernels and expand ratios, 224 px", space.validate(MBV3_LARGE)
    if name == "resnet":
        arch = {**largest, "d": [1, 3, 4, 6, 3], "e": [1] + [0.25] * (len(largest["e"]) - 1)}
        return "ResNet-50 (depths 3/4/6/3, bottleneck 1/4, full width)", space.validate(arch)
    if name == "nb201-supernet":
        arch = {**largest, "c": [cells if not cells else list(RESNET_CELL) for cells in largest["c"]]}
        return "NAS-Bench-201's ResNet cell in every stage", space.validate(arch)
    return "every choice its median", median_arch(space)


def measured_pair(space, archs: list[dict], rounds: int = 4) -> list[float]:
    """ONNX Runtime (cpu-ort-1t's protocol, 1 thread) latency of each subnet, timed in interleaved rounds."""
    import contextlib

    from hwnas.device_profile import load_profile
    from hwnas.runtime.backends import get_backend
    from hwnas.runtime.measure import measure_rounds

    profile = load_profile("cpu-ort-1t")
    backend = get_backend(profile)
    with contextlib.ExitStack() as stack:
        runners = {i: stack.enter_context(backend.prepare(space.build(a).eval(), (1, *space.input_shape(a))))
                   for i, a in enumerate(archs)}
        results = measure_rounds(runners, profile.protocol, rounds=rounds)
    return [round(results[i][0].median_ms, 5) for i in range(len(archs))]


def found_against_hand_made(name: str, run_dir: Path, alone: bool = False) -> dict:
    """The most accurate subnet of the search's front that runs no slower (measured) than the hand-made
    network, both scored by the same supernet estimator (validation split, BN recalibrated); with
    `alone`, both also trained alone from scratch with the supernet's schedule (test split)."""
    from hwnas.estimate import get_estimator
    from hwnas.io import read_json
    from hwnas.latency.predictor import LatencyPredictor

    predictor = LatencyPredictor.load(run_dir / "latency_table.json")
    space = predictor.space
    label, hand = hand_made(name, space)
    estimator = get_estimator("supernet", supernet_checkpoint=run_dir / "supernet.pt", space=space)
    front = read_json(run_dir / "search" / "pareto.json", what="pareto.json")["pareto"]
    candidates = sorted(front, key=lambda e: -e["objectives"]["accuracy"])
    acc_hand = float(estimator.predict([hand])[0])
    row = None
    for entry in candidates:
        found = space.validate(entry["arch"])
        ms_found, ms_hand = measured_pair(space, [found, hand])
        if ms_found <= ms_hand:
            row = {"arch": found, "measured_ms": ms_found, "accuracy": float(estimator.predict([found])[0]),
                   "predicted_ms": float(predictor.predict([found])[0])}
            break
    result = {"hand_made": {"name": label, "arch": hand, "measured_ms": ms_hand, "accuracy": acc_hand,
                            "predicted_ms": float(predictor.predict([hand])[0])},
              "found": row, "front_size": len(front)}
    if alone and row is not None:
        # each trained alone from scratch with the supernet's data, schedule and optimizer (test split):
        # shared weights after a short schedule score the subnets between the extremes poorly
        from hwnas.data import load_dataset
        from hwnas.train import load_checkpoint
        from hwnas.train.standalone import train_subnet_alone
        from hwnas.train.trainer import TrainSettings

        _, meta = load_checkpoint(run_dir / "supernet.pt")
        settings = TrainSettings.from_dict(meta["settings"])
        data = load_dataset(settings.data)
        for part in (result["hand_made"], result["found"]):
            began = time.perf_counter()
            part["accuracy_alone"] = float(train_subnet_alone(part["arch"], settings, data)["acc"])
            part["train_alone_s"] = round(time.perf_counter() - began, 1)
    return result


def bench_space(name: str, out: Path, epochs: int) -> dict:
    import hwnas

    began = time.perf_counter()
    result = hwnas.demo(out / name, epochs=epochs, space=name).to_dict()
    space_keys = len(hwnas.LatencyPredictor.load(out / name / "latency_table.json").space.all_ops())
    versus = found_against_hand_made(name, out / name)
    return {
        "space": name,
        "op_keys": space_keys,
        "profile_s": result["profile"].get("seconds"),
        "within_10pct": result["validate"]["within_10pct"],
        "kendall_tau": result["validate"]["kendall_tau"],
        "calibrated": result["validate"].get("calibrated"),
        "acc_largest": result["train"]["acc_largest"],
        "acc_smallest": result["train"]["acc_smallest"],
        "budget_ms": result["budget_ms"],
        **versus,
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
    p.add_argument("--versus-only", action="store_true",
                   help="only the found-vs-hand-made comparison, on the runs already in --out")
    p.add_argument("--alone", action="store_true",
                   help="with --versus-only: also train both networks alone from scratch (the supernet's schedule)")
    args = p.parse_args()
    out = Path(args.out)
    if args.latency_only:
        for name in args.spaces:
            row = bench_latency(name, out)
            (out / name / "bench_latency.json").write_text(json.dumps(row, indent=1, default=str) + "\n")
            print(json.dumps(row, default=str), flush=True)
        return
    if args.versus_only:
        for name in args.spaces:
            row = {"space": name, **found_against_hand_made(name, out / name, alone=args.alone),
                   "load_avg": os.getloadavg()}
            (out / name / "versus.json").write_text(json.dumps(row, indent=1, default=str) + "\n")
            print(json.dumps(row, default=str), flush=True)
        return
    rows = []
    for name in args.spaces:
        row = bench_space(name, out, args.epochs)
        (out / name / "bench.json").write_text(json.dumps(row, indent=1, default=str) + "\n")
        rows.append(row)
        print(json.dumps(row, default=str), file=sys.stderr, flush=True)
    print("| space | op keys | profile (s) | within 10 % | Kendall tau | acc largest / smallest (%) | "
          "found: measured ms / acc % | hand-made: measured ms / acc % |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        f, h = r["found"] or {"measured_ms": float("nan"), "accuracy": float("nan")}, r["hand_made"]
        print(f"| {r['space']} | {r['op_keys']} | {r['profile_s']} | {r['within_10pct']:.2f} | {r['kendall_tau']:.2f} "
              f"| {r['acc_largest']:.1f} / {r['acc_smallest']:.1f} | {f['measured_ms']:.3f} / {f['accuracy']:.1f} "
              f"| {h['measured_ms']:.3f} / {h['accuracy']:.1f} |")


if __name__ == "__main__":
    main()
