"""The streaming input pipeline (hwnas.data.stream) and resumable training on it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import TINY, tiny_data, tiny_settings

from hwnas.data import StreamDataset, open_dataset
from hwnas.data.stream import (
    CROP_SCALE,
    EpochBatches,
    FolderImages,
    channel_statistics,
    evaluation_plans,
    make_loader,
    random_resized_box,
)
from hwnas.train import read_checkpoint, train
from hwnas.train import trainer as trainer_module

pytest.importorskip("PIL")


def make_image_folder(root: Path, *, per_class: int = 10, classes: int = 3, bad: int = 0, test_per_class: int = 2,
                      seed: int = 0) -> Path:
    """DIR/train/<class>/ and DIR/test/<class>/ of small JPEGs and PNGs of assorted sizes (class = colour),
    plus `bad` unreadable files in train/: garbage bytes named .jpg, and JPEGs cut short."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", test_per_class)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                h, w = (int(v) for v in rng.integers(20, 48, size=2))
                pixels = rng.integers(0, 80, size=(h, w, 3)) + np.eye(3)[c] * 160
                image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
                image.save(folder / f"{i}.{'png' if i % 3 == 0 else 'jpg'}", quality=90)
    for k in range(bad):
        target = root / "train" / f"class{k % classes}" / f"bad{k}.jpg"
        if k % 2 == 0:
            target.write_bytes(rng.integers(0, 256, size=300, dtype=np.uint8).tobytes())
        else:  # the first half of a real JPEG
            whole = (root / "train" / "class0" / "1.jpg").read_bytes()
            target.write_bytes(whole[: len(whole) // 2])
    return root


def folder_settings(folder: Path, **kw):
    base = dict(data=f"folder:{folder}", val_size=0, limit_train=None, batch_size=8, augment=True)
    return tiny_settings(**{**base, **kw})


def test_folder_batches_are_the_same_with_and_without_worker_processes(tmp_path):
    images = open_dataset(f"folder:{make_image_folder(tmp_path / 'f', per_class=8)}").train
    sampler = EpochBatches(len(images), 5, epoch=1, seed=3, resolutions=[16, 24])
    alone = list(make_loader(images, sampler, num_workers=0))
    pooled = list(make_loader(images, sampler, num_workers=2))
    assert [b.position for b in pooled] == list(range(len(sampler)))
    for a, b in zip(alone, pooled, strict=True):
        assert a.resolution == b.resolution and a.x.shape[-2:] == (a.resolution, a.resolution)
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert {b.resolution for b in alone} == {16, 24}  # one resolution per batch, both drawn


def test_a_resumed_epoch_plans_the_remaining_batches_of_the_uninterrupted_one():
    full = list(EpochBatches(100, 8, epoch=2, seed=5, resolutions=[8, 12, 16]))
    rest = list(EpochBatches(100, 8, epoch=2, seed=5, resolutions=[8, 12, 16], start=4))
    assert len(rest) == len(full) - 4
    for a, b in zip(full[4:], rest, strict=True):
        assert list(a) == list(b) and (a.resolution, a.seed, a.position) == (b.resolution, b.seed, b.position)
    other_epoch = list(EpochBatches(100, 8, epoch=3, seed=5))
    assert [list(p) for p in other_epoch] != [list(p) for p in full]


def test_ranks_take_disjoint_equal_shards():
    shards = [np.concatenate([list(p) for p in EpochBatches(103, 8, epoch=0, seed=1, rank=r, world_size=2)])
              for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 51
    assert not set(shards[0]) & set(shards[1])


def test_random_resized_crop_stays_inside_the_image_with_the_stated_area():
    rng = np.random.default_rng(0)
    for _ in range(500):
        w, h = (int(v) for v in rng.integers(10, 400, size=2))
        x0, y0, x1, y1 = random_resized_box(w, h, rng.random(4), True)
        assert 0 <= x0 < x1 <= w + 1e-9 and 0 <= y0 < y1 <= h + 1e-9
        assert (x1 - x0) * (y1 - y0) <= CROP_SCALE[1] * w * h + 1e-6


def test_folder_statistics_come_from_a_sample_and_match_the_pixels(tmp_path):
    data = open_dataset(f"folder:{make_image_folder(tmp_path / 'f', per_class=6)}")
    assert isinstance(data, StreamDataset) and len(data.mean) == 3 and all(s > 0 for s in data.std)
    # every class is one bright channel over dark noise: each channel's mean is about (40 + 160 / 3) / 255
    assert np.allclose(data.mean, (40 + 160 / 3) / 255, atol=0.06)
    # the sample holds every image here: the statistics are those of all decoded pixels
    x = torch.cat([b.x for b in make_loader(data.train, evaluation_plans(len(data.train), 5, resolution=64))])
    pixels = x.double().div(255).transpose(0, 1).reshape(3, -1)
    assert np.allclose(data.mean, pixels.mean(1).numpy()) and np.allclose(data.std, pixels.std(1).numpy(), atol=1e-3)
    mean, _ = channel_statistics(data.train, sample=6, seed=1)  # a smaller sample: near, not equal
    assert np.allclose(mean, data.mean, atol=0.2) and mean != data.mean


def test_unreadable_images_are_skipped_and_counted_not_fatal(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "f", per_class=6, bad=2)
    images = FolderImages(*_files(folder / "train"))
    batches = list(make_loader(images, evaluation_plans(len(images), 7, resolution=12), num_workers=0))
    assert sum(len(b.skipped) for b in batches) == 2
    assert sum(len(b.y) for b in batches) == len(images) - 2
    out = tmp_path / "c.pt"
    result = train(folder_settings(folder, epochs=2, num_workers=1), out, device="cpu", progress=False)
    assert result["skipped_images"] == 4  # both bad files, in each of the two epochs
    assert [h["skipped_images"] for h in result["curve"]] == [2, 2]
    assert "skipped 1 unreadable image(s)" in capsys.readouterr().err
    ckpt = read_checkpoint(out)
    assert ckpt["data"]["streamed"] and ckpt["data"]["mean"] == pytest.approx(
        open_dataset(f"folder:{folder}").mean)


def _files(split_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    from hwnas.data.stream import list_image_folder

    return list_image_folder(split_dir, sorted(p.name for p in split_dir.iterdir()))


class Crash(Exception):
    pass


def crash_after(monkeypatch, steps: int) -> None:
    """Make the trainer's sandwich step raise after `steps` steps (the process dies mid-epoch)."""
    real, calls = trainer_module.sandwich_step, [0]

    def step(*args, **kwargs):
        calls[0] += 1
        if calls[0] > steps:
            raise Crash
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "sandwich_step", step)


@pytest.mark.parametrize("source", ["memory", "folder"])
def test_resumed_mid_epoch_the_losses_equal_the_uninterrupted_run(tmp_path, monkeypatch, source):
    if source == "folder":
        folder = make_image_folder(tmp_path / "f", per_class=14, bad=1)
        settings, data = (lambda: folder_settings(folder, epochs=2, num_workers=2)), None
    else:
        settings = lambda: tiny_settings(epochs=2, limit_train=96, batch_size=16, augment=True)  # noqa: E731
        data = tiny_data(n_train=160)
    whole = train(settings(), tmp_path / "whole.pt", device="cpu", progress=False, dataset=data)
    reference = read_checkpoint(tmp_path / "whole.pt")["step_losses"]
    per_epoch = len(reference) // 2
    out = tmp_path / "resumed.pt"
    crash_after(monkeypatch, per_epoch + 2)  # two steps into the second epoch
    with pytest.raises(Crash):
        train(replace(settings(), checkpoint_every=1), out, device="cpu", progress=False, dataset=data)
    monkeypatch.undo()
    ckpt = read_checkpoint(out)
    assert (ckpt["epoch"], ckpt["position"]) == (1, 2)
    resumed = train(settings(), out, resume=True, device="cpu", progress=False, dataset=data)
    assert resumed["resumed_from_step"] == per_epoch + 2
    assert read_checkpoint(out)["step_losses"] == reference  # exactly, step by step
    assert [h["loss"] for h in resumed["curve"]] == [h["loss"] for h in whole["curve"]]
    assert resumed["acc_largest"] == whole["acc_largest"]


def test_batch_resolution_trains_every_subnet_of_a_step_at_the_batch_resolution(tmp_path, monkeypatch):
    seen = []
    real = trainer_module.sandwich_step

    def step(supernet, optimizer, x, y, archs, **kw):
        seen.append((x.shape[-1], {a["r"] for a in archs}))
        return real(supernet, optimizer, x, y, archs, **kw)

    monkeypatch.setattr(trainer_module, "sandwich_step", step)
    folder = make_image_folder(tmp_path / "f", per_class=12)
    result = train(folder_settings(folder, num_workers=0), tmp_path / "c.pt", device="cpu", progress=False)
    assert result["elastic_resolution"] == "batch"
    assert all(rs == {size} for size, rs in seen)
    assert {size for size, _ in seen} == set(TINY["resolutions"])


def test_the_checkpoint_stores_the_normalisation_the_export_contract_uses(tmp_path):
    from hwnas.export.preprocess import InputContract

    data = tiny_data()
    train(tiny_settings(), tmp_path / "c.pt", device="cpu", progress=False, dataset=data)
    stored = read_checkpoint(tmp_path / "c.pt")["data"]
    assert stored["mean"] == pytest.approx(data.mean) and stored["std"] == pytest.approx(data.std)
    other = {"mean": [0.25], "std": [0.5]}  # e.g. a folder's statistics, computed on a sample when training
    contract = InputContract.from_dataset(data, 12, stats=other)
    assert (contract.mean, contract.std) == ([0.25], [0.5])
    assert InputContract.from_dataset(data, 12, stats={}).mean == pytest.approx(data.mean)


@pytest.mark.parametrize("field, value", [("checkpoint_every", 0), ("checkpoint_minutes", -1.0), ("num_workers", -1),
                                          ("elastic_resolution", "pixel")])
def test_bad_loader_and_checkpoint_settings_name_their_field(field, value):
    from hwnas.errors import InputError

    with pytest.raises(InputError) as err:
        tiny_settings(**{field: value}).validate()
    assert err.value.field == field


@pytest.mark.slow  # CPU autocast is emulated: minutes on 2 cores
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_step_runs_and_learns(dtype):
    """The CUDA mixed-precision path (autocast, float16 loss scaling) exercised on CPU autocast."""
    from hwnas.space import get_space
    from hwnas.supernet import build_supernet
    from hwnas.train.trainer import MixedPrecision, TrainSettings, make_optimizer, sandwich_archs, sandwich_step

    torch.manual_seed(0)
    space = get_space("mbv3-small-input", **TINY)
    net = build_supernet(space)
    opt = make_optimizer(net, TrainSettings(lr=0.05))
    precision = MixedPrecision.__new__(MixedPrecision)
    precision.device_type, precision.dtype = "cpu", dtype
    precision.scaler = torch.amp.GradScaler("cpu") if dtype == torch.float16 else None
    x, y = next(tiny_data().batches("train", 32))
    rng = np.random.default_rng(0)
    losses = [sandwich_step(net, opt, x, y, sandwich_archs(space, rng, 1), precision=precision)["loss_largest"]
              for _ in range(8)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert precision.state_dict() == ({} if precision.scaler is None else precision.scaler.state_dict())
