"""Training-free estimators: SynFlow (Tanaka et al. 2020) and NASWOT (Mellor et al. 2021).

Both score a freshly initialised subnet (`space.build(arch)`, seeded per call) without any
training; higher is better. Scores are log-scaled, so only their order is meaningful.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from hwnas.errors import InputError

PROXIES = ("synflow", "naswot")


def synflow_score(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """log of sum |theta * dR/dtheta| with R the output of the all-ones input through |weights|.

    Computed in float64 on a copy with absolute weights (BN in eval mode), data-free.
    """
    model = _copy(model).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    model.zero_grad()
    x = torch.ones((1, *input_shape), dtype=torch.float64)
    model(x).sum().backward()
    total = sum(float((p.detach() * p.grad).abs().sum()) for p in model.parameters() if p.grad is not None)
    return math.log(total) if total > 0 else float("-inf")


def naswot_score(model: nn.Module, x: torch.Tensor) -> float:
    """log|det K|, K[i, j] = units where images i and j share an activation pattern (ReLU/h-swish > 0)."""
    model = _copy(model).train()
    codes: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        codes.append((output.detach().flatten(1) > 0).float())

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.ReLU, nn.Hardswish, nn.ReLU6))]
    if not handles:
        raise InputError("NASWOT needs ReLU or h-swish activations in the network", field="proxy")
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    c = torch.cat(codes, dim=1).double()
    k = c @ c.T + (1 - c) @ (1 - c).T
    sign, logdet = torch.linalg.slogdet(k)
    return float(logdet) if sign > 0 else float("-inf")


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


class ZeroCostEstimator:
    """`predict(archs)` -> proxy score of each subnet at initialisation (SynFlow or NASWOT)."""

    def __init__(self, space, proxy: str = "synflow", batch: torch.Tensor | None = None, seed: int = 0,
                 batch_size: int = 64):
        if proxy not in PROXIES:
            raise InputError(f"unknown zero-cost proxy {proxy!r}; expected one of {', '.join(PROXIES)}",
                             field="proxy")
        self.space, self.proxy, self.seed = space, proxy, seed
        self._batch = batch
        self.batch_size = batch_size

    def _data_batch(self) -> torch.Tensor:
        if self._batch is None:
            from hwnas.data import load_dataset

            data = load_dataset(None)
            g = torch.Generator().manual_seed(self.seed)
            self._batch = next(iter(data.batches("train", self.batch_size, shuffle=True, generator=g)))[0]
        return self._batch

    def score_one(self, arch: dict) -> float:
        from hwnas.supernet import resize_input

        arch = self.space.validate(arch)
        torch.manual_seed(self.seed)  # the same initialisation draw for every subnet
        model = self.space.build(arch)
        shape = self.space.input_shape(arch) if hasattr(self.space, "input_shape") else None
        if self.proxy == "synflow":
            if shape is None:
                raise InputError(f"space '{self.space.name}' does not state its input shape", field="space")
            return synflow_score(model, shape)
        x = self._data_batch()
        if shape is not None:
            x = resize_input(x, shape[-1])
        return naswot_score(model, x)

    def predict(self, archs: list[dict]) -> np.ndarray:
        return np.array([self.score_one(a) for a in archs], dtype=np.float64)
