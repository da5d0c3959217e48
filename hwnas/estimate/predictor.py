"""An MLP that predicts a subnet's accuracy from its architecture encoding (OFA's accuracy predictor).

Fitted on (arch, measured accuracy) pairs from the supernet; predicts thousands of subnets
in one batched forward pass, which is what evolutionary search needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hwnas.errors import InputError
from hwnas.estimate.features import arch_features, cost_features, has_cost, is_elastic, ordinal_features, ordinal_names
from hwnas.io import atomic_write_bytes, atomic_write_json, read_json

PREDICTOR_FORMAT = "hwnas-accuracy-predictor"
SCHEMA_VERSION = 1


def kendall_tau(a, b) -> float:
    """Kendall rank correlation (tau-b)."""
    from scipy.stats import kendalltau

    tau = kendalltau(np.asarray(a), np.asarray(b)).statistic
    return float(tau) if np.isfinite(tau) else 0.0


class Ensemble(nn.Module):
    """The mean prediction of several MLPs fitted from different initialisations."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)


@dataclass
class AccuracyPredictor:
    """MLP accuracy predictor: `fit(archs, acc)`, `predict(archs)`, `score(archs, acc)`, save/load.

    Inputs: the one-hot architecture code plus (where the space counts them) the subnet's log
    MACs and log parameters, standardised; with `ordinal` (elastic spaces) also the choices as
    numbers (`features.ordinal_features`), standardised. `ensemble` MLPs from different seeds are
    averaged.
    """

    space: Any
    hidden: tuple[int, ...] = (256, 256)
    epochs: int = 600
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    ensemble: int = 1
    use_cost: bool = True
    ordinal: bool = False
    model: nn.Module | None = field(default=None, repr=False)
    y_mean: float = 0.0
    y_std: float = 1.0
    x_mean: list[float] | None = None  # of the dense (cost, ordinal) features; None: there are none
    x_std: list[float] | None = None
    dense: tuple[str, ...] = ()  # which dense blocks the fitted model takes, in order
    metrics: dict = field(default_factory=dict)

    def _build_one(self, n_features: int) -> nn.Module:
        layers: list[nn.Module] = []
        width = n_features
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        return nn.Sequential(*layers)

    def _build(self, n_features: int) -> nn.Module:
        if self.ensemble == 1:
            return self._build_one(n_features)
        return Ensemble([self._build_one(n_features) for _ in range(self.ensemble)])

    def _dense_blocks(self) -> tuple[str, ...]:
        blocks = ("cost",) if self.use_cost and has_cost(self.space) else ()
        if self.ordinal:
            if not is_elastic(self.space):
                raise InputError(f"ordinal features need an elastic MobileNet space, not '{self.space.name}'",
                                 field="ordinal")
            blocks += ("ordinal",)
        return blocks

    def _dense(self, archs: list[dict], blocks: tuple[str, ...]) -> np.ndarray:
        parts = [cost_features(self.space, archs) if b == "cost" else ordinal_features(self.space, archs)
                 for b in blocks]
        return np.concatenate(parts, axis=1) if parts else np.zeros((len(archs), 0), np.float32)

    def _features(self, archs: list[dict]) -> torch.Tensor:
        x = arch_features(self.space, archs)
        if self.x_mean is not None:
            dense = (self._dense(archs, self.dense) - np.float32(self.x_mean)) / np.float32(self.x_std)
            x = np.concatenate([x, dense.astype(np.float32)], axis=1)
        return torch.from_numpy(x)

    def fit(self, archs: list[dict], accuracies) -> AccuracyPredictor:
        """Fit on measured accuracies (%); full-batch AdamW on standardised targets."""
        y = np.asarray(accuracies, dtype=np.float64)
        if len(archs) != len(y) or len(y) < 2:
            raise InputError(f"need at least 2 (arch, accuracy) pairs of equal count, got {len(archs)} and {len(y)}",
                             field="accuracies")
        if self.ensemble < 1:
            raise InputError(f"ensemble must be a positive integer, got {self.ensemble!r}", field="ensemble")
        self.x_mean = self.x_std = None
        self.dense = self._dense_blocks()
        if self.dense:
            dense = self._dense(archs, self.dense).astype(np.float64)
            self.x_mean, self.x_std = dense.mean(axis=0).tolist(), (dense.std(axis=0) + 1e-6).tolist()
        x = self._features(archs)
        self.y_mean, self.y_std = float(y.mean()), float(y.std() or 1.0)
        target = torch.from_numpy(((y - self.y_mean) / self.y_std).astype(np.float32)).unsqueeze(1)
        torch.manual_seed(self.seed)
        members = []
        for _ in range(self.ensemble):  # each member starts from its own initialisation draw
            member = self._build_one(x.shape[1])
            opt = torch.optim.AdamW(member.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.epochs)
            member.train()
            for _ in range(self.epochs):
                opt.zero_grad()
                loss = nn.functional.mse_loss(member(x), target)
                loss.backward()
                opt.step()
                sched.step()
            members.append(member.eval())
        self.model = members[0] if self.ensemble == 1 else Ensemble(members)
        self.model.eval()
        self.metrics = {"n_train": len(y), "train": self.score(archs, y)}
        return self

    @torch.no_grad()
    def predict(self, archs: list[dict]) -> np.ndarray:
        """Predicted accuracy (%) of each architecture, one batched forward pass."""
        if self.model is None:
            raise InputError("the accuracy predictor is not fitted; fit it or load a saved one", field="predictor")
        if not archs:
            return np.zeros(0)
        x = self._features(archs)
        return self.model(x).squeeze(1).double().numpy() * self.y_std + self.y_mean

    def score(self, archs: list[dict], accuracies) -> dict[str, float]:
        """RMSE (points of accuracy) and Kendall tau of predictions against measurements."""
        y = np.asarray(accuracies, dtype=np.float64)
        pred = self.predict(archs)
        return {"n": len(y), "rmse": float(np.sqrt(np.mean((pred - y) ** 2))), "kendall_tau": kendall_tau(pred, y)}

    # --- persistence: torch (weights_only) or JSON ----------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        if self.model is None:
            raise InputError("cannot save an accuracy predictor that is not fitted", field="predictor")
        config = self.space.config() if hasattr(self.space, "config") else {}
        return {
            "format": PREDICTOR_FORMAT, "schema_version": SCHEMA_VERSION, "space": self.space.name,
            "space_config": {k: v for k, v in config.items() if k != "name"},
            "hidden": list(self.hidden), "y_mean": self.y_mean, "y_std": self.y_std, "metrics": self.metrics,
            "ensemble": self.ensemble, "x_mean": self.x_mean, "x_std": self.x_std, "dense": list(self.dense),
            "state": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
        }

    def save(self, path: str | os.PathLike) -> None:
        """`.json`: weights as nested lists; anything else: a torch file read with weights_only=True."""
        d = self.to_dict()
        if str(path).endswith(".json"):
            d["state"] = {k: v.tolist() for k, v in d["state"].items()}
            atomic_write_json(path, d)
        else:
            import io

            buf = io.BytesIO()
            torch.save(d, buf)
            atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike, space=None) -> AccuracyPredictor:
        path = Path(path)
        if str(path).endswith(".json"):
            d = read_json(path, what="accuracy predictor")
        else:
            if not path.is_file():
                raise InputError("accuracy predictor not found", path=str(path))
            try:
                d = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - any decode failure means a corrupt or foreign file
                raise InputError(f"not a readable accuracy predictor ({exc})", path=str(path)) from exc
        if not isinstance(d, dict) or d.get("format") != PREDICTOR_FORMAT:
            raise InputError(f"not an accuracy predictor (expected format '{PREDICTOR_FORMAT}')",
                             path=str(path), field="format")
        if space is None:
            from hwnas.space.base import get_space

            space = get_space(d["space"], **d.get("space_config", {}))
        elif space.name != d["space"]:
            raise InputError(f"predictor is for space '{d['space']}', not '{space.name}'", path=str(path),
                             field="space")
        try:
            x_mean, x_std = d.get("x_mean"), d.get("x_std")  # absent in files without cost features
            # files before ordinal features name no dense blocks: the cost features where x_mean is given
            dense = tuple(d["dense"]) if "dense" in d else (("cost",) if x_mean is not None else ())
            if not set(dense) <= {"cost", "ordinal"}:
                raise ValueError(f"unknown dense features {list(dense)}")
            pred = cls(space=space, hidden=tuple(int(h) for h in d["hidden"]), y_mean=float(d["y_mean"]),
                       y_std=float(d["y_std"]), metrics=dict(d.get("metrics", {})),
                       ensemble=int(d.get("ensemble", 1)), use_cost="cost" in dense, ordinal="ordinal" in dense,
                       x_mean=[float(v) for v in x_mean] if x_mean is not None else None,
                       x_std=[float(v) for v in x_std] if x_std is not None else None, dense=dense)
            width = sum(2 if b == "cost" else len(ordinal_names(space)) for b in dense)
            if (pred.x_mean is None) != (not dense) or (pred.x_std is None) != (not dense) or (
                    dense and (len(pred.x_mean) != width or len(pred.x_std) != width)):
                raise ValueError(f"x_mean and x_std must both be absent or both hold {width} numbers")
            state = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in d["state"].items()}
            first = "0.weight" if pred.ensemble == 1 else "members.0.0.weight"
            n_features = state[first].shape[1]
            pred.model = pred._build(n_features)
            pred.model.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"malformed accuracy predictor ({exc})", path=str(path)) from exc
        pred.model.eval()
        return pred
