"""The validation split carved from the training set (search must never look at the test set)."""

from __future__ import annotations

import numpy as np
import torch

from hwnas.data import Dataset, StreamDataset
from hwnas.data.stream import shard_indices  # noqa: F401 - the epoch order lives with the loader
from hwnas.errors import InputError


def split_validation(dataset: Dataset | StreamDataset, val_size: int, seed: int = 0) -> tuple:
    """(train part, validation part): a stratified hold-out of `val_size` training images.

    The validation part is a Dataset whose "test" split is the held-out images and whose
    "train" split is the remaining training images (what BN recalibration may use). Both keep
    the full training set's normalisation statistics, so a subnet sees identical inputs.
    """
    n = len(dataset.train_y)
    if val_size < 0 or val_size >= n:
        raise InputError(f"validation size {val_size} must be in [0, {n - 1}] for {n} training images",
                         field="val_size")
    val_idx = _stratified_pick(dataset.train_y.numpy(), val_size, seed)
    keep = np.ones(n, dtype=bool)
    keep[val_idx] = False
    if isinstance(dataset, StreamDataset):  # streamed: the same split, over file lists
        train_keep = np.flatnonzero(keep)
        return (dataset.part(f"{dataset.name}-train", train_keep, dataset.test),
                dataset.part(f"{dataset.name}-val", train_keep, dataset.train.subset(val_idx)))
    train_idx = torch.from_numpy(np.flatnonzero(keep))
    val_idx_t = torch.from_numpy(val_idx)

    def part(name: str, test_x: torch.Tensor, test_y: torch.Tensor) -> Dataset:
        return Dataset(
            name=name,
            train_x=dataset.train_x[train_idx],
            train_y=dataset.train_y[train_idx],
            test_x=test_x,
            test_y=test_y,
            classes=list(dataset.classes),
            source=dataset.source,
            mean=list(dataset.mean),
            std=list(dataset.std),
        )

    train_part = part(f"{dataset.name}-train", dataset.test_x, dataset.test_y)
    val_part = part(f"{dataset.name}-val", dataset.train_x[val_idx_t], dataset.train_y[val_idx_t])
    return train_part, val_part


def _stratified_pick(y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """`size` indices spread over classes in proportion to their frequency."""
    if size == 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    # round-robin over classes in a random order keeps the split stratified for any size
    by_class = [order[y[order] == c] for c in np.unique(y)]
    ranks = np.concatenate([np.arange(len(idx)) / len(idx) for idx in by_class])
    flat = np.concatenate(by_class)
    picked = flat[np.argsort(ranks, kind="stable")[:size]]
    return np.sort(picked)
