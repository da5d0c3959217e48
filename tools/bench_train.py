"""Supernet training on the shipped Fashion-MNIST subset (CPU), and weight sharing vs training alone.

    flock /tmp/hwnas-bench.lock /work/venv/bin/python tools/bench_train.py supernet --out bench/supernet.pt
    flock /tmp/hwnas-bench.lock /work/venv/bin/python tools/bench_train.py standalone --checkpoint bench/supernet.pt

`supernet` trains with the settings below (2 random subnets per step besides the largest and
smallest, 2,000 of the 10,000 training images held out for validation) and prints the
accuracy-vs-epochs curve; `standalone`
trains the smallest, a middle and the largest subnet alone with the checkpoint's own settings
and compares with the supernet's accuracy of the same subnets (BN recalibrated, test split).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict

import torch

from hwnas.data import load_dataset
from hwnas.train import TrainSettings, load_checkpoint, recalibration_batches, split_validation, train
from hwnas.train.evaluation import evaluate_subnet
from hwnas.train.standalone import train_subnet_alone

# half width, 20-28 px: ~2.5x cheaper than the space's defaults, so 10 epochs fit minutes on one core
BENCH_SPACE_OPTIONS = {"width_mult": 0.5, "resolutions": [20, 24, 28]}


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "load_avg_at_start": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def middle_arch(space) -> dict:
    mid = lambda choices: sorted(choices)[len(choices) // 2]
    largest = space.largest()
    return space.validate({"r": mid(space.resolutions), "d": [mid(space.depths)] * len(largest["d"]),
                           "k": [mid(space.kernels)] * len(largest["k"]),
                           "e": [mid(space.expands)] * len(largest["e"])})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=("supernet", "standalone"))
    p.add_argument("--out", default="bench/supernet.pt")
    p.add_argument("--checkpoint", default="bench/supernet.pt")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--num-random", type=int, default=2, help="random subnets per step besides the two ends")
    p.add_argument("--val-size", type=int, default=2000, help="training images held out as the validation split")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--optimizer", default="sgd")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--augment", action="store_true", help="random flips and 2-px shifts")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--result", default=None, help="write the result JSON here too")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    info = machine()
    if args.stage == "supernet":
        settings = TrainSettings(space="mbv3-small-input", space_options=BENCH_SPACE_OPTIONS,
                                 epochs=args.epochs, num_random=args.num_random, recal_batches=10,
                                 batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                                 augment=args.augment, val_size=args.val_size)
        result = train(settings, args.out, device="cpu")
        result["settings"] = asdict(settings)
    else:
        supernet, meta = load_checkpoint(args.checkpoint)
        settings = TrainSettings.from_dict(meta["settings"])
        data = load_dataset(settings.data)
        train_part, _ = split_validation(data, settings.val_size, seed=settings.seed)
        recal = recalibration_batches(train_part, settings.recal_batches, settings.recal_batch_size, settings.seed)
        space = supernet.space
        rows = []
        subnets = (("smallest", space.smallest()), ("middle", middle_arch(space)), ("largest", space.largest()))
        for name, arch in subnets:
            shared = evaluate_subnet(supernet, arch, data.batches("test", 500), recal)
            alone = train_subnet_alone(arch, settings, data)
            rows.append({"subnet": name, "mmacs": space.flops(arch) / 1e6, "acc_supernet": round(shared, 2),
                         "acc_alone": alone["acc"], "alone_seconds": alone["seconds"], "arch": arch})
            print(json.dumps(rows[-1]), file=sys.stderr)
        result = {"checkpoint": args.checkpoint, "epochs": settings.epochs, "rows": rows}
    result["machine"] = info
    result["load_avg_at_end"] = os.getloadavg()
    text = json.dumps(result, indent=1)
    print(text)
    if args.result:
        with open(args.result, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
