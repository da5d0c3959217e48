"""Weight-sharing supernet training: the sandwich rule with in-place distillation.

Every optimizer step trains the largest subnet on the labels, then the smallest and
`num_random` random subnets on the largest's soft predictions (in-place distillation,
BigNAS / OFA); the gradients of all of them accumulate before one update. With
`sampling="fair"` the smallest and the random subnets give way to a fair group of
`num_random + 1` subnets, in which each gene's choices are spread evenly (FairNAS's strict
fairness): every choice of every gene is trained as often as any other, and in every
combination with the other genes' choices. With
`progressive=True` the elastic dimensions are released one after another as in OFA's
progressive shrinking: largest only, then elastic kernel, then depth, then expand.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
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

from hwnas.data import Dataset, StreamDataset, open_dataset
from hwnas.data.stream import (
    EpochBatches,
    FolderImages,
    default_workers,
    make_loader,
    normalize,
    report_skipped,
    training_images,
)
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
    sum_over_ranks,
)
from hwnas.train.evaluation import BufferSnapshot, evaluate_subnet, recalibration_batches
from hwnas.train.splits import split_validation

OPTIMIZERS = ("sgd", "adamw")
ELASTIC_RESOLUTION = ("auto", "batch", "subnet")
SAMPLING = ("sandwich", "fair")
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
    # which subnets a step trains beside the largest: "sandwich" the smallest and `num_random` random
    # ones; "fair" a group of num_random + 1 with every gene's choices spread evenly over it
    sampling: str = "sandwich"
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
    # mid-epoch checkpoints (besides every epoch's end): after this many optimizer steps and/or minutes
    checkpoint_every: int | None = None
    checkpoint_minutes: float | None = None
    num_workers: int | None = None  # loader processes; None: 0 for images in memory, up to 4 for a folder
    # "batch": each batch at one of the space's resolutions, every subnet of the step at it (once-for-all);
    # "subnet": each subnet resizes the batch to its own resolution; "auto": batch for an image folder
    # (decoded at the batch's resolution), subnet for images in memory
    elastic_resolution: str = "auto"
    amp: bool = True  # mixed precision (bfloat16, or float16 with loss scaling) on CUDA; CPU runs float32

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
        if self.checkpoint_every is not None and (not isinstance(self.checkpoint_every, int)
                                                  or self.checkpoint_every < 1):
            raise bad("checkpoint_every", "a positive integer (optimizer steps) or None")
        if self.checkpoint_minutes is not None and not (isinstance(self.checkpoint_minutes, (int, float))
                                                        and self.checkpoint_minutes > 0):
            raise bad("checkpoint_minutes", "a positive number of minutes or None")
        if self.num_workers is not None and (not isinstance(self.num_workers, int) or self.num_workers < 0):
            raise bad("num_workers", "an integer >= 0 or None")
        if self.elastic_resolution not in ELASTIC_RESOLUTION:
            raise bad("elastic_resolution", " or ".join(ELASTIC_RESOLUTION))
        if self.sampling not in SAMPLING:
            raise bad("sampling", " or ".join(SAMPLING))
        return self

    def resolve_val_size(self, n_train_images: int) -> TrainSettings:
        """Fix val_size None to DEFAULT_VAL_SIZE (at most a fifth of `n_train_images`)."""
        if self.val_size is None:
            self.val_size = min(DEFAULT_VAL_SIZE, n_train_images // 5)
        return self

    @classmethod
    def short_schedule(cls, **overrides) -> TrainSettings:
        """A few minutes on a laptop CPU (2 epochs of 4,000 images; beside the largest, a fair group of
        three subnets a step: with the smallest and random ones (the sandwich), each step trained the two
        extremes and rarely any other pairing of choices, so a subnet's estimate told how close it was to
        an extreme rather than how big it was; no augmentation and small batches, which converge fastest
        on such short schedules; 1,000 validation images keep each search-time evaluation short)."""
        return cls(**{"epochs": 2, "limit_train": 4000, "num_random": 2, "recal_batches": 10, "batch_size": 64,
                      "augment": False, "val_size": 1000, "sampling": "fair", **overrides})

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
    precision: MixedPrecision | None = None,
) -> dict[str, float]:
    """One optimizer step over `archs` (the first is the teacher: the largest subnet).

    Each subnet's loss is back-propagated at once (gradients accumulate, activations are
    freed), then the summed gradient is averaged over ranks and applied. With `precision`
    (CUDA), the forward passes run under autocast and float16 losses are scaled.
    """
    from hwnas.supernet import resize_input

    supernet.train()
    optimizer.zero_grad(set_to_none=True)
    teacher_probs = None
    losses = []
    for i, arch in enumerate(archs):
        supernet.set_active(arch)
        with precision.autocast() if precision is not None else contextlib.nullcontext():
            logits = supernet(to_memory_format(resize_input(x, arch["r"]), memory_format)).float()
        if i > 0 and distill:
            loss = soft_cross_entropy(logits / kd_temperature, teacher_probs) * kd_temperature**2
        else:
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
            if i == 0 and distill:
                teacher_probs = F.softmax(logits.detach() / kd_temperature, dim=1)
        (precision.scale(loss) if precision is not None else loss).backward()
        losses.append(float(loss.detach()))
    if ctx is not None:
        average_gradients(supernet, ctx)
    if precision is not None:
        precision.unscale(optimizer)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(supernet.parameters(), grad_clip)
    if precision is not None:
        precision.step(optimizer)
    else:
        optimizer.step()
    return {"loss": float(np.mean(losses)), "loss_largest": losses[0]}


class MixedPrecision:
    """Autocast on CUDA: bfloat16 where the GPU has it, else float16 with a gradient scaler."""

    def __init__(self, device: torch.device):
        self.device_type = device.type
        self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None

    def autocast(self):
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def preferred_memory_format(device: torch.device) -> torch.memory_format:
    """channels_last: oneDNN's depthwise-conv backward is several times faster in NHWC on CPU, and
    cuDNN's tensor-core convolutions take NHWC under mixed precision."""
    return torch.channels_last


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


def fair_group(space, rng: np.random.Generator, n: int) -> list[dict]:
    """`n` subnets in which each gene's choices are spread evenly: gene by gene, the choices in a random
    order, repeated when `n` exceeds their number (FairNAS's strict fairness; with n equal to the
    number of choices, each choice exactly once). Each gene is shuffled apart from the others, so the
    subnets mix the choices as uniform sampling does, but no choice is left out of a step."""
    lower, upper = (np.asarray(b, dtype=np.int64) for b in space.bounds)
    columns = []
    for lo, hi in zip(lower, upper, strict=True):
        m = int(hi - lo + 1)
        order = np.concatenate([rng.permutation(m) for _ in range(-(-n // m))])[:n]
        columns.append(lo + order)
    return [space.decode(x) for x in np.stack(columns, axis=1)]


def sandwich_archs(space, rng: np.random.Generator, num_random: int, phase: str = "all", *,
                   shared_resolution: bool = False, sampling: str = "sandwich") -> list[dict]:
    """[largest, smallest, random...] constrained to the phase's elastic fields; with `sampling="fair"`,
    [largest, a fair group of num_random + 1 subnets (`fair_group`)...].

    With `shared_resolution` (and a space with several resolutions), every subnet of the step runs at
    one resolution drawn for the step, as once-for-all's elastic resolution trains; without it the
    largest subnet is always at the highest resolution and the smallest at the lowest.
    """
    largest = space.largest()
    archs = [largest]
    if phase != "largest":
        others = (fair_group(space, rng, num_random + 1) if sampling == "fair"
                  else [space.smallest()] + [space.sample(rng) for _ in range(num_random)])
        archs += [constrain(arch, largest, phase) for arch in others]
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
    dataset: Dataset | StreamDataset | None = None,
) -> dict[str, Any]:
    """Train (or resume training) a supernet and write its checkpoint to `out` after every epoch (and
    every `settings.checkpoint_every` steps / `checkpoint_minutes` minutes within one).

    A checkpoint holds the model, optimizer, step, the position in the epoch's batch order and the
    global RNG states; batches and subnets are functions of (seed, epoch, position), so a run resumed
    from a mid-epoch checkpoint takes the same steps as one never interrupted.

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
           dataset: Dataset | StreamDataset | None, started: float) -> dict[str, Any]:
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
        # how often to checkpoint and how many loader processes are not part of the run's maths
        stored.checkpoint_every, stored.checkpoint_minutes = settings.checkpoint_every, settings.checkpoint_minutes
        stored.num_workers = settings.num_workers
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

    stored_data = (ckpt or {}).get("data") or {}
    if dataset is not None:
        data = dataset
    else:  # a resumed run normalises with the statistics it started with
        data = open_dataset(settings.data, seed=settings.seed, mean=stored_data.get("mean"),
                            std=stored_data.get("std"))
    settings.resolve_val_size(len(data.train_y))
    train_part, val_part = split_validation(data, settings.val_size, seed=settings.seed)
    space = build_space(settings, data)
    memory_format = preferred_memory_format(dev)
    supernet = build_supernet(space).to(dev, memory_format=memory_format)
    optimizer = make_optimizer(supernet, settings)
    precision = MixedPrecision(dev) if settings.amp and dev.type == "cuda" else None
    start_epoch, position, step, history, step_losses, skipped_total = 0, 0, 0, [], [], 0
    partial: dict[str, Any] = {}
    if ckpt is not None:
        try:
            supernet.load_state_dict(ckpt["model"])
            if "optimizer" in ckpt:
                optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise InputError(f"checkpoint does not fit the supernet: {exc}", path=str(out), field="model") from exc
        start_epoch, step, history = ckpt["epoch"], int(ckpt.get("step", 0)), list(ckpt["history"])
        position = int(ckpt.get("position", 0))
        step_losses = [float(v) for v in ckpt.get("step_losses", [])]
        skipped_total = int(ckpt.get("skipped_images", 0))
        partial = dict(ckpt.get("partial_epoch") or {})
        if precision is not None:
            precision.load_state_dict(ckpt.get("grad_scaler") or {})
        set_rng_states(ckpt.get("rng"))
    broadcast_model(supernet, ctx)

    images = training_images(train_part, augment=settings.augment)
    workers = default_workers(images) if settings.num_workers is None else settings.num_workers
    resolutions = space_resolutions(space)
    per_batch = settings.elastic_resolution == "batch" or (
        settings.elastic_resolution == "auto" and images.fixed_size is None)
    per_batch = per_batch and resolutions is not None
    largest_resolution = max(resolutions) if resolutions else space.input_shape(space.largest())[-1]
    for files in (images, getattr(train_part, "train", None)):  # training, and recalibration, images
        if isinstance(files, FolderImages):  # decoded at the largest resolution when subnets resize
            files.default_resolution = largest_resolution

    def epoch_batches(epoch: int, start: int) -> EpochBatches:
        return EpochBatches(len(images), settings.batch_size, epoch=epoch, seed=settings.seed, rank=ctx.rank,
                            world_size=ctx.world_size, limit=settings.limit_train,
                            resolutions=resolutions if per_batch else None, start=start)

    steps_per_epoch = epoch_batches(0, 0).batches_per_epoch
    total_steps = steps_per_epoch * settings.epochs
    warmup_steps = max(1, int(settings.warmup_epochs * steps_per_epoch))
    recal = recalibration_batches(train_part, settings.recal_batches, settings.recal_batch_size, settings.seed)
    config = space_config(space, settings, data)
    data_record = {"spec": settings.data or "fmnist-subset", "name": data.name, "val_size": settings.val_size,
                   "split_seed": settings.seed, "mean": [float(m) for m in data.mean],
                   "std": [float(v) for v in data.std], "streamed": isinstance(data, StreamDataset)}

    def save(epoch_done: int, at: int, part: dict[str, Any]) -> None:
        save_checkpoint(out, {
            "space": space.name, "space_config": config,
            "model": {k: v.detach().cpu() for k, v in supernet.state_dict().items()},
            "optimizer": optimizer.state_dict(), "settings": asdict(settings),
            "epoch": epoch_done, "step": step, "position": at, "history": history, "data": data_record,
            "world_size": ctx.world_size, "step_losses": step_losses, "skipped_images": skipped_total,
            "partial_epoch": part, "rng": rng_states(),
            **({"grad_scaler": precision.state_dict()} if precision is not None else {}),
        })

    last_save = time.monotonic()
    for epoch in range(start_epoch, settings.epochs):
        phase = phase_of(epoch, settings.epochs, settings.progressive)
        start = position if epoch == start_epoch else 0
        if (settings.progressive and start == 0 and phase == "expand"
                and phase_of(epoch - 1, settings.epochs, True) != "expand"):
            _sort_channels(supernet, optimizer, settings)
        rng = np.random.default_rng([settings.seed, epoch])  # identical subnets on every rank
        for _ in range(start):  # a resumed epoch: replay the subnets its first batches drew
            sandwich_archs(space, rng, settings.num_random, phase, shared_resolution=settings.shared_resolution,
                           sampling=settings.sampling)
        sampler = epoch_batches(epoch, start)
        t0 = time.perf_counter()
        done = partial if start else {}
        losses, seen = list(done.get("losses", [])), int(done.get("seen", 0))
        skipped: list[str] = list(done.get("skipped", []))
        earlier_seconds = float(done.get("train_seconds", 0.0))
        bar = tqdm(total=sampler.batches_per_epoch, initial=start,
                   desc=f"epoch {epoch + 1}/{settings.epochs} [{phase}]", file=sys.stderr,
                   disable=not (progress and ctx.is_main), leave=False, dynamic_ncols=True)
        since_save = 0
        loader = make_loader(images, sampler, num_workers=workers, pin_memory=dev.type == "cuda")
        for batch in loader:
            archs = sandwich_archs(space, rng, settings.num_random, phase,  # drawn for every batch
                                   shared_resolution=settings.shared_resolution, sampling=settings.sampling)
            if batch.skipped:
                skipped.extend(batch.skipped)
                skipped_total += len(batch.skipped)
                report_skipped(batch.skipped, f"in epoch {epoch + 1}, batch {batch.position + 1}")
            bar.update(1)
            # BatchNorm needs two images; a short batch (unreadable files, a last batch of one) is passed
            # over by every rank at once, or the others would wait for its gradients forever
            if sum_over_ranks(int(len(batch.y) < 2), ctx) == 0:
                if per_batch:
                    archs = [{**a, "r": batch.resolution} for a in archs]
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, total_steps, settings.base_lr, warmup_steps)
                x = normalize(batch.x.to(dev, non_blocking=True), data.mean, data.std)
                stats = sandwich_step(
                    supernet, optimizer, x, batch.y.to(dev, non_blocking=True), archs,
                    label_smoothing=settings.label_smoothing, distill=settings.distill,
                    kd_temperature=settings.kd_temperature, grad_clip=settings.grad_clip, ctx=ctx,
                    memory_format=memory_format, precision=precision,
                )
                step += 1
                since_save += 1
                seen += len(batch.y) * ctx.world_size
                losses.append(stats["loss"])
                step_losses.append(stats["loss"])
                elapsed = earlier_seconds + time.perf_counter() - t0
                bar.set_postfix(loss=f"{stats['loss']:.3f}", img_s=f"{seen / max(elapsed, 1e-9):.0f}")
            at = batch.position + 1
            minutes = settings.checkpoint_minutes
            due = (settings.checkpoint_every is not None and since_save >= settings.checkpoint_every) or (
                minutes is not None and time.monotonic() - last_save >= 60 * minutes)
            if due and at < sampler.batches_per_epoch and ctx.is_main:
                save(epoch, at, {"losses": losses, "seen": seen, "skipped": skipped,
                                 "train_seconds": earlier_seconds + time.perf_counter() - t0})
                last_save, since_save = time.monotonic(), 0
        bar.close()
        del loader
        average_buffers(supernet, ctx)
        n_skipped = sum_over_ranks(len(skipped), ctx)
        train_seconds = earlier_seconds + time.perf_counter() - t0
        record: dict[str, Any] = {
            "epoch": epoch + 1, "phase": phase, "loss": float(np.mean(losses)) if losses else float("nan"),
            "train_seconds": round(train_seconds, 3), "images_per_second": round(seen / max(train_seconds, 1e-9), 1),
            "lr": optimizer.param_groups[0]["lr"],
        }
        if n_skipped:
            record["skipped_images"] = n_skipped
        if ctx.is_main and ((epoch + 1) % settings.eval_every == 0 or epoch + 1 == settings.epochs):
            record.update(evaluate_extremes(supernet, space, data, recal, settings, dev))
        history.append(record)
        if ctx.is_main:
            _log_epoch(record, settings.epochs)
            save(epoch + 1, 0, {})
            last_save = time.monotonic()
        barrier(ctx)

    last = next((h for h in reversed(history) if "acc_largest" in h), {})
    skipped_run = sum(h.get("skipped_images", 0) for h in history)
    if isinstance(data, StreamDataset) and data.skipped:
        report_skipped(data.skipped, "while evaluating")
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
        "resumed_from_step": int(ckpt.get("step", 0)) if ckpt is not None else None,
        "skipped_images": skipped_run,
        "skipped_eval_images": len(data.skipped) if isinstance(data, StreamDataset) else 0,
        "steps": step,
        "num_workers": workers,
        "elastic_resolution": "batch" if per_batch else "subnet",
        "mixed_precision": str(precision.dtype).replace("torch.", "") if precision is not None else None,
    }


def space_resolutions(space) -> list[int] | None:
    """The input resolutions the space's subnets take (None when its archs have no "r")."""
    if "r" not in space.largest():
        return None
    found = getattr(space, "resolutions", None)
    return sorted({int(r) for r in found}) if found else sorted({space.largest()["r"], space.smallest()["r"]})


def rng_states() -> dict[str, Any]:
    """The global RNGs (torch, CUDA, numpy, python) as plain tensors and lists (weights_only-readable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    states = {"torch": torch.get_rng_state(),
              "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                        "has_gauss": int(has_gauss), "gauss": float(gauss)},
              "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any] | None) -> None:
    if not states:
        return
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


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


def evaluate_extremes(supernet: nn.Module, space, data: Dataset | StreamDataset, recal: list[torch.Tensor],
                      settings: TrainSettings, dev: torch.device) -> dict[str, float]:
    """Test accuracy (%) of the largest and smallest subnets after BN recalibration."""
    snapshot = BufferSnapshot(supernet)
    result = {}
    for name, arch in (("largest", space.largest()), ("smallest", space.smallest())):
        if isinstance(data, StreamDataset):  # files are decoded at the subnet's resolution
            batches = data.batches("test", settings.eval_batch_size, resolution=arch.get("r"))
        else:
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
