"""Accuracy of one subnet of a supernet: BN recalibration on training batches, then evaluation."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

from hwnas.data import Dataset


@torch.no_grad()
def accuracy(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
             resolution: int | None = None, device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy in % of `model` (eval mode) over `batches`, inputs resized to `resolution`."""
    from hwnas.supernet import resize_input

    model.eval()
    correct = total = 0
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if resolution is not None:
            x = resize_input(x, resolution)
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)  # oneDNN's fast layout on CPU
        correct += int((model(x).argmax(dim=1) == y).sum())
        total += len(y)
    return 100.0 * correct / max(total, 1)


@torch.no_grad()
def per_image_outcomes(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                       resolution: int | None = None,
                       device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(correct, loss): whether `model` (eval mode) gets each image right, and its cross-entropy."""
    from hwnas.supernet import resize_input

    model.eval()
    correct, losses = [], []
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if resolution is not None:
            x = resize_input(x, resolution)
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        logits = model(x)
        correct.append((logits.argmax(dim=1) == y).cpu())
        losses.append(torch.nn.functional.cross_entropy(logits, y, reduction="none").cpu())
    if not correct:
        return torch.zeros(0, dtype=torch.bool), torch.zeros(0)
    return torch.cat(correct), torch.cat(losses)


def recalibration_batches(data: Dataset, n_batches: int, batch_size: int, seed: int = 0) -> list[torch.Tensor]:
    """A fixed set of training images for BN recalibration (the same for every subnet)."""
    g = torch.Generator().manual_seed(seed)
    return [x for x, _ in data.batches("train", batch_size, shuffle=True, generator=g,
                                       limit=n_batches * batch_size)]


def evaluate_subnet(supernet: nn.Module, arch: dict, eval_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    recal_batches: list[torch.Tensor], *, device: torch.device | str = "cpu") -> float:
    """Accuracy in % of `arch` inside `supernet` after recalibrating its BN statistics."""
    from hwnas.supernet import recalibrate_bn

    supernet.set_active(arch)
    recalibrate_bn(supernet, _on_device(recal_batches, device), arch=arch)
    supernet.set_active(arch)
    return accuracy(supernet, eval_batches, resolution=arch["r"], device=device)


def _on_device(batches: list[torch.Tensor], device: torch.device | str) -> Iterator[torch.Tensor]:
    for x in batches:
        yield x.to(device, non_blocking=True)


class BufferSnapshot:
    """Save and restore a model's buffers (BN statistics) around an evaluation."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.saved = [b.detach().clone() for b in model.buffers()]

    def restore(self) -> None:
        for buf, saved in zip(self.model.buffers(), self.saved, strict=True):
            buf.data.copy_(saved)
