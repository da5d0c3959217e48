"""Supernet training: the sandwich step, checkpoints, resume, progressive shrinking, two-process DDP."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from hwnas.cli import main as cli_main
from hwnas.data import Dataset, load_dataset
from hwnas.errors import InputError
from hwnas.space.base import get_space
from hwnas.supernet import build_supernet
from hwnas.train import TrainSettings, load_checkpoint, read_checkpoint, sandwich_archs, sandwich_step, train
from hwnas.train.checkpoint import save_checkpoint
from hwnas.train.splits import split_validation
from hwnas.train.trainer import constrain, fair_group, make_optimizer, phase_of

TINY = {"width_mult": 0.25, "resolutions": [8, 12]}

torch.set_num_threads(1)


def tiny_data(n_train: int = 192, n_test: int = 64) -> Dataset:
    full = load_dataset(None)
    return Dataset(name="tiny", train_x=full.train_x[:n_train], train_y=full.train_y[:n_train],
                   test_x=full.test_x[:n_test], test_y=full.test_y[:n_test], classes=full.classes,
                   mean=full.mean, std=full.std)


def tiny_settings(**kw) -> TrainSettings:
    base = dict(space="mbv3-small-input", space_options=TINY, epochs=1, batch_size=32, val_size=32,
                recal_batches=1, recal_batch_size=32, eval_batch_size=64, limit_train=64, num_random=1)
    return TrainSettings(**{**base, **kw})


def test_sandwich_step_lowers_loss_and_updates_shared_weights():
    torch.manual_seed(0)
    space = get_space("mbv3-small-input", **TINY)
    net = build_supernet(space)
    opt = make_optimizer(net, TrainSettings(lr=0.05))
    data = tiny_data()
    x, y = next(data.batches("train", 32))
    stem_before = net.stem.state_dict()[next(iter(net.stem.state_dict()))].clone()
    rng = np.random.default_rng(0)
    losses = [sandwich_step(net, opt, x, y, sandwich_archs(space, rng, 1))["loss_largest"] for _ in range(8)]
    assert losses[-1] < losses[0]
    stem_after = net.stem.state_dict()[next(iter(net.stem.state_dict()))]
    assert not torch.equal(stem_before, stem_after)


def test_sandwich_archs_are_largest_smallest_then_random():
    space = get_space("mbv3-small-input", **TINY)
    archs = sandwich_archs(space, np.random.default_rng(1), 3)
    assert archs[0] == space.largest() and archs[1] == space.smallest() and len(archs) == 5


def test_fair_sampling_trains_every_choice_of_every_gene_once_a_step():
    space = get_space("mbv3-small-input", **TINY)
    lower, upper = space.bounds
    n = int(max(upper - lower)) + 1  # as many subnets as the most choices a gene has (3 here)
    rng = np.random.default_rng(4)
    for _ in range(5):
        archs = sandwich_archs(space, rng, n - 1, sampling="fair")
        assert archs[0] == space.largest() and len(archs) == n + 1
        X = np.stack([space.encode(a) for a in archs[1:]])
        for gene in always_used_genes(space):
            # each choice of the gene appears once
            assert set(X[:, gene]) == set(range(int(lower[gene]), int(upper[gene]) + 1)), gene
    # genes are shuffled apart: the group is not the largest / middle / smallest subnets
    assert any(len(set(space.encode(a))) > 1 for a in archs[1:])
    # more subnets than choices: every choice used as evenly as it can be
    X = np.stack([space.encode(a) for a in fair_group(space, np.random.default_rng(0), 7)])
    for gene in always_used_genes(space):
        counts = np.bincount(X[:, gene] - lower[gene], minlength=int(upper[gene] - lower[gene]) + 1)
        assert counts.max() - counts.min() <= 1, gene


def always_used_genes(space) -> list[int]:
    """Resolution, depths, and the kernel and expand genes of the first two blocks of each stage (every
    depth has them; the encoding resets the genes of blocks a depth leaves out)."""
    stages, slots = space.n_stages, space.n_slots
    per_stage = slots // stages
    first_two = [s * per_stage + j for s in range(stages) for j in range(2)]
    return list(range(1 + stages)) + [1 + stages + i for i in first_two] + [1 + stages + slots + i for i in first_two]


def test_sampling_is_checked_and_the_short_schedule_samples_fairly():
    with pytest.raises(InputError, match="sampling"):
        TrainSettings(sampling="uniform").validate()
    assert TrainSettings.short_schedule().sampling == "fair"
    assert TrainSettings().sampling == "sandwich"


def test_training_trains_the_subnets_its_sampling_names(tmp_path, monkeypatch):
    """The trainer hands `sampling` to every step: a fair group covers every choice of every gene in each
    step, the sandwich's second subnet is the smallest; the checkpoint records which ran."""
    import hwnas.train.trainer as trainer

    space = get_space("mbv3-small-input", **TINY)
    steps: list[list[dict]] = []
    real_step = trainer.sandwich_step
    monkeypatch.setattr(trainer, "sandwich_step", lambda net, opt, x, y, archs, **kw: (
        steps.append(archs), real_step(net, opt, x, y, archs, **kw))[1])
    data = tiny_data()
    lower, upper = space.bounds
    train(tiny_settings(sampling="fair", num_random=2, limit_train=128), tmp_path / "fair.pt", device="cpu",
          progress=False, dataset=data)
    assert len(steps) == 4 and all(len(archs) == 4 and archs[0] == space.largest() for archs in steps)
    for archs in steps:  # every choice of every gene in each step's group of three
        X = np.stack([space.encode(a) for a in archs[1:]])
        assert all(set(X[:, g]) == set(range(int(lower[g]), int(upper[g]) + 1)) for g in always_used_genes(space))
    assert read_checkpoint(tmp_path / "fair.pt")["settings"]["sampling"] == "fair"
    steps.clear()
    train(tiny_settings(sampling="sandwich", num_random=2, limit_train=128), tmp_path / "sandwich.pt", device="cpu",
          progress=False, dataset=data)
    assert len(steps) == 4 and all(archs[1] == space.smallest() for archs in steps)


def test_the_train_command_passes_sampling_to_the_library(tmp_path, monkeypatch):
    import hwnas.pipeline

    seen: dict = {}

    def fake_train(**kwargs):
        seen.update(kwargs)
        raise InputError("stopped before training", field="test")

    monkeypatch.setattr(hwnas.pipeline, "train", fake_train)
    assert cli_main(["train", "--quick", "--sampling", "sandwich", "--out", str(tmp_path / "c.pt")]) == 2
    assert seen["sampling"] == "sandwich" and seen["quick"] is True
    seen.clear()
    cli_main(["train", "--quick", "--out", str(tmp_path / "c.pt")])
    assert "sampling" not in seen  # unset: the short schedule's own (fair) applies


def test_shared_resolution_runs_every_subnet_of_a_step_at_one_drawn_resolution():
    space = get_space("mbv3-small-input", resolutions=[8, 12, 16], width_mult=0.25)
    rng = np.random.default_rng(0)
    drawn = set()
    for _ in range(30):
        archs = sandwich_archs(space, rng, 2, shared_resolution=True)
        assert len({a["r"] for a in archs}) == 1
        assert {k: v for k, v in archs[0].items() if k != "r"} == {k: v for k, v in space.largest().items() if k != "r"}
        drawn.add(archs[0]["r"])
    assert drawn == {8, 12, 16}
    apart = sandwich_archs(space, np.random.default_rng(0), 2)
    assert apart[0]["r"] == 16 and apart[1]["r"] == 8


def test_progressive_phases_release_dimensions_in_order():
    assert [phase_of(e, 10, True) for e in range(10)] == ["largest"] * 2 + ["kernel"] * 2 + ["depth"] * 2 + [
        "expand"] * 4
    assert phase_of(3, 10, False) == "all"
    space = get_space("mbv3-small-input", **TINY)
    largest, small = space.largest(), space.smallest()
    kernel_only = constrain(small, largest, "kernel")
    assert kernel_only["k"] == small["k"] and kernel_only["d"] == largest["d"] and kernel_only["e"] == largest["e"]
    assert constrain(small, largest, "expand") == small
    assert sandwich_archs(space, np.random.default_rng(0), 2, "largest") == [largest]


def test_validation_split_is_held_out_of_training_and_stratified():
    data = tiny_data(400)
    train_part, val_part = split_validation(data, 100, seed=3)
    assert len(train_part.train_y) == 300 and len(val_part.test_y) == 100
    counts = torch.bincount(val_part.test_y, minlength=10)
    assert counts.min() >= 5  # every class present
    val_rows = {bytes(r.numpy().tobytes()) for r in val_part.test_x}
    assert not any(bytes(r.numpy().tobytes()) in val_rows for r in train_part.train_x)


def test_default_validation_size_is_2000_capped_at_a_fifth_and_stored(tmp_path):
    assert TrainSettings().resolve_val_size(10_000).val_size == 2000
    assert TrainSettings().resolve_val_size(400).val_size == 80
    assert TrainSettings(val_size=7).resolve_val_size(9000).val_size == 7  # explicit sizes are kept
    assert TrainSettings.short_schedule().val_size == 1000
    with pytest.raises(InputError, match="val_size"):
        TrainSettings(val_size=-1).validate()
    out = tmp_path / "s.pt"
    train(tiny_settings(val_size=None), out, device="cpu", progress=False, dataset=tiny_data())
    assert read_checkpoint(out)["settings"]["val_size"] == 192 // 5  # resolved before the split


def test_checkpoint_round_trip_and_resume_continues_epochs(tmp_path):
    out = tmp_path / "supernet.pt"
    data = tiny_data()
    first = train(tiny_settings(epochs=1), out, device="cpu", progress=False, dataset=data)
    assert first["epochs_run"] == 1 and 0 <= first["acc_largest"] <= 100
    supernet, meta = load_checkpoint(out)
    assert meta["epoch"] == 1 and meta["space"] == "mbv3-small-input" and len(meta["history"]) == 1
    raw = read_checkpoint(out)
    for k, v in supernet.state_dict().items():
        assert torch.equal(v, raw["model"][k])
    second = train(tiny_settings(epochs=2), out, resume=True, device="cpu", progress=False, dataset=data)
    assert second["resumed_from_epoch"] == 1 and second["epochs_run"] == 1
    _, meta2 = load_checkpoint(out)
    assert meta2["epoch"] == 2 and [h["epoch"] for h in meta2["history"]] == [1, 2]
    assert meta2["step"] == 2 * meta["step"]


def test_corrupt_or_foreign_checkpoint_is_input_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"definitely not a zip archive")
    with pytest.raises(InputError, match="bad.pt"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(InputError, match="format"):
        load_checkpoint(foreign)
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    wrong = tmp_path / "wrong.pt"
    save_checkpoint(wrong, {"space": "mbv3-small-input", "space_config": TINY, "model": {"w": torch.zeros(1)},
                            "settings": {}, "epoch": 0, "history": []})
    with pytest.raises(InputError, match="model"):
        load_checkpoint(wrong)


def test_cli_train_bad_input_exits_2(tmp_path, capsys):
    assert cli_main(["train", "--out", str(tmp_path / "c.pt"), "--resolutions", "a,b", "--json"]) == 2
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"\x00" * 10)
    assert cli_main(["train", "--out", str(bad), "--resume", "--json"]) == 2
    assert cli_main(["train", "--out", str(tmp_path / "c.pt"), "--space", "nope", "--json",
                     "--limit-train", "8"]) == 2


# --- two processes, gloo: both ranks end with identical weights ------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, result_dir: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    import torch.distributed as dist

    from hwnas.train.distributed import average_buffers, broadcast_model, init_distributed
    from hwnas.train.splits import shard_indices

    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    torch.manual_seed(100 + rank)  # different initialisations: the broadcast must align them
    space = get_space("mbv3-small-input", **TINY)
    net = build_supernet(space)
    broadcast_model(net, ctx)
    opt = make_optimizer(net, TrainSettings(lr=0.05))
    data = tiny_data(128)
    rng = np.random.default_rng(0)
    idx = shard_indices(len(data.train_y), 0, 0, ctx.rank, ctx.world_size)
    for step in range(2):
        b = idx[step * 16 : (step + 1) * 16]
        sandwich_step(net, opt, data.normalize(data.train_x[b]), data.train_y[b], sandwich_archs(space, rng, 1),
                      ctx=ctx)
    average_buffers(net, ctx)
    torch.save({"state": net.state_dict(), "shard": idx}, f"{result_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def test_ddp_two_gloo_processes_end_with_identical_weights(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert set(r0["shard"].tolist()).isdisjoint(r1["shard"].tolist())
    for k, v in r0["state"].items():
        assert torch.allclose(v.float(), r1["state"][k].float(), atol=0, rtol=0), k


@pytest.mark.slow
def test_hwnas_train_under_torchrun_two_processes(tmp_path):
    import json
    import os
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    out = tmp_path / "ddp.pt"
    proc = subprocess.run(
        [torchrun, "--nproc-per-node", "2", "--master-port", str(_free_port()), "-m", "hwnas", "train",
         "--width-mult", "0.25", "--resolutions", "8,12", "--epochs", "1", "--limit-train", "128",
         "--batch-size", "32", "--val-size", "64", "--out", str(out), "--json", "--no-progress"],
        capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1  # only rank 0 reports
    summary = json.loads(lines[0])
    assert summary["world_size"] == 2 and summary["epochs"] == 1
    ckpt = read_checkpoint(out)
    assert ckpt["world_size"] == 2 and ckpt["epoch"] == 1 and ckpt["step"] == 2  # 128 images / 2 ranks / 32
