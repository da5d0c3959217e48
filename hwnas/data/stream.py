"""The streaming input pipeline: images read, decoded and augmented per batch by DataLoader workers.

Every batch is planned in the main process by `EpochBatches` (a batch sampler): which images, at
which resolution, with which augmentation seed. All three are functions of (seed, epoch, batch
position) only, so a batch is the same whichever worker builds it, with or without workers, and a
run resumed at batch k of an epoch sees exactly the batches an uninterrupted run sees from k on.

Image sets (`torch.utils.data.Dataset`s addressed by a whole `BatchPlan` through `__getitems__`):
  TensorImages   uint8 tensors in memory (the shipped subset, Fashion-MNIST, CIFAR-10): gathered and
                 augmented a batch at a time (flip + a shift of up to 2 px), at their stored size
  FolderImages   an image folder: each file opened with Pillow when its batch is built, so memory does
                 not grow with the number of images. Training: random-resized crop + horizontal flip
                 to the batch's resolution; evaluation: resize the short side to resolution / 0.875,
                 then a centre crop. An unreadable image is left out of its batch and reported
                 (`LoadedBatch.skipped`), never an error mid-epoch.

A batch arrives as uint8 (N, C, r, r) with its labels; `normalize` standardises it on the device.
"""

from __future__ import annotations

import gc
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from hwnas.data.datasets import flip_and_shift
from hwnas.errors import InputError

# evaluation resizes the short side to resolution / EVAL_CROP, then crops the centre (ImageNet's 0.875)
EVAL_CROP = 0.875
CROP_SCALE = (0.08, 1.0)  # random-resized crop: share of the image's area, as Inception / OFA train
CROP_RATIO = (3 / 4, 4 / 3)
STATS_SAMPLE = 512  # images the per-channel statistics of an image folder are computed on
STATS_RESOLUTION = 64


class BatchPlan(list):
    """The indices of one batch, with its epoch, position in the epoch, resolution and seed."""

    def __init__(self, indices: Sequence[int], *, epoch: int, position: int, resolution: int | None, seed: int,
                 train: bool):
        super().__init__(int(i) for i in indices)
        self.epoch, self.position, self.resolution, self.seed, self.train = epoch, position, resolution, seed, train


def batch_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (seed, epoch, position, ...), independent of any RNG state."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def shard_indices(n: int, epoch: int, seed: int, rank: int, world_size: int) -> torch.Tensor:
    """This rank's share of one epoch's shuffled order (as DistributedSampler, equal lengths)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=g)
    per_rank = n // world_size
    return order[rank * per_rank : (rank + 1) * per_rank]


class EpochBatches(torch.utils.data.Sampler):
    """One epoch of training batches for one rank, from batch `start` on (a resumed epoch).

    The epoch's order is `shard_indices` (a seeded permutation, this rank's equal share), cut to
    `limit` images per rank; each batch takes a resolution from `resolutions` (one for the whole
    batch, as once-for-all trains; drawn from the batch's seed) and an augmentation seed.
    """

    def __init__(self, n: int, batch_size: int, *, epoch: int, seed: int, rank: int = 0, world_size: int = 1,
                 limit: int | None = None, resolutions: Sequence[int] | None = None, start: int = 0):
        self.batch_size, self.epoch, self.seed, self.start = batch_size, epoch, seed, start
        self.resolutions = list(resolutions) if resolutions else None
        per_rank = (n if limit is None else min(n, limit)) // world_size
        self.order = shard_indices(n, epoch, seed, rank, world_size)[:per_rank].numpy()

    def __len__(self) -> int:
        return max(0, math.ceil(len(self.order) / self.batch_size) - self.start)

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.order) / self.batch_size)

    def plan(self, position: int) -> BatchPlan:
        seed = batch_seed(self.seed, self.epoch, position)
        r = None
        if self.resolutions:
            r = self.resolutions[np.random.default_rng(seed).integers(len(self.resolutions))]
        idx = self.order[position * self.batch_size : (position + 1) * self.batch_size]
        return BatchPlan(idx, epoch=self.epoch, position=position, resolution=r, seed=seed, train=True)

    def __iter__(self) -> Iterator[BatchPlan]:
        for position in range(self.start, self.batches_per_epoch):
            yield self.plan(position)


def evaluation_plans(n: int, batch_size: int, *, order: np.ndarray | None = None, resolution: int | None = None,
                     limit: int | None = None) -> list[BatchPlan]:
    """Batches over a split in order (or in `order`), for evaluation (no augmentation)."""
    order = np.arange(n) if order is None else np.asarray(order)
    if limit is not None:
        order = order[:limit]
    return [BatchPlan(order[s : s + batch_size], epoch=0, position=k, resolution=resolution, seed=0, train=False)
            for k, s in enumerate(range(0, len(order), batch_size))]


@dataclass
class LoadedBatch:
    """A batch as a worker built it: uint8 images, labels, and the files that could not be read."""

    x: torch.Tensor
    y: torch.Tensor
    skipped: list[str] = field(default_factory=list)
    position: int = 0
    resolution: int | None = None

    def pin_memory(self) -> LoadedBatch:  # DataLoader(pin_memory=True) calls this on custom batch types
        return LoadedBatch(self.x.pin_memory(), self.y.pin_memory(), self.skipped, self.position, self.resolution)


class ImageSet(torch.utils.data.Dataset):
    """Images and labels addressed a batch at a time (`__getitems__(plan) -> LoadedBatch`)."""

    labels: np.ndarray
    channels: int

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):  # single images (debugging, other samplers)
        batch = self.__getitems__(BatchPlan([index], epoch=0, position=0, resolution=None, seed=0, train=False))
        return (batch.x[0] if len(batch.y) else None), int(self.labels[index])

    def __getitems__(self, plan: BatchPlan) -> LoadedBatch:
        raise NotImplementedError

    def subset(self, indices: np.ndarray) -> ImageSet:
        raise NotImplementedError

    @property
    def fixed_size(self) -> int | None:
        """The stored image size when every image has one (tensors), else None (files of any size)."""
        return None


class TensorImages(ImageSet):
    """uint8 images (N, C, H, W) in memory; augmentation is a flip and a shift of up to 2 px."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, augment: bool = True):
        self.x, self.y, self.augment = x, y, augment
        self.labels = y.numpy()
        self.channels = int(x.shape[1])

    @property
    def fixed_size(self) -> int | None:
        return int(self.x.shape[-1])

    def subset(self, indices: np.ndarray) -> TensorImages:
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return TensorImages(self.x[idx], self.y[idx], augment=self.augment)

    def __getitems__(self, plan: BatchPlan) -> LoadedBatch:
        idx = torch.as_tensor(list(plan), dtype=torch.long)
        x = self.x[idx]
        if plan.train and self.augment:
            x = flip_and_shift(x, torch.Generator().manual_seed(plan.seed))
        return LoadedBatch(x, self.y[idx], [], plan.position, plan.resolution)


class FolderImages(ImageSet):
    """Image files read lazily with Pillow (RGB), decoded and augmented when their batch is built."""

    def __init__(self, files: np.ndarray, labels: np.ndarray, *, augment: bool = True, default_resolution: int = 224):
        # file names as one numpy bytes array (1 byte a character): no per-item Python objects, whose
        # reference counts would make forked workers copy the pages they sit on
        self.files = np.asarray(files, dtype=np.bytes_)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.augment, self.default_resolution = augment, default_resolution
        self.channels = 3

    def subset(self, indices: np.ndarray) -> FolderImages:
        indices = np.asarray(indices, dtype=np.int64)
        return FolderImages(self.files[indices], self.labels[indices], augment=self.augment,
                            default_resolution=self.default_resolution)

    def __getitems__(self, plan: BatchPlan) -> LoadedBatch:
        r = plan.resolution or self.default_resolution
        rng = np.random.default_rng(plan.seed)
        images, labels, skipped = [], [], []
        for i in plan:
            # the draws happen whether or not the file reads, so one bad file shifts no other image's crop
            draws = rng.random(5)
            try:
                images.append(self.load(int(i), r, draws if plan.train else None))
                labels.append(self.labels[i])
            except Exception as exc:  # noqa: BLE001 - any decode failure: skip the image, report it
                skipped.append(f"{os.fsdecode(self.files[i])} ({type(exc).__name__}: {exc})")
        x = torch.from_numpy(np.stack(images)) if images else torch.zeros((0, 3, r, r), dtype=torch.uint8)
        return LoadedBatch(x, torch.as_tensor(np.asarray(labels, dtype=np.int64)), skipped, plan.position, r)

    def load(self, i: int, r: int, draws: np.ndarray | None) -> np.ndarray:
        """Image `i` as uint8 (3, r, r): augmented with `draws` (5 uniforms) when given."""
        from PIL import Image

        with Image.open(os.fsdecode(self.files[i])) as im:
            if draws is None:
                im.draft("RGB", (r, r))  # JPEG: decode at the smallest DCT scale still >= r
            im = im.convert("RGB")
            w, h = im.size
            if draws is None:
                box = centre_box(w, h, EVAL_CROP)
            else:
                box = random_resized_box(w, h, draws[:4], self.augment)
            im = im.resize((r, r), Image.BILINEAR, box=box)
            if draws is not None and self.augment and draws[4] < 0.5:
                im = im.transpose(Image.FLIP_LEFT_RIGHT)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()


def centre_box(w: int, h: int, crop: float) -> tuple[float, float, float, float]:
    """The centre square of side crop * short side (resize to r / crop, then crop r)."""
    side = crop * min(w, h)
    return ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)


def random_resized_box(w: int, h: int, u: np.ndarray, augment: bool) -> tuple[float, float, float, float]:
    """Inception's random-resized crop from 4 uniforms: area share in CROP_SCALE, aspect in CROP_RATIO
    (log-uniform), clipped to the image; without augmentation the centre crop."""
    if not augment:
        return centre_box(w, h, EVAL_CROP)
    area = w * h * (CROP_SCALE[0] + u[0] * (CROP_SCALE[1] - CROP_SCALE[0]))
    log_lo, log_hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    ratio = math.exp(log_lo + u[1] * (log_hi - log_lo))
    cw = min(float(w), math.sqrt(area * ratio))
    ch = min(float(h), math.sqrt(area / ratio))
    x0 = u[2] * (w - cw)
    y0 = u[3] * (h - ch)
    return (x0, y0, x0 + cw, y0 + ch)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 images -> float, standardised per channel (the same formula as hwnas.data.Dataset)."""
    m = torch.tensor(list(mean), device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(list(std), device=x.device).view(1, -1, 1, 1)
    return (x.float() / 255.0 - m) / s


def _identity(batch: LoadedBatch) -> LoadedBatch:
    return batch


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # a worker decodes; the main process's threads run the network
    # the objects inherited from the parent are never garbage here: out of the collector's sight, its
    # passes stop touching (and so copying) their pages, which cost a worker 3-4 times its decoding
    gc.freeze()


def make_loader(images: ImageSet, plans, *, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A DataLoader yielding LoadedBatch for each plan of `plans` (a batch sampler or a list of plans)."""
    extra = {"prefetch_factor": 2, "worker_init_fn": _worker_init} if num_workers > 0 else {}
    return DataLoader(images, batch_sampler=plans, num_workers=num_workers, collate_fn=_identity,
                      pin_memory=pin_memory, **extra)


def default_workers(images: ImageSet) -> int:
    """0 for images in memory (a batch is one gather); otherwise up to 4, leaving a core to the network."""
    if images.fixed_size is not None:
        return 0
    return max(1, min(4, (os.cpu_count() or 2) - 1))


# --- image folders ------------------------------------------------------------------------------


@dataclass
class StreamDataset:
    """Train and test image sets read on demand, with the training images' per-channel statistics.

    Offers what training and evaluation use of `hwnas.data.Dataset` (`train_y`, `test_y`, `classes`,
    `mean`, `std`, `batches`), without holding the images.
    """

    name: str
    train: ImageSet
    test: ImageSet
    classes: list[str]
    source: str = ""
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    num_workers: int | None = None
    skipped: list[str] = field(default_factory=list)  # unreadable files met by `batches`

    def __post_init__(self) -> None:
        if not self.mean:
            self.mean, self.std = channel_statistics(self.train)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.train.channels

    @property
    def train_y(self) -> torch.Tensor:
        return torch.from_numpy(self.train.labels)

    @property
    def test_y(self) -> torch.Tensor:
        return torch.from_numpy(self.test.labels)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, self.mean, self.std)

    def part(self, name: str, train_idx: np.ndarray, test: ImageSet) -> StreamDataset:
        return StreamDataset(name=name, train=self.train.subset(train_idx), test=test, classes=list(self.classes),
                             source=self.source, mean=list(self.mean), std=list(self.std),
                             num_workers=self.num_workers, skipped=self.skipped)  # one count for all parts

    def batches(self, split: str, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                augment: bool = False, limit: int | None = None,
                resolution: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised (x, y) batches of `split` at `resolution` (evaluation transform; unreadable files
        are left out and recorded in `skipped`)."""
        images = self.train if split == "train" else self.test
        n = len(images)
        order = torch.randperm(n, generator=generator).numpy() if shuffle else None
        plans = evaluation_plans(n, batch_size, order=order, resolution=resolution, limit=limit)
        workers = default_workers(images) if self.num_workers is None else self.num_workers
        for batch in make_loader(images, plans, num_workers=min(workers, len(plans))):
            self.skipped.extend(batch.skipped)
            if len(batch.y):
                yield self.normalize(batch.x), batch.y


def channel_statistics(images: ImageSet, *, sample: int = STATS_SAMPLE, seed: int = 0) -> tuple[list, list]:
    """Per-channel mean and std (of x / 255) over a seeded sample of `images` (evaluation transform)."""
    n = len(images)
    pick = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    res = images.fixed_size or STATS_RESOLUTION
    total = np.zeros(images.channels)
    total_sq = np.zeros(images.channels)
    count = 0
    for plan in evaluation_plans(n, 64, order=pick, resolution=res):
        x = images.__getitems__(plan).x.double() / 255.0
        total += x.sum(dim=(0, 2, 3)).numpy()
        total_sq += (x**2).sum(dim=(0, 2, 3)).numpy()
        count += x.shape[0] * x.shape[2] * x.shape[3]
    if count == 0:
        raise InputError("no readable image in the statistics sample", field="data")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return mean.tolist(), np.maximum(std, 1e-3).tolist()


def list_image_folder(directory: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every image file under directory/<class>/ (sorted), with its class index."""
    from hwnas.data.datasets import IMAGE_SUFFIXES

    files, labels = [], []
    for label, name in enumerate(classes):
        sub = directory / name
        if not sub.is_dir():
            raise InputError(f"class folder '{name}' missing (classes: {', '.join(classes)})", path=str(directory))
        found = sorted(os.fsencode(e.path) for e in os.scandir(sub)
                       if e.is_file() and Path(e.name).suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise InputError("class folder holds no images (" + ", ".join(sorted(IMAGE_SUFFIXES)) + ")",
                             path=str(sub))
        files.extend(found)
        labels.extend([label] * len(found))
    return np.asarray(files, dtype=np.bytes_), np.asarray(labels, dtype=np.int64)


def open_image_folder(directory: str | os.PathLike, *, seed: int = 0, augment: bool = True,
                      mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> StreamDataset:
    """An image folder (DIR/train + DIR/test|val, or one folder split 80/20 stratified) read on demand;
    `mean`/`std` given (a checkpoint's) are used instead of computing them on a sample."""
    from hwnas.data.datasets import _class_names, _stratified_split

    directory = Path(directory)
    if not directory.is_dir():
        raise InputError("image folder not found", path=str(directory))
    test_dir = next((directory / n for n in ("test", "val") if (directory / n).is_dir()), None)
    if (directory / "train").is_dir() and test_dir is not None:
        classes = _class_names(directory / "train")
        train = FolderImages(*list_image_folder(directory / "train", classes), augment=augment)
        test = FolderImages(*list_image_folder(test_dir, classes), augment=False)
    else:
        classes = _class_names(directory)
        files, labels = list_image_folder(directory, classes)
        train_idx, test_idx = _stratified_split(labels, test_fraction=0.2, seed=seed)
        train = FolderImages(files[train_idx], labels[train_idx], augment=augment)
        test = FolderImages(files[test_idx], labels[test_idx], augment=False)
    return StreamDataset(name="folder", train=train, test=test, classes=classes, source=str(directory),
                         mean=list(mean or []), std=list(std or []))


def open_dataset(spec: str | None = None, *, seed: int = 0, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None):
    """What training reads: an image folder ("folder:DIR") streamed from its files, any other spec
    (see `load_dataset`) as tensors in memory (they are small: 47 MB for Fashion-MNIST)."""
    from hwnas.data.datasets import load_dataset

    kind, _, path = (spec or "").partition(":")
    if kind == "folder" and path:
        return open_image_folder(path, seed=seed, mean=mean, std=std)
    return load_dataset(spec, seed=seed)


def training_images(data, *, augment: bool) -> ImageSet:
    """The training split of `data` (a Dataset in memory or a StreamDataset) as an ImageSet."""
    if isinstance(data, StreamDataset):
        images = data.train.subset(np.arange(len(data.train)))
        images.augment = augment
        return images
    return TensorImages(data.train_x, data.train_y, augment=augment)


def report_skipped(skipped: list[str], where: str, *, show: int = 3) -> None:
    if skipped:
        listed = "; ".join(skipped[:show]) + (f"; and {len(skipped) - show} more" if len(skipped) > show else "")
        print(f"hwnas: skipped {len(skipped)} unreadable image(s) {where}: {listed}", file=sys.stderr)
