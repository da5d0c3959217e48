"""Dataset loaders (no torchvision): images as uint8 tensors, normalised per batch."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hwnas.errors import InputError

SUBSET_FILE = Path(__file__).with_name("fashion_mnist_subset.npz")
DEBIAN_FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DATASET_KINDS = ("fmnist-subset", "fashion-mnist", "cifar10", "folder")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff"}


def flip_and_shift(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Horizontal flip and a shift of up to 2 px (padding 2, random crop): cheap and label-safe."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    dy, dx = torch.randint(0, 5, (2,), generator=generator).tolist()
    return padded[:, :, dy : dy + h, dx : dx + w]


@dataclass
class Dataset:
    """Train and test images (uint8, N x C x H x W) with integer labels."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    source: str = ""
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.mean:
            x = self.train_x.float() / 255.0
            self.mean = x.mean(dim=(0, 2, 3)).tolist()
            self.std = x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images -> float, standardised with the training set's per-channel statistics."""
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x.float() / 255.0 - mean) / std

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        augment: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised (x, y) batches of `split` ("train" or "test")."""
        x, y = (self.train_x, self.train_y) if split == "train" else (self.test_x, self.test_y)
        n = len(y) if limit is None else min(limit, len(y))
        order = torch.randperm(len(y), generator=generator)[:n] if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            xb = x[idx]
            if augment:
                xb = flip_and_shift(xb, generator)
            yield self.normalize(xb), y[idx]


def load_dataset(spec: str | None = None, *, image_size: int = 32, seed: int = 0) -> Dataset:
    """Load a dataset from its spec (see the package docstring); bad specs raise InputError."""
    if spec is None or spec == "fmnist-subset":
        return load_fmnist_subset()
    kind, _, path = spec.partition(":")
    if kind == "fashion-mnist":
        return load_fashion_mnist(path or DEBIAN_FMNIST_DIR)
    if kind == "cifar10":
        if not path:
            raise InputError("expected cifar10:DIR, DIR holding data_batch_1..5 and test_batch", field="data")
        return load_cifar10(path)
    if kind == "folder":
        if not path:
            raise InputError("expected folder:DIR, DIR holding one sub-folder per class", field="data")
        return load_image_folder(path, image_size=image_size, seed=seed)
    raise InputError(f"unknown dataset {spec!r}; expected one of: {', '.join(DATASET_KINDS)}", field="data")


def load_fmnist_subset(path: str | os.PathLike = SUBSET_FILE) -> Dataset:
    path = Path(path)
    if not path.is_file():
        raise InputError("the shipped Fashion-MNIST subset is missing; run tools/make_fmnist_subset.py",
                         path=str(path))
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in ("train_x", "train_y", "test_x", "test_y")}
    except Exception as exc:  # noqa: BLE001 - any decode failure means a corrupt file
        raise InputError(f"corrupt dataset file ({exc})", path=str(path)) from exc
    return Dataset(
        name="fmnist-subset",
        train_x=torch.from_numpy(arrays["train_x"]).unsqueeze(1),
        train_y=torch.from_numpy(arrays["train_y"].astype(np.int64)),
        test_x=torch.from_numpy(arrays["test_x"]).unsqueeze(1),
        test_y=torch.from_numpy(arrays["test_y"].astype(np.int64)),
        classes=FMNIST_CLASSES,
        source=str(path),
    )


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (optionally gzipped): the format of MNIST and Fashion-MNIST."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError(f"bad magic (dtype code {dtype_code:#x}); expected unsigned-byte idx")
        dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
        body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
        if body.size != int(np.prod(dims)):
            raise ValueError(f"{body.size} bytes of data for shape {dims}")
        return body.reshape(dims)
    except (OSError, EOFError, struct.error, ValueError) as exc:
        raise InputError(f"not a valid idx file: {exc}", path=str(path)) from exc


def load_fashion_mnist(directory: str | os.PathLike) -> Dataset:
    directory = Path(directory)
    names = {
        "train_x": "train-images-idx3-ubyte",
        "train_y": "train-labels-idx1-ubyte",
        "test_x": "t10k-images-idx3-ubyte",
        "test_y": "t10k-labels-idx1-ubyte",
    }
    arrays = {}
    for key, stem in names.items():
        candidates = [directory / f"{stem}.gz", directory / stem]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise InputError(
                f"Fashion-MNIST file {stem}[.gz] not found (install Debian's dataset-fashion-mnist, "
                "or pass fashion-mnist:DIR)",
                path=str(directory),
            )
        arrays[key] = read_idx(found)
    for split in ("train", "test"):
        if len(arrays[f"{split}_x"]) != len(arrays[f"{split}_y"]):
            raise InputError(f"{split} images and labels differ in count", path=str(directory))
    return Dataset(
        name="fashion-mnist",
        train_x=torch.from_numpy(arrays["train_x"].copy()).unsqueeze(1),
        train_y=torch.from_numpy(arrays["train_y"].astype(np.int64)),
        test_x=torch.from_numpy(arrays["test_x"].copy()).unsqueeze(1),
        test_y=torch.from_numpy(arrays["test_y"].astype(np.int64)),
        classes=FMNIST_CLASSES,
        source=str(directory),
    )


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise InputError("CIFAR-10 batch file not found (expected the cifar-10-batches-py folder)",
                         path=str(path))
    try:
        # CIFAR-10's official python format is a pickle of plain arrays and lists; the restricted
        # unpickler below refuses anything else, so a hostile file cannot run code.
        with open(path, "rb") as f:
            batch = _PlainUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            raise ValueError(f"data shape {data.shape}, {len(labels)} labels; expected N x 3072 and N labels")
        if labels.min() < 0 or labels.max() > 9:
            raise ValueError("labels outside 0..9")
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decode failure means a corrupt file
        raise InputError(f"not a CIFAR-10 python batch: {exc}", path=str(path)) from exc
    return data.reshape(-1, 3, 32, 32), labels


class _PlainUnpickler(pickle.Unpickler):
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_cifar10(directory: str | os.PathLike) -> Dataset:
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError("CIFAR-10 folder not found (expected cifar-10-batches-py)", path=str(directory))
    parts = [_read_cifar_batch(directory / f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = _read_cifar_batch(directory / "test_batch")
    return Dataset(
        name="cifar10",
        train_x=torch.from_numpy(np.concatenate([p[0] for p in parts])),
        train_y=torch.from_numpy(np.concatenate([p[1] for p in parts])),
        test_x=torch.from_numpy(test_x),
        test_y=torch.from_numpy(test_y),
        classes=CIFAR10_CLASSES,
        source=str(directory),
    )


def load_image_folder(directory: str | os.PathLike, *, image_size: int = 32, seed: int = 0) -> Dataset:
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError("image folder not found", path=str(directory))
    train_dir, test_dir = directory / "train", next(
        (directory / n for n in ("test", "val") if (directory / n).is_dir()), None
    )
    if train_dir.is_dir() and test_dir is not None:
        classes = _class_names(train_dir)
        train_x, train_y = _read_images(train_dir, classes, image_size)
        test_x, test_y = _read_images(test_dir, classes, image_size)
    else:
        classes = _class_names(directory)
        x, y = _read_images(directory, classes, image_size)
        train_idx, test_idx = _stratified_split(y, test_fraction=0.2, seed=seed)
        train_x, train_y, test_x, test_y = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
    return Dataset(
        name="folder",
        train_x=torch.from_numpy(train_x),
        train_y=torch.from_numpy(train_y),
        test_x=torch.from_numpy(test_x),
        test_y=torch.from_numpy(test_y),
        classes=classes,
        source=str(directory),
    )


def _class_names(directory: Path) -> list[str]:
    classes = sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise InputError(f"expected one sub-folder per class (at least 2), found {len(classes)}",
                         path=str(directory))
    return classes


def _read_images(directory: Path, classes: list[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    images, labels = [], []
    for label, name in enumerate(classes):
        sub = directory / name
        if not sub.is_dir():
            raise InputError(f"class folder '{name}' missing (classes: {', '.join(classes)})", path=str(directory))
        files = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError("class folder holds no images (" + ", ".join(sorted(IMAGE_SUFFIXES)) + ")",
                             path=str(sub))
        for file in files:
            try:
                with Image.open(file) as im:
                    im = im.convert("RGB").resize((size, size), Image.BILINEAR)
                    images.append(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))
            except (UnidentifiedImageError, OSError) as exc:
                raise InputError(f"unreadable image ({exc})", path=str(file)) from exc
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = max(1, int(round(len(idx) * test_fraction))) if len(idx) > 1 else 0
        test.extend(idx[:k])
        train.extend(idx[k:])
    return np.sort(np.asarray(train)), np.sort(np.asarray(test))


def stratified_subset(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of `per_class` examples of every class, drawn without replacement."""
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(y == c), size=per_class, replace=False) for c in np.unique(y)]
    return np.sort(np.concatenate(picked))


def load_fmnist_unseen(seen: Dataset, directory: str | os.PathLike = DEBIAN_FMNIST_DIR, *,
                       seed: int = 0) -> Dataset:
    """Full Fashion-MNIST images (train and test files) that are not in `seen`, as the "test" split.

    `seen` is the data a model was trained and validated on (the shipped subset); its images are
    matched by content (pixels and label), so duplicates of a seen image elsewhere in Fashion-MNIST
    are left out too, and every seen image must be found (otherwise the files are another version).
    The unseen images come in a class-interleaved random order (any prefix is about balanced) and
    are normalised with `seen`'s statistics, so a model sees inputs prepared exactly as in training.
    """
    from hwnas.errors import NotAvailableError

    directory = Path(directory)
    if not directory.is_dir():
        raise NotAvailableError(
            "the full Fashion-MNIST is absent (install Debian's dataset-fashion-mnist, which puts it in "
            f"{DEBIAN_FMNIST_DIR})", path=str(directory))
    full = load_fashion_mnist(directory)
    if seen.train_x.shape[1:] != full.train_x.shape[1:]:
        raise InputError(f"images of {tuple(seen.train_x.shape[1:])} are not Fashion-MNIST images "
                         f"{tuple(full.train_x.shape[1:])}", field="data")
    x = torch.cat([full.test_x, full.train_x])
    y = torch.cat([full.test_y, full.train_y])
    keys = _image_keys(x, y)
    seen_keys = set(_image_keys(torch.cat([seen.train_x, seen.test_x]), torch.cat([seen.train_y, seen.test_y])))
    missing = len(seen_keys - set(keys))
    if missing:
        raise InputError(f"{missing} of the {len(seen_keys)} distinct seen images are not in these Fashion-MNIST "
                         "files; expected a subset drawn from them", path=str(directory))
    unseen = np.flatnonzero([k not in seen_keys for k in keys])
    labels = y.numpy()[unseen]
    rng = np.random.default_rng(seed)
    by_class = [rng.permutation(unseen[labels == c]) for c in np.unique(labels)]
    ranks = np.concatenate([np.arange(len(idx)) / len(idx) for idx in by_class])
    order = torch.from_numpy(np.concatenate(by_class)[np.argsort(ranks, kind="stable")])
    return Dataset(name="fashion-mnist-unseen", train_x=seen.train_x, train_y=seen.train_y, test_x=x[order],
                   test_y=y[order], classes=list(seen.classes), source=str(directory), mean=list(seen.mean),
                   std=list(seen.std))


def _image_keys(x: torch.Tensor, y: torch.Tensor) -> list[bytes]:
    """One bytes key per image: its pixels followed by its label."""
    flat = np.concatenate([x.reshape(len(x), -1).numpy(), y.numpy().astype(np.uint8)[:, None]], axis=1)
    return [row.tobytes() for row in np.ascontiguousarray(flat)]
