"""Weight-sharing supernet training: the sandwich rule with in-place distillation.

Every optimizer step trains the largest subnet on the labels, then the smallest and
`num_random` random subnets on the largest's soft predictions (in-place distillation,
BigNAS / OFA); the gradients of all of them accumulate before one update. With
`progressive=True` the elastic dimensions are released one after another as in OFA's
progressive shrinking: largest only, then elastic kernel, then depth, then expand.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from hwnas.data import Dataset, load_dataset
from hwnas.errors import InputError, NotAvailableError
from hwnas.io import artifact_lock, check_writable
from hwnas.train.checkpoint import read_checkpoint, save_checkpoint
from hwnas.train.distributed import (
    DistContext,
    average_buffers,
    average_gradients,
    barrier,
    broadcast_model,
    init_distributed,
)
from hwnas.train.evaluation import BufferSnapshot, evaluate_subnet, recalibration_batches
from hwnas.train.splits import shard_indices, split_validation

OPTIMIZERS = ("sgd", "adamw")
# 2,000 validation images: with 1,000 the binomial noise of one subnet's accuracy (~1.2 points at
# 85 %) is larger than the spread between random subnets, and their ranking cannot be measured
DEFAULT_VAL_SIZE = 2000
DEFAULT_LR = {"sgd": 0.1, "adamw": 2e-3}
DEFAULT_WEIGHT_DECAY = {"sgd": 4e-5, "adamw": 0.02}
# progressive shrinking: phase name, share of the epochs, arch fields elastic in that phase
PROGRESSIVE_PHASES: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    ("largest", 0.2, ()),
    ("kernel", 0.2, ("k", "r")),
    ("depth", 0.2, ("k", "d", "r")),
    ("expand", 0.4, ("*",)),
)


@dataclass
class TrainSettings:
    """Everything that determines a training run (stored in the checkpoint)."""

    space: str = "mbv3-small-input"
    space_options: dict = field(default_factory=dict)
    data: str | None = None
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float | None = None  # None: the optimizer's default (DEFAULT_LR), scaled by batch_size / 128
    weight_decay: float | None = None
    momentum: float = 0.9
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.1
    num_random: int = 2
    distill: bool = True
    kd_temperature: float = 1.0
    # every subnet of a step at one resolution drawn per step (once-for-all's elastic resolution);
    # False: the largest subnet always at the highest resolution, the smallest at the lowest
    shared_resolution: bool = False
    progressive: bool = False
    grad_clip: float = 5.0
    augment: bool = True
    seed: int = 0
    # held out of the training set for search-time accuracy estimates; None: DEFAULT_VAL_SIZE images,
    # at most a fifth of the training set (resolved when training starts)
    val_size: int | None = None
    recal_batches: int = 20
    recal_batch_size: int = 128
    eval_batch_size: int = 500
    limit_train: int | None = None  # images per epoch (quick runs); None = all
    eval_every: int = 1

    def validate(self) -> TrainSettings:
        def bad(name: str, expected: str) -> InputError:
            return InputError(f"{getattr(self, name)!r} is invalid; expected {expected}", field=name)

        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", " or ".join(OPTIMIZERS))
        for name in ("epochs", "batch_size", "recal_batches", "recal_batch_size", "eval_batch_size", "eval_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise bad(name, "a positive integer")
        if not isinstance(self.num_random, int) or self.num_random < 0:
            raise bad("num_random", "an integer >= 0")
        if self.lr is not None and not self.lr > 0:
            raise bad("lr", "a positive number")
        if not 0 <= self.label_smoothing < 1:
            raise bad("label_smoothing", "a number in [0, 1)")
        if self.limit_train is not None and self.limit_train < 1:
            raise bad("limit_train", "a positive integer or None")
        if self.val_size is not None and (not isinstance(self.val_size, int) or self.val_size < 0):
            raise bad("val_size", "an integer >= 0 or None")
        return self

    def resolve_val_size(self, n_train_images: int) -> TrainSettings:
        """Fix val_size None to DEFAULT_VAL_SIZE (at most a fifth of `n_train_images`)."""
        if self.val_size is None:
            self.val_size = min(DEFAULT_VAL_SIZE, n_train_images // 5)
        return self

    @classmethod
    def short_schedule(cls, **overrides) -> TrainSettings:
        """A few minutes on a laptop CPU (2 epochs of 4,000 images, two random subnets per step: with
        one, the subnets between the two extremes stayed undertrained and their accuracies did not rise
        with their size; no augmentation and small batches, which converge fastest on such short
        schedules; 1,000 validation images keep each search-time evaluation short)."""
        return cls(**{"epochs": 2, "limit_train": 4000, "num_random": 2, "recal_batches": 10, "batch_size": 64,
                      "augment": False, "val_size": 1000, **overrides})

    @property
    def base_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer] * self.batch_size / 128

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainSettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto" -> CUDA when present, else CPU; an explicit CUDA request without a GPU is NotAvailableError."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise NotAvailableError("device 'cuda' requested but torch sees no CUDA GPU here", field="device")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    if name != "cpu":
        raise InputError(f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N", field="device")
    return torch.device("cpu")


# --- one step of the sandwich rule -------------------------------------------------------------


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft targets (KL divergence up to the targets' constant entropy)."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def sandwich_step(
    supernet: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    archs: list[dict],
    *,
    label_smoothing: float = 0.1,
    distill: bool = True,
    kd_temperature: float = 1.0,
    grad_clip: float | None = None,
    ctx: DistContext | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> dict[str, float]:
    """One optimizer step over `archs` (the first is the teacher: the largest subnet).

    Each subnet's loss is back-propagated at once (gradients accumulate, activations are
    freed), then the summed gradient is averaged over ranks and applied.
    """
    from hwnas.supernet import resize_input

    supernet.train()
    optimizer.zero_grad(set_to_none=True)
    teacher_probs = None
    losses = []
    for i, arch in enumerate(archs):
        supernet.set_active(arch)
        logits = supernet(to_memory_format(resize_input(x, arch["r"]), memory_format))
        if i > 0 and distill:
            loss = soft_cross_entropy(logits / kd_temperature, teacher_probs) * kd_temperature**2
        else:
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
            if i == 0 and distill:
                teacher_probs = F.softmax(logits.detach() / kd_temperature, dim=1)
        loss.backward()
        losses.append(float(loss.detach()))
    if ctx is not None:
        average_gradients(supernet, ctx)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(supernet.parameters(), grad_clip)
    optimizer.step()
    return {"loss": float(np.mean(losses)), "loss_largest": losses[0]}


def preferred_memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on CPU: oneDNN's depthwise-conv backward is several times faster in NHWC."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def to_memory_format(x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    return x if memory_format == torch.contiguous_format else x.contiguous(memory_format=memory_format)


# --- sampling ------------------------------------------------------------------------------------


def phase_of(epoch: int, epochs: int, progressive: bool) -> str:
    """The progressive-shrinking phase of a 0-based epoch ("all" without progressive shrinking)."""
    if not progressive:
        return "all"
    ends = np.cumsum([share for _, share, _ in PROGRESSIVE_PHASES]) * epochs
    for (name, _, _), end in zip(PROGRESSIVE_PHASES, ends, strict=True):
        if epoch < round(end):
            return name
    return PROGRESSIVE_PHASES[-1][0]


def constrain(arch: dict, largest: dict, phase: str) -> dict:
    """Fix the fields that are not elastic yet in `phase` to the largest subnet's values."""
    if phase == "all":
        return arch
    elastic = dict((name, f) for name, _, f in PROGRESSIVE_PHASES)[phase]
    if "*" in elastic:
        return arch
    return {k: (v if k in elastic else largest[k]) for k, v in arch.items()}


def sandwich_archs(space, rng: np.random.Generator, num_random: int, phase: str = "all", *,
                   shared_resolution: bool = False) -> list[dict]:
    """[largest, smallest, random...] constrained to the phase's elastic fields.

    With `shared_resolution` (and a space with several resolutions), every subnet of the step runs at
    one resolution drawn for the step, as once-for-all's elastic resolution trains; without it the
    largest subnet is always at the highest resolution and the smallest at the lowest.
    """
    largest = space.largest()
    archs = [largest]
    if phase != "largest":
        archs.append(constrain(space.smallest(), largest, phase))
        archs += [constrain(space.sample(rng), largest, phase) for _ in range(num_random)]
    resolutions = getattr(space, "resolutions", ())
    if shared_resolution and "r" in largest and len(resolutions) > 1:
        r = resolutions[int(rng.integers(len(resolutions)))]
        archs = [{**arch, "r": r} for arch in archs]
    return archs


# --- the training run ----------------------------------------------------------------------------


def build_space(settings: TrainSettings, data: Dataset):
    """The space with the dataset's channels and classes (unless the options set them)."""
    from hwnas.space import get_space

    options = {"in_channels": data.in_channels, "num_classes": data.num_classes, **settings.space_options}
    try:
        return get_space(settings.space, **options)
    except TypeError as exc:
        raise InputError(f"bad options {options} for space '{settings.space}': {exc}", field="space") from exc


def space_config(space, settings: TrainSettings, data: Dataset) -> dict:
    if hasattr(space, "config"):
        # "name" is get_space's first argument, stored separately as the checkpoint's "space"
        return {k: v for k, v in space.config().items() if k != "name"}
    return {"in_channels": data.in_channels, "num_classes": data.num_classes, **settings.space_options}


def make_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """No weight decay on BN parameters and biases (1-d tensors), as is usual for these nets."""
    wd = settings.weight_decay if settings.weight_decay is not None else DEFAULT_WEIGHT_DECAY[settings.optimizer]
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    if settings.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=settings.base_lr, momentum=settings.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=settings.base_lr)


def lr_at(step: int, total_steps: int, base_lr: float, warmup_steps: int) -> float:
    """Linear warm-up then cosine decay to zero."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(1.0, progress)))


def train(
    settings: TrainSettings,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    progress: bool = True,
    dataset: Dataset | None = None,
) -> dict[str, Any]:
    """Train (or resume training) a supernet and write its checkpoint to `out` after every epoch.

    An existing checkpoint at `out` is continued with `resume` or replaced with `overwrite`, never
    silently; resuming a run that already has its epochs changes nothing. One process writes a
    checkpoint at a time (`hwnas.io.artifact_lock`).

    Under `torchrun --nproc-per-node N` each process trains on its shard of every epoch and
    gradients are averaged over processes. Returns the summary `hwnas train --json` prints.
    """
    started = time.perf_counter()
    out = Path(out)
    settings.validate()
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 writes the checkpoint
        return _train(settings, out, resume=resume, overwrite=overwrite, device=device, progress=progress,
                      dataset=dataset, started=started)
    check_writable(out, field="--out")
    with artifact_lock(out, what="supernet checkpoint"):
        return _train(settings, out, resume=resume, overwrite=overwrite, device=device, progress=progress,
                      dataset=dataset, started=started)


def _train(settings: TrainSettings, out: Path, *, resume: bool, overwrite: bool, device: str, progress: bool,
           dataset: Dataset | None, started: float) -> dict[str, Any]:
    from hwnas.supernet import build_supernet

    ckpt = None
    if out.exists() and not resume and not overwrite:
        raise InputError("a supernet checkpoint exists here; pass --resume to continue it or --overwrite to "
                         "train afresh", path=str(out))
    if resume and out.is_file():
        ckpt = read_checkpoint(out)
        stored = TrainSettings.from_dict(ckpt["settings"])
        if stored.space != settings.space:
            raise InputError(f"checkpoint was trained on space '{stored.space}', not '{settings.space}'",
                             path=str(out), field="space")
        if ckpt["epoch"] >= settings.epochs:
            print(f"hwnas train: {out} has finished its run ({ckpt['epoch']} epochs, asked for {settings.epochs}); "
                  "nothing to do, the checkpoint is unchanged", file=sys.stderr)
            return finished_run(ckpt, out, started)
        stored.epochs = settings.epochs  # resuming may extend the schedule
        settings = stored
    elif resume:
        print(f"hwnas train: {out} does not exist yet; starting from scratch", file=sys.stderr)
    settings.validate()

    torch.manual_seed(settings.seed)
    ctx = init_distributed("cuda" if device.startswith("cuda") or (
        device == "auto" and torch.cuda.is_available()) else "cpu")
    dev = resolve_device(device, ctx.local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)

    data = dataset if dataset is not None else load_dataset(settings.data)
    settings.resolve_val_size(len(data.train_y))
    train_part, val_part = split_validation(data, settings.val_size, seed=settings.seed)
    space = build_space(settings, data)
    memory_format = preferred_memory_format(dev)
    supernet = build_supernet(space).to(dev, memory_format=memory_format)
    optimizer = make_optimizer(supernet, settings)
    start_epoch, step, history = 0, 0, []
    if ckpt is not None:
        try:
            supernet.load_state_dict(ckpt["model"])
            if "optimizer" in ckpt:
                optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise InputError(f"checkpoint does not fit the supernet: {exc}", path=str(out), field="model") from exc
        start_epoch, step, history = ckpt["epoch"], int(ckpt.get("step", 0)), list(ckpt["history"])
    broadcast_model(supernet, ctx)

    n_train = len(train_part.train_y)
    if settings.limit_train is not None:
        n_train = min(n_train, settings.limit_train)
    per_rank = n_train // ctx.world_size
    steps_per_epoch = math.ceil(per_rank / settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    warmup_steps = max(1, int(settings.warmup_epochs * steps_per_epoch))
    recal = recalibration_batches(train_part, settings.recal_batches, settings.recal_batch_size, settings.seed)
    config = space_config(space, settings, data)

    for epoch in range(start_epoch, settings.epochs):
        phase = phase_of(epoch, settings.epochs, settings.progressive)
        if settings.progressive and phase == "expand" and phase_of(epoch - 1, settings.epochs, True) != "expand":
            _sort_channels(supernet, optimizer, settings)
        rng = np.random.default_rng([settings.seed, epoch])  # identical subnets on every rank
        g = torch.Generator().manual_seed(settings.seed * 7919 + epoch)
        idx = shard_indices(len(train_part.train_y), epoch, settings.seed, ctx.rank, ctx.world_size)[:per_rank]
        shard = Dataset(name=train_part.name, train_x=train_part.train_x[idx], train_y=train_part.train_y[idx],
                        test_x=train_part.test_x[:0], test_y=train_part.test_y[:0], classes=train_part.classes,
                        mean=train_part.mean, std=train_part.std)
        t0 = time.perf_counter()
        losses, seen = [], 0
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{settings.epochs} [{phase}]", file=sys.stderr,
                   disable=not (progress and ctx.is_main), leave=False, dynamic_ncols=True)
        for x, y in shard.batches("train", settings.batch_size, augment=settings.augment, generator=g):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, settings.base_lr, warmup_steps)
            archs = sandwich_archs(space, rng, settings.num_random, phase,
                                   shared_resolution=settings.shared_resolution)
            stats = sandwich_step(
                supernet, optimizer, x.to(dev, non_blocking=True), y.to(dev, non_blocking=True), archs,
                label_smoothing=settings.label_smoothing, distill=settings.distill,
                kd_temperature=settings.kd_temperature, grad_clip=settings.grad_clip, ctx=ctx,
                memory_format=memory_format,
            )
            step += 1
            seen += len(y) * ctx.world_size
            losses.append(stats["loss"])
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.3f}", img_s=f"{seen / (time.perf_counter() - t0):.0f}")
        bar.close()
        average_buffers(supernet, ctx)
        train_seconds = time.perf_counter() - t0
        record: dict[str, Any] = {
            "epoch": epoch + 1, "phase": phase, "loss": float(np.mean(losses)) if losses else float("nan"),
            "train_seconds": round(train_seconds, 3), "images_per_second": round(seen / max(train_seconds, 1e-9), 1),
            "lr": optimizer.param_groups[0]["lr"],
        }
        if ctx.is_main and ((epoch + 1) % settings.eval_every == 0 or epoch + 1 == settings.epochs):
            record.update(evaluate_extremes(supernet, space, data, recal, settings, dev))
        history.append(record)
        if ctx.is_main:
            _log_epoch(record, settings.epochs)
            save_checkpoint(out, {
                "space": space.name, "space_config": config,
                "model": {k: v.detach().cpu() for k, v in supernet.state_dict().items()},
                "optimizer": optimizer.state_dict(), "settings": asdict(settings),
                "epoch": epoch + 1, "step": step, "history": history,
                "data": {"spec": settings.data or "fmnist-subset", "name": data.name,
                         "val_size": settings.val_size, "split_seed": settings.seed},
                "world_size": ctx.world_size,
            })
        barrier(ctx)

    last = next((h for h in reversed(history) if "acc_largest" in h), {})
    return {
        "checkpoint": str(out),
        "epochs": settings.epochs,
        "epochs_run": settings.epochs - start_epoch,
        "acc_largest": last.get("acc_largest"),
        "acc_smallest": last.get("acc_smallest"),
        "seconds": round(time.perf_counter() - started, 2),
        "curve": history,
        "space": space.name,
        "data": settings.data or "fmnist-subset",
        "device": str(dev),
        "world_size": ctx.world_size,
        "rank": ctx.rank,
        "resumed_from_epoch": start_epoch if ckpt is not None else None,
    }


def finished_run(ckpt: dict[str, Any], out: Path, started: float) -> dict[str, Any]:
    """The summary of a run whose checkpoint already holds every epoch asked for (nothing was trained)."""
    history = list(ckpt["history"])
    last = next((h for h in reversed(history) if "acc_largest" in h), {})
    settings = ckpt["settings"]
    return {
        "checkpoint": str(out),
        "epochs": ckpt["epoch"],
        "epochs_run": 0,
        "finished": True,
        "acc_largest": last.get("acc_largest"),
        "acc_smallest": last.get("acc_smallest"),
        "seconds": round(time.perf_counter() - started, 2),
        "curve": history,
        "space": ckpt["space"],
        "data": settings.get("data") or "fmnist-subset",
        "device": None,
        "world_size": ckpt.get("world_size", 1),
        "rank": 0,
        "resumed_from_epoch": ckpt["epoch"],
    }


def evaluate_extremes(supernet: nn.Module, space, data: Dataset, recal: list[torch.Tensor],
                      settings: TrainSettings, dev: torch.device) -> dict[str, float]:
    """Test accuracy (%) of the largest and smallest subnets after BN recalibration."""
    snapshot = BufferSnapshot(supernet)
    result = {}
    for name, arch in (("largest", space.largest()), ("smallest", space.smallest())):
        batches = data.batches("test", settings.eval_batch_size)
        result[f"acc_{name}"] = round(evaluate_subnet(supernet, arch, batches, recal, device=dev), 3)
    snapshot.restore()
    return result


def _sort_channels(supernet: nn.Module, optimizer: torch.optim.Optimizer, settings: TrainSettings) -> None:
    """Before the expand phase (OFA): keep the most important channels first; momentum is then stale."""
    if hasattr(supernet, "sort_channels"):
        supernet.sort_channels()
        optimizer.state.clear()


def _log_epoch(record: dict[str, Any], epochs: int) -> None:
    accs = ""
    if "acc_largest" in record:
        accs = f"  test acc largest {record['acc_largest']:.2f} %  smallest {record['acc_smallest']:.2f} %"
    print(f"epoch {record['epoch']}/{epochs} [{record['phase']}]  loss {record['loss']:.4f}  "
          f"{record['images_per_second']:.0f} img/s{accs}", file=sys.stderr)
