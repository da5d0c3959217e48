"""Accuracy of subnets measured with the trained supernet's shared weights."""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
from tqdm import tqdm

from hwnas.errors import InputError

SPLITS = ("val", "test", "heldout")


class SupernetEstimator:
    """`predict(archs)` -> accuracy (%) of each subnet with the supernet's weights.

    Each subnet's BatchNorm statistics are recalibrated on a fixed set of training batches,
    then it is evaluated on `split` (16 x 128 recalibration images: fewer make the BN statistics
    noisy enough to blur the ranking of similar subnets): "val" (held out of the training set when the supernet
    was trained; what search uses), "test" (for reporting only) or "heldout": the full Fashion-MNIST's
    58,000 images outside the shipped subset (needs Debian's dataset-fashion-mnist in `heldout_dir` and a
    supernet trained on the shipped subset; many images make a measurement that separates close subnets).
    `eval_limit` evaluates on the first images of the split only. Results are cached.
    """

    def __init__(self, supernet_checkpoint: str | os.PathLike | None = None, *, supernet=None, meta=None,
                 split: str = "val", recal_batches: int = 16, recal_batch_size: int = 128,
                 eval_limit: int | None = None, eval_batch_size: int = 500, device: str = "cpu",
                 data=None, progress: bool = False, recal_seed: int | None = None,
                 heldout_dir: str | os.PathLike | None = None):
        from hwnas.data import load_dataset
        from hwnas.data.datasets import DEBIAN_FMNIST_DIR, load_fmnist_subset, load_fmnist_unseen
        from hwnas.train import load_checkpoint, recalibration_batches, split_validation
        from hwnas.train.trainer import TrainSettings

        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}", field="split")
        if supernet is None:
            if supernet_checkpoint is None:
                raise InputError("the supernet estimator needs a supernet checkpoint", field="supernet_checkpoint")
            supernet, meta = load_checkpoint(supernet_checkpoint, device=device)
        settings = TrainSettings.from_dict((meta or {}).get("settings", {}))
        self.supernet, self.meta, self.device = supernet, meta or {}, torch.device(device)
        self.space = supernet.space
        data = data if data is not None else load_dataset(settings.data)
        settings.resolve_val_size(len(data.train_y))
        train_part, val_part = split_validation(data, settings.val_size, seed=settings.seed)
        if split == "val" and settings.val_size == 0:
            raise InputError("the supernet was trained without a validation split (val_size 0); use split='test'",
                             field="split")
        if split == "heldout":
            if settings.data not in (None, "fmnist-subset"):
                raise InputError(f"split 'heldout' needs a supernet trained on the shipped fmnist-subset, not "
                                 f"{settings.data!r}; use split='val' or 'test'", field="split")
            # unseen = outside the whole shipped subset (whatever slice of it `data` is), normalised
            # with the statistics the supernet's own inputs use
            self.eval_data = load_fmnist_unseen(load_fmnist_subset(), heldout_dir or DEBIAN_FMNIST_DIR)
            self.eval_data.mean, self.eval_data.std = list(data.mean), list(data.std)
        else:
            self.eval_data = val_part if split == "val" else data
        self.split = split
        # one fixed set of recalibration images for every subnet (`recal_seed` draws another set)
        self.recal_seed = settings.seed + 1 if recal_seed is None else recal_seed
        self.recal = recalibration_batches(train_part, recal_batches, recal_batch_size, seed=self.recal_seed)
        self.eval_limit, self.eval_batch_size = eval_limit, eval_batch_size
        self.progress = progress
        self._cache: dict[tuple, float] = {}

    @property
    def eval_size(self) -> int:
        """How many images each subnet is evaluated on."""
        n = len(self.eval_data.test_y)
        return n if self.eval_limit is None else min(self.eval_limit, n)

    def accuracy(self, arch: dict) -> float:
        from hwnas.train.evaluation import evaluate_subnet

        arch = self.space.validate(arch)
        key = tuple(self.space.encode(arch).tolist())
        if key not in self._cache:
            batches = self.eval_data.batches("test", self.eval_batch_size, limit=self.eval_limit)
            with torch.no_grad():
                self._cache[key] = evaluate_subnet(self.supernet, arch, batches, self.recal, device=self.device)
        return self._cache[key]

    def outcomes(self, arch: dict) -> tuple[np.ndarray, np.ndarray]:
        """(correct, loss) per evaluation image of `arch` after BN recalibration (not cached)."""
        from hwnas.supernet import recalibrate_bn
        from hwnas.train.evaluation import per_image_outcomes

        arch = self.space.validate(arch)
        batches = self.eval_data.batches("test", self.eval_batch_size, limit=self.eval_limit)
        recalibrate_bn(self.supernet, (x.to(self.device) for x in self.recal), arch=arch)
        self.supernet.set_active(arch)
        correct, loss = per_image_outcomes(self.supernet, batches, resolution=arch["r"], device=self.device)
        return correct.numpy(), loss.numpy()

    def predict(self, archs: list[dict]) -> np.ndarray:
        it = tqdm(archs, desc=f"supernet accuracy ({self.split})", file=sys.stderr, disable=not self.progress,
                  leave=False)
        return np.array([self.accuracy(a) for a in it], dtype=np.float64)
