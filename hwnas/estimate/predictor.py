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
from hwnas.estimate.features import (
    arch_features,
    by_resolution_features,
    cost_features,
    extreme_features,
    extreme_names,
    has_cost,
    is_elastic,
    ordinal_features,
    ordinal_names,
)
from hwnas.io import atomic_write_bytes, atomic_write_json, read_json
from hwnas.stats import kendall_tau

PREDICTOR_FORMAT = "hwnas-accuracy-predictor"
SCHEMA_VERSION = 1


class Ensemble(nn.Module):
    """The mean prediction of several MLPs fitted from different initialisations."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)


class KernelRegressor(nn.Module):
    """Gaussian-process mean (kernel ridge) on standardised feature vectors (F features): an RBF
    kernel plus a linear one, f(x) = sum_i alpha_i [exp(-|x - x_i|^2 / (2 ell^2 F)) + lin x.x_i / F]
    over the training points x_i."""

    def __init__(self, train_x: torch.Tensor, alpha: torch.Tensor, ell: float, lin: float = 0.0):
        super().__init__()
        self.register_buffer("train_x", train_x)
        self.register_buffer("alpha", alpha)
        self.register_buffer("ell", torch.tensor(float(ell), dtype=torch.float64))
        self.register_buffer("lin", torch.tensor(float(lin), dtype=torch.float64))

    @staticmethod
    def kernel(a: torch.Tensor, b: torch.Tensor, ell: float, lin: float = 0.0) -> torch.Tensor:
        dot = a @ b.T
        sq = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2 * dot
        return torch.exp(-sq.clamp_min(0) / (2 * ell**2 * a.shape[1])) + lin * dot / a.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel(x.double(), self.train_x, float(self.ell), float(self.lin))
        return (k @ self.alpha).float().unsqueeze(1)


# (length scale, noise, linear weight) triples `kind="gp"` chooses from by cross-validation on the training pairs
GP_GRID = tuple((ell, noise, lin) for ell in (0.35, 0.5, 0.7, 1.0, 1.5) for noise in (0.03, 0.1, 0.3, 1.0)
                for lin in (0.0, 1.0))


def fit_kernel(x: np.ndarray, t: np.ndarray, ell: float, noise: float, lin: float = 0.0) -> np.ndarray:
    """alpha of `KernelRegressor` on standardised targets t (noise: the nugget, in target variances)."""
    xt = torch.from_numpy(x.astype(np.float64))
    k = KernelRegressor.kernel(xt, xt, ell, lin)
    return _solve(k + noise * torch.eye(len(k), dtype=k.dtype), t)


def _solve(k: torch.Tensor, t: np.ndarray) -> np.ndarray:
    # torch's solver, in torch's thread setting (numpy's BLAS may spin threads on a busy machine);
    # k is a kernel matrix plus a positive nugget, so Cholesky (half the work of LU) applies
    rhs = torch.from_numpy(np.asarray(t, dtype=np.float64)).unsqueeze(1)
    chol, info = torch.linalg.cholesky_ex(k)
    if int(info) == 0:
        return torch.cholesky_solve(rhs, chol).squeeze(1).numpy()
    return torch.linalg.solve(k, rhs).squeeze(1).numpy()


def choose_kernel(x: np.ndarray, t: np.ndarray, grid=GP_GRID, folds: int = 5, seed: int = 0) -> tuple[dict, dict]:
    """The (ell, noise, lin) of `grid` with the best mean Kendall tau over `folds` folds of the training pairs."""
    fold = np.random.default_rng(seed).permutation(len(t)) % folds
    xt = torch.from_numpy(x.astype(np.float64))
    scores = {}
    for ell, noise, lin in grid:
        k_all = KernelRegressor.kernel(xt, xt, ell, lin).numpy()
        taus = []
        for f in range(folds):
            tr, te = fold != f, fold == f
            if te.sum() < 2 or tr.sum() < 2:
                continue
            k = torch.from_numpy(k_all[np.ix_(tr, tr)] + noise * np.eye(int(tr.sum())))
            taus.append(kendall_tau(k_all[np.ix_(te, tr)] @ _solve(k, t[tr]), t[te]))
        scores[(ell, noise, lin)] = float(np.mean(taus)) if taus else 0.0
    best = max(scores, key=scores.get)
    return {"ell": best[0], "noise": best[1], "lin": best[2]}, {",".join(map(str, key)): v
                                                                for key, v in scores.items()}


@dataclass
class AccuracyPredictor:
    """MLP accuracy predictor: `fit(archs, acc)`, `predict(archs)`, `score(archs, acc)`, save/load.

    Inputs: the one-hot architecture code plus (where the space counts them) the subnet's log
    MACs and log parameters, standardised; with `ordinal` (elastic spaces) also the choices as
    numbers (`features.ordinal_features`), with `extreme` how much of the subnet is the smallest
    and the largest subnet, per resolution (`features.extreme_features`), standardised; with
    `by_resolution` the one-hot code once more per resolution (`features.by_resolution_features`).
    `kind="mlp"`: `ensemble` MLPs from different seeds, averaged. `kind="gp"`: a Gaussian-process
    mean (kernel ridge, RBF plus linear kernel) whose length scale, noise and linear weight are
    chosen from `kernel_grid` (default `GP_GRID`) by 5-fold cross-validation on the training pairs
    (Kendall tau); it keeps the training features. The search costs 5 Cholesky solves of 4/5 of the
    training pairs per grid point, so on many thousand pairs a smaller grid saves most of the fit.
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
    extreme: bool = False
    by_resolution: bool = False
    kind: str = "mlp"
    kernel_grid: tuple[tuple[float, float, float], ...] | None = None  # (ell, noise, lin) triples; None: GP_GRID
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

    def _build(self, n_features: int, n_train: int = 0) -> nn.Module:
        if self.kind == "gp":
            return KernelRegressor(torch.zeros(n_train, n_features, dtype=torch.float64),
                                   torch.zeros(n_train, dtype=torch.float64), 1.0)
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
        if self.extreme:
            if not is_elastic(self.space):
                raise InputError(f"extreme features need an elastic MobileNet space, not '{self.space.name}'",
                                 field="extreme")
            blocks += ("extreme",)
        return blocks

    def _dense(self, archs: list[dict], blocks: tuple[str, ...]) -> np.ndarray:
        make = {"cost": cost_features, "ordinal": ordinal_features, "extreme": extreme_features}
        parts = [make[b](self.space, archs) for b in blocks]
        return np.concatenate(parts, axis=1) if parts else np.zeros((len(archs), 0), np.float32)

    def _features(self, archs: list[dict]) -> torch.Tensor:
        x = arch_features(self.space, archs)
        if self.by_resolution:
            x = np.concatenate([x, by_resolution_features(self.space, archs)], axis=1)
        if self.x_mean is not None:
            dense = (self._dense(archs, self.dense) - np.float32(self.x_mean)) / np.float32(self.x_std)
            x = np.concatenate([x, dense.astype(np.float32)], axis=1)
        return torch.from_numpy(x)

    def _grid(self) -> tuple[tuple[float, float, float], ...]:
        if self.kernel_grid is None:
            return GP_GRID
        try:
            grid = tuple((float(ell), float(noise), float(lin)) for ell, noise, lin in self.kernel_grid)
        except (TypeError, ValueError) as exc:
            raise InputError(f"kernel grid must hold (length scale, noise, linear weight) triples ({exc})",
                             field="kernel_grid") from exc
        bad = [g for g in grid if not (g[0] > 0 and g[1] > 0 and g[2] >= 0)]
        if not grid or bad:
            raise InputError(f"kernel grid needs at least one triple with length scale > 0, noise > 0 and linear "
                             f"weight >= 0; got {list(grid) if not bad else bad}", field="kernel_grid")
        return grid

    def fit(self, archs: list[dict], accuracies) -> AccuracyPredictor:
        """Fit on measured accuracies (%); full-batch AdamW on standardised targets."""
        y = np.asarray(accuracies, dtype=np.float64)
        if len(archs) != len(y) or len(y) < 2:
            raise InputError(f"need at least 2 (arch, accuracy) pairs of equal count, got {len(archs)} and {len(y)}",
                             field="accuracies")
        if self.ensemble < 1:
            raise InputError(f"ensemble must be a positive integer, got {self.ensemble!r}", field="ensemble")
        if self.kind not in ("mlp", "gp"):
            raise InputError(f"unknown predictor kind {self.kind!r}; expected 'mlp' or 'gp'", field="kind")
        if self.by_resolution and not is_elastic(self.space):
            raise InputError(f"by-resolution features need an elastic MobileNet space, not '{self.space.name}'",
                             field="by_resolution")
        self.x_mean = self.x_std = None
        self.dense = self._dense_blocks()
        if self.dense:
            dense = self._dense(archs, self.dense).astype(np.float64)
            self.x_mean, self.x_std = dense.mean(axis=0).tolist(), (dense.std(axis=0) + 1e-6).tolist()
        x = self._features(archs)
        self.y_mean, self.y_std = float(y.mean()), float(y.std() or 1.0)
        if self.kind == "gp":
            t = (y - self.y_mean) / self.y_std
            best, cv = choose_kernel(x.numpy(), t, grid=self._grid(), seed=self.seed)
            alpha = fit_kernel(x.numpy(), t, **best)
            self.model = KernelRegressor(x.double(), torch.from_numpy(alpha), best["ell"], best["lin"]).eval()
            self.metrics = {"n_train": len(y), "kernel": best, "kernel_cv_kendall_tau": cv,
                            "train": self.score(archs, y)}
            return self
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
            "kind": self.kind, "by_resolution": self.by_resolution,
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
            from hwnas.space import get_space

            space = get_space(d["space"], **d.get("space_config", {}))
        elif space.name != d["space"]:
            raise InputError(f"predictor is for space '{d['space']}', not '{space.name}'", path=str(path),
                             field="space")
        try:
            x_mean, x_std = d.get("x_mean"), d.get("x_std")  # absent in files without cost features
            # files before ordinal features name no dense blocks: the cost features where x_mean is given
            dense = tuple(d["dense"]) if "dense" in d else (("cost",) if x_mean is not None else ())
            if not set(dense) <= {"cost", "ordinal", "extreme"}:
                raise ValueError(f"unknown dense features {list(dense)}")
            pred = cls(space=space, hidden=tuple(int(h) for h in d["hidden"]), y_mean=float(d["y_mean"]),
                       y_std=float(d["y_std"]), metrics=dict(d.get("metrics", {})),
                       ensemble=int(d.get("ensemble", 1)), use_cost="cost" in dense, ordinal="ordinal" in dense,
                       extreme="extreme" in dense, kind=str(d.get("kind", "mlp")),
                       by_resolution=bool(d.get("by_resolution", False)),
                       x_mean=[float(v) for v in x_mean] if x_mean is not None else None,
                       x_std=[float(v) for v in x_std] if x_std is not None else None, dense=dense)
            names = {"cost": lambda _: [0, 0], "ordinal": ordinal_names, "extreme": extreme_names}
            width = sum(len(names[b](space)) for b in dense)
            if (pred.x_mean is None) != (not dense) or (pred.x_std is None) != (not dense) or (
                    dense and (len(pred.x_mean) != width or len(pred.x_std) != width)):
                raise ValueError(f"x_mean and x_std must both be absent or both hold {width} numbers")
            if pred.kind not in ("mlp", "gp"):
                raise ValueError(f"unknown predictor kind {pred.kind!r}")
            dtype = torch.float64 if pred.kind == "gp" else torch.float32  # kernel weights need doubles
            state = {k: torch.as_tensor(v, dtype=dtype) for k, v in d["state"].items()}
            if pred.kind == "gp":
                pred.model = pred._build(state["train_x"].shape[1], state["train_x"].shape[0])
            else:
                first = "0.weight" if pred.ensemble == 1 else "members.0.0.weight"
                pred.model = pred._build(state[first].shape[1])
            pred.model.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"malformed accuracy predictor ({exc})", path=str(path)) from exc
        pred.model.eval()
        return pred
