import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from hwnas.data import load_dataset
from hwnas.data.datasets import read_idx
from hwnas.errors import InputError


def test_shipped_subset_is_stratified_and_licensed():
    d = load_dataset()
    assert d.train_x.shape == (10000, 1, 28, 28) and d.test_x.shape == (2000, 1, 28, 28)
    assert d.train_x.dtype == torch.uint8
    assert d.train_y.bincount().tolist() == [1000] * 10
    assert d.test_y.bincount().tolist() == [200] * 10
    from hwnas.data.datasets import SUBSET_FILE

    notice = SUBSET_FILE.with_name("LICENSE-fashion-mnist.txt").read_text()
    assert "Zalando SE" in notice and "MIT" in notice


def test_batches_are_normalised_and_cover_the_split():
    d = load_dataset()
    seen = 0
    for x, y in d.batches("test", 512):
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28)
        seen += len(y)
    assert seen == 2000
    x, _ = next(d.batches("train", 10000))
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-2


def test_augmented_batches_keep_shape_and_differ():
    d = load_dataset()
    g = torch.Generator().manual_seed(0)
    x0, _ = next(d.batches("train", 64))
    x1, _ = next(d.batches("train", 64, augment=True, generator=g))
    assert x1.shape == x0.shape and not torch.equal(x0, x1)


def _write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_loader_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("t10k", 10)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    d = load_dataset(f"fashion-mnist:{tmp_path}")
    assert d.train_x.shape == (20, 1, 28, 28) and d.test_y.shape == (10,)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x09xx"))
    with pytest.raises(InputError, match="not a valid idx file"):
        load_dataset(f"fashion-mnist:{tmp_path}")
    with pytest.raises(InputError, match="not found"):
        load_dataset(f"fashion-mnist:{tmp_path / 'nowhere'}")


def _write_cifar(directory, n_per_batch=6):
    rng = np.random.default_rng(1)
    directory.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 255, (n_per_batch, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n_per_batch).tolist()}
        with open(directory / name, "wb") as f:
            pickle.dump(batch, f)


def test_cifar10_pickles(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    _write_cifar(root)
    d = load_dataset(f"cifar10:{root}")
    assert d.train_x.shape == (30, 3, 32, 32) and d.test_x.shape == (6, 3, 32, 32)
    assert d.num_classes == 10 and d.in_channels == 3
    with open(root / "data_batch_1", "rb") as f:
        raw = pickle.load(f)  # noqa: S301 - the test's own file
    assert torch.equal(d.train_x[0], torch.from_numpy(raw[b"data"][0].reshape(3, 32, 32)))


def test_cifar10_corrupt_or_hostile_file_is_input_error(tmp_path):
    root = tmp_path / "c"
    _write_cifar(root)
    (root / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(InputError, match="data_batch_3"):
        load_dataset(f"cifar10:{root}")
    # a pickle that would call os.system must be refused, not run
    (root / "data_batch_3").write_bytes(b"cos\nsystem\n(S'echo hacked'\ntR.")
    with pytest.raises(InputError, match="refusing"):
        load_dataset(f"cifar10:{root}")


def test_image_folder_split_and_errors(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    for cls in ("cat", "dog", "eel"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(5):
            pixels = rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "imgs" / cls / f"{i}.png")
    d = load_dataset(f"folder:{tmp_path / 'imgs'}", image_size=16)
    assert d.classes == ["cat", "dog", "eel"]
    assert d.train_x.shape[1:] == (3, 16, 16)
    assert len(d.train_y) == 12 and len(d.test_y) == 3 and d.test_y.bincount().tolist() == [1, 1, 1]
    (tmp_path / "imgs" / "dog" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="bad.png"):
        load_dataset(f"folder:{tmp_path / 'imgs'}")


def test_unknown_dataset_spec():
    with pytest.raises(InputError, match="unknown dataset"):
        load_dataset("imagenet:/x")
    with pytest.raises(InputError, match="cifar10:DIR"):
        load_dataset("cifar10")


def test_read_idx_rejects_wrong_magic(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(struct.pack(">HBB", 0, 0x0D, 1) + struct.pack(">I", 1) + b"\0\0\0\0")
    with pytest.raises(InputError, match="unsigned-byte"):
        read_idx(p)
