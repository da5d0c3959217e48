"""Does NAS pay? Found Pareto subnets against hand-made MobileNetV3-style networks.

    flock /tmp/hwnas-bench.lock python tools/bench_baselines.py hwnas-demo/search/pareto.json \
        --profile cpu-ort-1t --json /tmp/bench_baselines.json

Hand-made baselines: the space's largest subnet (every stage at full depth, kernel 7, expand 6,
largest resolution) at width multipliers 0.35 / 0.5 / 0.75 / 1.0 of the supernet's width,
each trained alone from scratch with the supernet's own data, schedule and optimizer.
Found subnets: up to --n subnets of the search's Pareto front (spread over its latency range),
each fine-tuned from the supernet's shared weights for the same schedule. Every network's
latency is measured end to end on the device profile (its protocol and threads), and its
accuracy is on the test split after BN recalibration.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import numpy as np
import torch

from hwnas.data import load_dataset
from hwnas.device_profile import load_profile
from hwnas.io import read_json
from hwnas.latency.fingerprint import cpu_model
from hwnas.runtime.measure import measure_module
from hwnas.space import get_space
from hwnas.train import load_checkpoint
from hwnas.train.standalone import train_subnet_alone
from hwnas.train.trainer import TrainSettings

WIDTHS = (0.35, 0.5, 0.75, 1.0)


def spread(entries: list[dict], n: int) -> list[dict]:
    """n entries spread evenly over the front's latency range (fastest and slowest included)."""
    entries = sorted(entries, key=lambda e: e["objectives"]["latency_ms"])
    idx = np.unique(np.round(np.linspace(0, len(entries) - 1, min(n, len(entries)))).astype(int))
    return [entries[i] for i in idx]


def measured_ms(profile, space, arch) -> float:
    module = space.build(arch).eval()
    return measure_module(profile, module, space.input_shape(arch)).median_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pareto", help="R/pareto.json of `hwnas search` (it names the supernet checkpoint)")
    ap.add_argument("--profile", default="cpu-ort-1t")
    ap.add_argument("--n", type=int, default=3, help="found subnets to fine-tune (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training")
    ap.add_argument("--json", default=None, help="also write every number here")
    args = ap.parse_args()

    run = read_json(args.pareto, what="pareto.json")
    supernet, meta = load_checkpoint(run["supernet"])
    settings = TrainSettings.from_dict(meta["settings"])
    profile = load_profile(args.profile)
    data = load_dataset(settings.data)
    space = supernet.space
    base_width = space.config()["width_mult"]
    torch.set_num_threads(args.threads)
    rows = []

    for m in WIDTHS:
        options = {**settings.space_options, "width_mult": round(base_width * m, 4)}
        s = dataclasses.replace(settings, space_options=options)
        config = {**space.config(), "width_mult": options["width_mult"]}
        b_space = get_space(config.pop("name"), **config)
        arch = b_space.largest()
        t0 = time.perf_counter()
        trained = train_subnet_alone(arch, s, data)
        rows.append({"network": f"hand-made MobileNetV3 x{m}", "kind": "baseline", "width_mult": options["width_mult"],
                     "arch": arch, "mmacs": b_space.flops(arch) / 1e6, "params": b_space.params(arch),
                     "acc": trained["acc"], "train_seconds": round(time.perf_counter() - t0, 1),
                     "measured_ms": measured_ms(profile, b_space, arch)})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "arch"}), file=sys.stderr, flush=True)

    for i, entry in enumerate(spread(run["pareto"], args.n)):
        arch = space.validate(entry["arch"])
        t0 = time.perf_counter()
        tuned = train_subnet_alone(arch, settings, data, start_from=supernet)
        rows.append({"network": f"found subnet {i + 1}", "kind": "found", "arch": arch,
                     "mmacs": space.flops(arch) / 1e6, "params": space.params(arch),
                     "acc_supernet_estimate": entry["objectives"].get("accuracy"),
                     "predicted_ms": entry["objectives"]["latency_ms"],
                     "acc": tuned["acc"], "train_seconds": round(time.perf_counter() - t0, 1),
                     "measured_ms": measured_ms(profile, space, arch)})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "arch"}), file=sys.stderr, flush=True)

    result = {"pareto": args.pareto, "supernet": run["supernet"], "profile": profile.name,
              "epochs": settings.epochs, "limit_train": settings.limit_train, "rows": rows,
              "machine": f"{cpu_model()}, {torch.get_num_threads()} torch threads",
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print("| network | MMACs | params | measured ms | test acc % |\n|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: r["measured_ms"]):
        print(f"| {r['network']} | {r['mmacs']:.1f} | {r['params']:,} | {r['measured_ms']:.3f} | {r['acc']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
