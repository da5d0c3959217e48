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

    BN recalibration runs in the supernet (so its shared statistics hold `arch`'s afterwards, which
    `hwnas.export` relies on); with `fused` (the default) the evaluation then runs on the extracted
    subnet with every BatchNorm folded into its convolution, on evaluation images normalised,
    resized and laid out once per resolution, in batches of 128 (what fits a core's caches): the same
    accuracies as evaluating through the dynamic supernet (`fused=False`, the reference path) up to
    floating-point rounding, in about half the time on one CPU thread.
    """

    def __init__(self, supernet_checkpoint: str | os.PathLike | None = None, *, supernet=None, meta=None,
                 split: str = "val", recal_batches: int = 16, recal_batch_size: int = 128,
                 eval_limit: int | None = None, eval_batch_size: int = 128, device: str = "cpu",
                 data=None, progress: bool = False, recal_seed: int | None = None,
                 heldout_dir: str | os.PathLike | None = None, fused: bool = True):
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
        self.fused = fused
        self._cache: dict[tuple, float] = {}
        self._inputs: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}  # per resolution
        self._recal_at: dict[int, list[torch.Tensor]] = {}

    @property
    def eval_size(self) -> int:
        """How many images each subnet is evaluated on."""
        n = len(self.eval_data.test_y)
        return n if self.eval_limit is None else min(self.eval_limit, n)

    def accuracy(self, arch: dict) -> float:
        """Accuracy (%) of `arch` on the evaluation images after BN recalibration (cached)."""
        arch = self.space.validate(arch)
        key = tuple(self.space.encode(arch).tolist())
        if key not in self._cache:
            correct, _ = self.outcomes(arch)
            self._cache[key] = 100.0 * float(correct.mean()) if len(correct) else 0.0  # as `outcomes` counts
        return self._cache[key]

    def outcomes(self, arch: dict) -> tuple[np.ndarray, np.ndarray]:
        """(correct, loss) per evaluation image of `arch` after BN recalibration (not cached)."""
        from hwnas.supernet import recalibrate_bn
        from hwnas.train.evaluation import per_image_outcomes

        arch = self.space.validate(arch)
        r = arch["r"]
        with torch.no_grad():
            recalibrate_bn(self.supernet, self._recal_batches(r), arch=arch)
            self.supernet.set_active(arch)
            if not self.fused:  # the reference path: through the dynamic supernet, images resized per batch
                batches = self.eval_data.batches("test", self.eval_batch_size, limit=self.eval_limit)
                correct, loss = per_image_outcomes(self.supernet, batches, resolution=r, device=self.device)
                return correct.numpy(), loss.numpy()
            model = fused_subnet(self.supernet, arch)
            xs, ys = self._eval_inputs(r)
            correct, loss = per_image_outcomes(model, zip(xs, ys, strict=True), device=self.device)
        return correct.numpy(), loss.numpy()

    def _recal_batches(self, r: int) -> list[torch.Tensor]:
        """The recalibration images at resolution `r` on the device (resized once, as `recalibrate_bn` would)."""
        from hwnas.supernet import resize_input

        if r not in self._recal_at:
            self._recal_at[r] = [resize_input(x.to(self.device), r) for x in self.recal]
        return self._recal_at[r]

    def _eval_inputs(self, r: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The evaluation batches at resolution `r`: normalised, resized and (on CPU) channels-last, once."""
        from hwnas.supernet import resize_input

        if r not in self._inputs:
            xs, ys = [], []
            for x, y in self.eval_data.batches("test", self.eval_batch_size, limit=self.eval_limit):
                x = resize_input(x.to(self.device), r)
                if x.device.type == "cpu":
                    x = x.contiguous(memory_format=torch.channels_last)
                xs.append(x)
                ys.append(y.to(self.device))
            self._inputs[r] = (xs, ys)
        return self._inputs[r]

    def stderr(self, archs: list[dict]) -> np.ndarray:
        """The binomial standard error (percentage points) of each subnet's accuracy: the sampling error
        of measuring it on `eval_size` images (BN recalibration adds a smaller share, not counted)."""
        from hwnas.stats import binomial_stderr

        return np.array([binomial_stderr(a, self.eval_size) for a in self.predict(archs)], dtype=np.float64)

    def uncertainty(self) -> dict:
        """How `stderr` is computed, for the search's record."""
        return {"kind": "binomial standard error", "split": self.split, "images": self.eval_size}

    def predict(self, archs: list[dict]) -> np.ndarray:
        it = tqdm(archs, desc=f"supernet accuracy ({self.split})", file=sys.stderr, disable=not self.progress,
                  leave=False)
        return np.array([self.accuracy(a) for a in it], dtype=np.float64)


@torch.no_grad()
def fused_subnet(supernet, arch: dict) -> torch.nn.Module:
    """`arch` extracted from `supernet` (its current BN statistics) in eval mode, every BatchNorm folded
    into the convolution before it (torch.fx), channels-last on CPU: the same function, fewer passes."""
    from torch.fx.experimental.optimization import fuse

    was_training = supernet.training
    supernet.eval()
    try:
        model = fuse(supernet.extract(arch).eval())
    finally:
        supernet.train(was_training)
    device = next(model.parameters()).device
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    return model.eval()
