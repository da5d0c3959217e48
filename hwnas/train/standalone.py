"""One subnet trained alone (fresh weights, no sharing): the baseline weight sharing must match."""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch

from hwnas.data import Dataset
from hwnas.train.evaluation import evaluate_subnet, recalibration_batches
from hwnas.train.splits import shard_indices, split_validation
from hwnas.train.trainer import (
    TrainSettings,
    build_space,
    lr_at,
    make_optimizer,
    preferred_memory_format,
    sandwich_step,
)


def train_subnet_alone(arch: dict, settings: TrainSettings, data: Dataset,
                       device: torch.device | str = "cpu", start_from: torch.nn.Module | None = None) -> dict:
    """Train only `arch` with the same data, schedule and optimizer as the supernet; test accuracy in %.

    The subnet runs inside a freshly initialised supernet (only its own weights are ever used
    or updated), so its layers, initialisation and BN recalibration are exactly the supernet's.
    `start_from`: a trained supernet whose (copied) shared weights the subnet is fine-tuned from.
    """
    from hwnas.supernet import build_supernet

    device = torch.device(device)
    torch.manual_seed(settings.seed)
    settings = copy.copy(settings).resolve_val_size(len(data.train_y))
    train_part, _ = split_validation(data, settings.val_size, seed=settings.seed)
    space = build_space(settings, data)
    memory_format = preferred_memory_format(device)
    net = build_supernet(space) if start_from is None else copy.deepcopy(start_from)
    net = net.to(device, memory_format=memory_format)
    optimizer = make_optimizer(net, settings)
    n = len(train_part.train_y) if settings.limit_train is None else min(settings.limit_train,
                                                                          len(train_part.train_y))
    steps_per_epoch = math.ceil(n / settings.batch_size)
    total, warmup = steps_per_epoch * settings.epochs, max(1, int(settings.warmup_epochs * steps_per_epoch))
    step, curve, t0 = 0, [], time.perf_counter()
    recal = recalibration_batches(train_part, settings.recal_batches, settings.recal_batch_size, settings.seed)
    for epoch in range(settings.epochs):
        g = torch.Generator().manual_seed(settings.seed * 7919 + epoch)
        idx = shard_indices(len(train_part.train_y), epoch, settings.seed, 0, 1)[:n]
        shard = Dataset(name=train_part.name, train_x=train_part.train_x[idx], train_y=train_part.train_y[idx],
                        test_x=train_part.test_x[:0], test_y=train_part.test_y[:0], classes=train_part.classes,
                        mean=train_part.mean, std=train_part.std)
        losses = []
        for x, y in shard.batches("train", settings.batch_size, augment=settings.augment, generator=g):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, settings.base_lr, warmup)
            stats = sandwich_step(net, optimizer, x.to(device), y.to(device), [arch], distill=False,
                                  label_smoothing=settings.label_smoothing, grad_clip=settings.grad_clip,
                                  memory_format=memory_format)
            losses.append(stats["loss"])
            step += 1
        acc = evaluate_subnet(net, arch, data.batches("test", settings.eval_batch_size), recal, device=device)
        curve.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "acc": round(acc, 3)})
    return {"arch": arch, "acc": curve[-1]["acc"], "curve": curve, "seconds": round(time.perf_counter() - t0, 2)}
