"""`hwnas train`: train the weight-sharing supernet (sandwich rule, in-place distillation)."""

from __future__ import annotations

import argparse
import json

from hwnas.errors import InputError

HELP = "train the weight-sharing supernet"
DESCRIPTION = """Train a once-for-all supernet with the sandwich rule (largest, smallest and random
subnets every step) and in-place distillation from the largest subnet. The checkpoint is
rewritten after every epoch (and every --checkpoint-every steps / --checkpoint-minutes minutes);
--resume continues it, mid-epoch too, with the losses an uninterrupted run has. An image folder
is streamed from its files (decoded and augmented per batch by --workers processes; unreadable
images are skipped and counted). Several processes: torchrun.

examples:
  hwnas train --space mbv3-small-input --epochs 6 --out supernet.pt
  hwnas train --quick --out quick.pt               # a few minutes on a laptop CPU
  hwnas train --width-mult 0.5 --resolutions 16,20,24 --epochs 4 --out narrow.pt
  hwnas train --space mbv3 --data folder:photos/ --checkpoint-minutes 10 --out big.pt
  torchrun --nproc-per-node 4 -m hwnas train --space mbv3 --data cifar10:DIR --epochs 100 --out c.pt
"""

# library field -> the flag that sets it
FLAGS = {"space": "--space", "data": "--data", "epochs": "--epochs", "out": "--out", "batch_size": "--batch-size",
         "lr": "--lr", "optimizer": "--optimizer", "device": "--device", "num_random": "--num-random",
         "width_mult": "--width-mult", "resolutions": "--resolutions", "val_size": "--val-size",
         "limit_train": "--limit-train", "space_options": "--space-options",
         "checkpoint_every": "--checkpoint-every", "checkpoint_minutes": "--checkpoint-minutes",
         "num_workers": "--workers", "elastic_resolution": "--elastic-resolution", "sampling": "--sampling"}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--space", default="mbv3-small-input",
                        help="search space: a name or a spec file (YAML) (default: mbv3-small-input)")
    parser.add_argument("--data", default=None,
                        help="dataset: fmnist-subset (default), fashion-mnist[:DIR], cifar10:DIR, folder:DIR")
    parser.add_argument("--epochs", type=int, default=None, help="default 10 (2 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="short schedule for a first look: 2 epochs of 4000 images, 2 random subnets per step")
    parser.add_argument("--out", required=True, help="checkpoint to write (rewritten after every epoch)")
    parser.add_argument("--resume", action="store_true", help="continue the checkpoint at --out")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint at --out")
    parser.add_argument("--batch-size", type=int, default=None, help="per process (default 128; 64 with --quick)")
    parser.add_argument("--no-augment", action="store_true",
                        help="no augmentation (random flips and shifts; random-resized crops for a folder)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: 0.1 SGD, 2e-3 AdamW)")
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd", help="sgd = nesterov momentum")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument("--progressive", action="store_true",
                        help="progressive shrinking: largest, then elastic kernel, depth, expand (OFA)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-random", type=int, default=None,
                        help="random subnets per step besides the two ends (default 2)")
    parser.add_argument("--sampling", choices=("sandwich", "fair"), default=None,
                        help="the subnets a step trains beside the largest: sandwich = the smallest and "
                             "--num-random random ones; fair = a group of --num-random + 1 in which every "
                             "choice of every gene appears evenly (default: fair with --quick, else sandwich)")
    parser.add_argument("--no-distill", action="store_true", help="train every subnet on the labels")
    parser.add_argument("--width-mult", type=float, default=None, help="space option width_mult")
    parser.add_argument("--resolutions", default=None, help="space option resolutions, e.g. 16,20,24")
    parser.add_argument("--space-options", default=None, help='other space options as JSON, e.g. \'{"x": 1}\'')
    parser.add_argument("--val-size", type=int, default=None,
                        help="training images held out as the validation split search uses "
                             "(default 2000, at most a fifth of the training set; 1000 with --quick)")
    parser.add_argument("--limit-train", type=int, default=None, help="training images per epoch (quick runs)")
    parser.add_argument("--checkpoint-every", type=int, default=None, metavar="STEPS",
                        help="also checkpoint every STEPS optimizer steps within an epoch (--resume continues there)")
    parser.add_argument("--checkpoint-minutes", type=float, default=None, metavar="M",
                        help="also checkpoint every M minutes within an epoch")
    parser.add_argument("--workers", type=int, default=None,
                        help="loader processes decoding images (default: 0 for images in memory, up to 4 for a "
                             "folder)")
    parser.add_argument("--elastic-resolution", choices=("auto", "batch", "subnet"), default=None,
                        help="batch: each batch at one of the space's resolutions for every subnet (once-for-all); "
                             "subnet: each subnet at its own; auto (default): batch for a folder, else subnet")
    parser.add_argument("--no-amp", action="store_true", help="float32 on CUDA too (default: mixed precision)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace):
    from hwnas.pipeline import train

    # unset flags are left out, so the short schedule's values (--quick) or the defaults apply
    chosen = {name: getattr(args, name) for name in ("epochs", "limit_train", "num_random", "batch_size", "val_size",
                                                      "checkpoint_every", "checkpoint_minutes", "elastic_resolution",
                                                      "sampling")
              if getattr(args, name) is not None}
    if args.workers is not None:
        chosen["num_workers"] = args.workers
    if args.no_amp:
        chosen["amp"] = False
    result = train(out=args.out, quick=args.quick, resume=args.resume, overwrite=args.overwrite, device=args.device,
                   threads=args.threads, progress=not args.no_progress, space=args.space,
                   space_options=space_options(args), data=args.data, optimizer=args.optimizer, lr=args.lr,
                   progressive=args.progressive, seed=args.seed, distill=not args.no_distill, **chosen,
                   **({"augment": False} if args.no_augment else {}))
    if result.details.get("rank", 0) != 0:  # under torchrun only rank 0 reports
        args.json = False
        return {}
    return result


def space_options(args: argparse.Namespace) -> dict:
    options: dict = {}
    if args.space_options:
        try:
            options = json.loads(args.space_options)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc}); expected an object", field="--space-options") from exc
        if not isinstance(options, dict):
            raise InputError("expected a JSON object of space options", field="--space-options")
    if args.width_mult is not None:
        options["width_mult"] = args.width_mult
    if args.resolutions:
        try:
            options["resolutions"] = [int(v) for v in args.resolutions.split(",")]
        except ValueError as exc:
            raise InputError(f"expected comma-separated integers, got {args.resolutions!r}",
                             field="--resolutions") from exc
    return options
