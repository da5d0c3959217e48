"""The supernet estimator's "heldout" split: full Fashion-MNIST images outside the shipped subset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hwnas.data import Dataset, load_dataset
from hwnas.data.datasets import DEBIAN_FMNIST_DIR, load_fmnist_unseen
from hwnas.errors import InputError, NotAvailableError
from hwnas.estimate import get_estimator
from hwnas.space.base import get_space
from hwnas.supernet import build_supernet
from hwnas.train.checkpoint import save_checkpoint
from hwnas.train.trainer import TrainSettings

TINY = {"width_mult": 0.25, "resolutions": [8, 12]}

torch.set_num_threads(1)

needs_fmnist = pytest.mark.skipif(not (DEBIAN_FMNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
                                  reason=f"the full Fashion-MNIST is absent ({DEBIAN_FMNIST_DIR}; "
                                         "Debian's dataset-fashion-mnist)")


def image_rows(x: torch.Tensor) -> set[bytes]:
    return {row.tobytes() for row in x.reshape(len(x), -1).numpy()}


@pytest.fixture(scope="module")
def shipped() -> Dataset:
    return load_dataset(None)


@pytest.fixture(scope="module")
def unseen(shipped) -> Dataset:
    return load_fmnist_unseen(shipped)


@needs_fmnist
def test_unseen_images_are_the_rest_of_fashion_mnist_prepared_like_the_subset(shipped, unseen):
    assert len(unseen.test_y) == 70_000 - len(shipped.train_y) - len(shipped.test_y)
    assert not image_rows(unseen.test_x) & image_rows(torch.cat([shipped.train_x, shipped.test_x]))
    assert unseen.test_x.dtype == torch.uint8 and unseen.test_x.shape[1:] == shipped.test_x.shape[1:]
    assert unseen.mean == shipped.mean and unseen.std == shipped.std
    # any prefix is about class-balanced: the first 1,000 hold 100 of each class
    assert np.bincount(unseen.test_y[:1000].numpy(), minlength=10).tolist() == [100] * 10
    x, _ = next(unseen.batches("test", 8))
    torch.testing.assert_close(x, shipped.normalize(unseen.test_x[:8]))


@needs_fmnist
def test_unseen_refuses_images_that_are_not_in_fashion_mnist(shipped):
    foreign = Dataset(name="f", train_x=255 - shipped.train_x[:20], train_y=shipped.train_y[:20],
                      test_x=shipped.test_x[:5], test_y=shipped.test_y[:5], classes=shipped.classes)
    with pytest.raises(InputError, match="not in these Fashion-MNIST"):
        load_fmnist_unseen(foreign)


def test_unseen_names_the_debian_folder_when_absent(shipped, tmp_path):
    with pytest.raises(NotAvailableError, match="dataset-fashion-mnist"):
        load_fmnist_unseen(shipped, tmp_path / "absent")


@needs_fmnist
def test_supernet_estimator_evaluates_on_heldout_images(shipped, unseen, tmp_path):
    space = get_space("mbv3-small-input", **TINY)
    torch.manual_seed(0)
    settings = TrainSettings(space_options=TINY, val_size=40)
    ckpt = tmp_path / "s.pt"
    save_checkpoint(ckpt, {"space": space.name, "space_config": {k: v for k, v in space.config().items()
                                                                  if k != "name"},
                           "model": build_supernet(space).state_dict(), "settings": vars(settings), "epoch": 0,
                           "history": []})
    data = Dataset(name="t", train_x=shipped.train_x[:200], train_y=shipped.train_y[:200],
                   test_x=shipped.test_x[:50], test_y=shipped.test_y[:50], classes=shipped.classes,
                   mean=shipped.mean, std=shipped.std)
    est = get_estimator("supernet", supernet_checkpoint=ckpt, data=data, split="heldout", eval_limit=60,
                        recal_batches=1, recal_batch_size=32)
    assert est.eval_size == 60
    # the images are those outside the whole shipped subset, not only outside `data`
    assert torch.equal(est.eval_data.test_x[:60], unseen.test_x[:60])
    correct, loss = est.outcomes(space.largest())
    assert correct.shape == loss.shape == (60,) and np.all(loss > 0)
    acc = est.predict([space.largest(), space.smallest()])
    assert acc[0] == 100 * correct.mean()
    np.testing.assert_allclose(acc * 60 / 100, np.round(acc * 60 / 100), atol=1e-9)  # whole images of 60

    other = TrainSettings(space_options=TINY, val_size=40, data=f"fashion-mnist:{DEBIAN_FMNIST_DIR}")
    save_checkpoint(ckpt, {"space": space.name, "space_config": {k: v for k, v in space.config().items()
                                                                  if k != "name"},
                           "model": build_supernet(space).state_dict(), "settings": vars(other), "epoch": 0,
                           "history": []})
    with pytest.raises(InputError, match="heldout"):  # images it was trained on are not held out
        get_estimator("supernet", supernet_checkpoint=ckpt, data=data, split="heldout")
