"""The statistics hwnas fits and scores with, in one place.

- rank and error metrics: `kendall_tau`, `latency_metrics` (MAPE, share within +-10 %, tau)
- sampling error of an accuracy: `binomial_stderr` (percentage points, from the number of images)
- robust weights: `tukey_weights` (biweight of MAD-scaled residuals), `trimmed_rms`
- ridge with leave-one-out model choice: `weighted_ridge_loo`, `grouped_ridge_loo` (a penalty per
  feature group), `relative_least_squares` and `relative_ridge` (relative error, Tukey-reweighted)

Used by the latency table's calibration, the whole-network latency regressor and the accuracy predictor.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# ridge penalties tried on standardised features (whole-network regressor)
RIDGE_ALPHAS = np.logspace(-6, 3, 28)
# ridge penalties tried on the op-attribute costs (table calibration)
RELATIVE_RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-1, 5, 13))


def kendall_tau(a, b, *, undefined: float = 0.0) -> float:
    """Kendall rank correlation (tau-b); `undefined` where it is not defined (a constant input)."""
    from scipy.stats import kendalltau

    tau = kendalltau(np.asarray(a), np.asarray(b)).statistic
    return float(tau) if np.isfinite(tau) else undefined


def binomial_stderr(percent: float, images: int | None) -> float | None:
    """The binomial standard error, in percentage points, of an accuracy of `percent` % measured on
    `images` images (None when the number of images is unknown or zero)."""
    if not images or images < 1:
        return None
    p = min(max(float(percent) / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(p * (1.0 - p) / images)


def latency_metrics(predicted_ms: Iterable[float], measured_ms: Iterable[float]) -> dict[str, float]:
    """MAPE (%), share within +-10 % of the measurement, Kendall tau, and the mean ratio predicted/measured."""
    p = np.asarray(list(predicted_ms), dtype=float)
    y = np.asarray(list(measured_ms), dtype=float)
    if p.shape != y.shape or p.size == 0:
        raise ValueError(f"need equally long non-empty predictions and measurements, got {p.shape} and {y.shape}")
    rel = p / y - 1.0
    tau = kendall_tau(p, y, undefined=float("nan")) if p.size > 1 else float("nan")
    return {
        "n": int(p.size),
        "mape": float(100.0 * np.mean(np.abs(rel))),
        "within_10pct": float(np.mean(np.abs(rel) <= 0.1)),
        "kendall_tau": tau,
        "mean_ratio": float(np.mean(p / y)),
    }


@dataclass
class RidgeFit:
    """One fitted ridge member: standardisation, coefficients and the chosen penalty."""

    feature_set: str
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    alpha: float
    group_penalties: tuple[float, ...] | None = None  # per feature group; inf: the group is left out

    def predict(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean) / self.scale) @ self.coef + self.intercept

    def to_dict(self) -> dict[str, Any]:
        d = {"feature_set": self.feature_set, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
             "coef": self.coef.tolist(), "intercept": self.intercept, "alpha": self.alpha}
        if self.group_penalties is not None:  # JSON has no infinity: a left-out group is null
            d["group_penalties"] = [p if math.isfinite(p) else None for p in self.group_penalties]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RidgeFit:
        groups = d.get("group_penalties")
        penalties = None if groups is None else tuple(math.inf if p is None else float(p) for p in groups)
        return cls(str(d["feature_set"]), np.asarray(d["mean"], float), np.asarray(d["scale"], float),
                   np.asarray(d["coef"], float), float(d["intercept"]), float(d["alpha"]), penalties)


def weighted_standardise(X: np.ndarray, y: np.ndarray, w: np.ndarray):
    """Centre (weighted) and scale the features, centre the target; both multiplied by sqrt(w).

    Returns (feature means, feature scales, target mean, sqrt(w), weighted Z, weighted y).
    """
    mean = np.average(X, axis=0, weights=w)
    scale = X.std(axis=0)
    scale[scale == 0] = 1.0
    y_mean = float(np.average(y, weights=w))
    sw = np.sqrt(w)
    return mean, scale, y_mean, sw, (X - mean) / scale * sw[:, None], (y - y_mean) * sw


def weighted_ridge_loo(X: np.ndarray, y: np.ndarray, w: np.ndarray, alphas: np.ndarray = RIDGE_ALPHAS,
                       feature_set: str = "") -> tuple[RidgeFit, np.ndarray]:
    """Weighted ridge (intercept unpenalised) with the penalty of least leave-one-out error.

    Returns the fit and its leave-one-out residuals y - yhat_(-i) (closed form via the SVD).
    """
    mean, scale, y_mean, sw, Zw, yw = weighted_standardise(X, y, w)
    U, s, Vt = np.linalg.svd(Zw, full_matrices=False)
    Uty = U.T @ yw
    best: tuple[float, float, np.ndarray] | None = None
    for alpha in alphas:
        shrink = s**2 / (s**2 + alpha)
        leverage = (U**2) @ shrink + w / w.sum()
        loo = (yw - U @ (shrink * Uty)) / np.maximum(1.0 - leverage, 1e-9)
        err = float(np.mean(loo**2))
        if best is None or err < best[0]:
            best = (err, float(alpha), loo / sw)
    assert best is not None
    _, alpha, loo_res = best
    coef = Vt.T @ ((s / (s**2 + alpha)) * Uty)
    return RidgeFit(feature_set, mean, scale, coef, y_mean, alpha), loo_res


# per-group penalties tried (standardised features); inf drops the group. The smallest lets
# near-collinear MAC totals combine freely when the timings are that clean.
GROUP_PENALTIES = (1e-6, 1e-3, 1e-1, 1e1, math.inf)


def grouped_ridge_loo(X: np.ndarray, y: np.ndarray, w: np.ndarray, groups: np.ndarray,
                      penalties: Sequence[float] = GROUP_PENALTIES,
                      feature_set: str = "") -> tuple[RidgeFit, np.ndarray]:
    """Weighted ridge with one penalty per feature group, the combination of least leave-one-out error.

    Group g's columns carry penalty `penalties[i_g]` (inf leaves the group out), every
    combination is tried. A penalty per group lets few rows keep the groups that matter
    and drop the others (per-stage MACs are noise for a launch-bound batch-1 device,
    signal for a compute-bound large batch), which one shared penalty cannot.
    Returns the fit and its leave-one-out residuals y - yhat_(-i).
    """
    groups = np.asarray(groups, dtype=int)
    if groups.shape != (X.shape[1],):
        raise ValueError(f"need one group per feature column, got {groups.shape} for {X.shape[1]} columns")
    mean, scale, y_mean, sw, Zw, yw = weighted_standardise(X, y, w)
    # everything per combination goes through the p x p Gram matrix, so many rows stay cheap
    gram, zty = Zw.T @ Zw, Zw.T @ yw
    n_groups = int(groups.max()) + 1
    best: tuple[float, tuple[float, ...], np.ndarray, np.ndarray] | None = None
    for combo in itertools.product(penalties, repeat=n_groups):
        per_column = np.asarray(combo, dtype=float)[groups]
        keep = np.isfinite(per_column)
        coef = np.zeros(X.shape[1])
        if not keep.any():
            loo = yw / np.maximum(1.0 - w / w.sum(), 1e-9)
        else:
            # penalty a on column j == unit penalty on column j / sqrt(a)
            d = 1.0 / np.sqrt(per_column[keep])
            Zs = Zw[:, keep] * d
            inverse = np.linalg.inv(gram[np.ix_(keep, keep)] * np.outer(d, d) + np.eye(int(keep.sum())))
            coef_s = inverse @ (zty[keep] * d)
            leverage = np.einsum("ij,ij->i", Zs @ inverse, Zs) + w / w.sum()
            loo = (yw - Zs @ coef_s) / np.maximum(1.0 - leverage, 1e-9)
            coef[keep] = coef_s * d
        err = float(np.mean(loo**2))
        if best is None or err < best[0]:
            best = (err, tuple(float(p) for p in combo), coef, loo / sw)
    assert best is not None
    _, combo, coef, loo_res = best
    return RidgeFit(feature_set, mean, scale, coef, y_mean, 1.0, combo), loo_res


def relative_least_squares(X: np.ndarray, y: np.ndarray, *, tukey_c: float = 4.685,
                            iterations: int = 10) -> tuple[np.ndarray, float]:
    """Robust least squares of relative error; returns coef and the trimmed leave-one-out relative RMSE.

    Rows are weighted by 1/y (relative error) and reweighted by Tukey's biweight of their
    relative residual, so a subnet timed while something else ran cannot pull the fit.
    """
    A = X / y[:, None]
    b = np.ones_like(y)
    w = np.ones_like(y)
    for _ in range(iterations):
        sw = np.sqrt(w)
        coef, *_ = np.linalg.lstsq(A * sw[:, None], b * sw, rcond=None)
        w = tukey_weights(b - A @ coef, tukey_c)
    # leave-one-out residuals of the weighted fit: e_i / (1 - h_ii)
    Aw = A * np.sqrt(w)[:, None]
    leverage = np.einsum("ij,ji->i", Aw, np.linalg.pinv(Aw))
    loo = np.abs(b - A @ coef) / np.maximum(1.0 - leverage, 1e-9)
    return coef, trimmed_rms(loo)


def tukey_weights(resid: np.ndarray, tukey_c: float, *, centred: bool = False, min_spread: float = 0.005,
                  floor: float = 1e-6) -> np.ndarray:
    """Tukey's biweight of residuals scaled by their MAD (at least `min_spread`), plus `floor` (never 0).

    `centred` measures each residual from their median rather than from 0.
    """
    centre = np.median(resid)
    spread = max(1.4826 * float(np.median(np.abs(resid - centre))), min_spread)
    u = ((resid - centre) if centred else resid) / (tukey_c * spread)
    return np.where(np.abs(u) < 1, (1 - u**2) ** 2, 0.0) + floor


def trimmed_rms(errors: np.ndarray) -> float:
    """RMS of the best nine tenths of `errors`: outlying timings should not choose the method."""
    kept = np.sort(np.abs(errors))[: max(1, int(np.ceil(0.9 * errors.size)))]
    return float(np.sqrt(np.mean(kept**2)))


def relative_ridge(B: np.ndarray, X: np.ndarray, y: np.ndarray, *, alphas: Sequence[float] = RELATIVE_RIDGE_ALPHAS,
                    tukey_c: float = 4.685, iterations: int = 10) -> tuple[np.ndarray, float, float]:
    """Robust least squares of relative error with `B`'s coefficients free and a ridge on `X`'s.

    Solved in the dual (n x n, however many attribute columns): with row weights s and
    C = s X X' s / alpha + I, the free part is generalised least squares under C and the
    penalised part is X' s C^-1 r / alpha. The penalty is chosen by the trimmed leave-one-out
    relative error (exact for a linear smoother: e_i / (1 - H_ii)). Returns the coefficients
    of [B, X], that error and the penalty.
    """
    A_B, A_X = B / y[:, None], X / y[:, None]
    n = y.size
    best: tuple[float, float, np.ndarray] | None = None
    for alpha in alphas:
        w = np.ones(n)
        for it in range(iterations):
            s = np.sqrt(w)
            Bw, Xw = A_B * s[:, None], A_X * s[:, None]
            C_inv = spd_inverse(Xw @ Xw.T / alpha + np.eye(n))
            M = np.linalg.pinv(Bw.T @ C_inv @ Bw)
            a = M @ (Bw.T @ (C_inv @ s))
            v = C_inv @ (s - Bw @ a)  # the weighted residual
            b = Xw.T @ v / alpha
            if it < iterations - 1:
                w = tukey_weights(1.0 - A_B @ a - A_X @ b, tukey_c)
        CB = C_inv @ Bw
        one_minus_h = np.diag(C_inv) - np.einsum("ij,jk,ik->i", CB, M, CB)
        err = trimmed_rms(v / np.maximum(one_minus_h, 1e-12) / s)
        if best is None or err < best[0]:
            best = (err, float(alpha), np.r_[a, b])
    assert best is not None
    return best[2], best[0], best[1]


def spd_inverse(C: np.ndarray) -> np.ndarray:
    try:
        L = np.linalg.cholesky(C)
        L_inv = np.linalg.solve(L, np.eye(len(C)))
        return L_inv.T @ L_inv
    except np.linalg.LinAlgError:
        return np.linalg.inv(C)
