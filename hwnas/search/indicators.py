"""Pareto dominance and hypervolume (every objective minimised)."""

from __future__ import annotations

import numpy as np


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows of `points` (n, m), in input order.

    Equal rows do not dominate each other, so all copies of a front point are kept.
    """
    F = np.asarray(points, dtype=float)
    if F.ndim != 2:
        raise ValueError(f"expected an (n, m) array, got shape {F.shape}")
    n = len(F)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if F.shape[1] == 2:
        return _pareto_front_2d(F)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        dominated_by = np.all(F <= F[i], axis=1) & np.any(F < F[i], axis=1)
        keep[i] = not dominated_by.any()
    return np.flatnonzero(keep)


def _pareto_front_2d(F: np.ndarray) -> np.ndarray:
    # sorted by (f0, f1), a point is on the front iff it has the least f1 of its f0 group and
    # beats the least f1 of every point with a smaller f0
    order = np.lexsort((F[:, 1], F[:, 0]))
    f0, f1 = F[order, 0], F[order, 1]
    new_group = np.r_[True, f0[1:] != f0[:-1]]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(f0)), 0))
    best_before = np.r_[np.inf, np.minimum.accumulate(f1)][group_start]
    keep = (f1 == f1[group_start]) & (f1 < best_before)
    return np.sort(order[keep])


def hypervolume(points: np.ndarray, ref: np.ndarray) -> float:
    """Volume dominated by `points` and bounded by `ref`; points not strictly better than
    `ref` in every objective add nothing. Exact: a sweep in 2-D, moocore above."""
    F = np.asarray(points, dtype=float).reshape(-1, len(ref))
    ref = np.asarray(ref, dtype=float)
    F = F[np.all(F < ref, axis=1)]
    if len(F) == 0:
        return 0.0
    if F.shape[1] == 1:
        return float(ref[0] - F[:, 0].min())
    if F.shape[1] == 2:
        F = F[_pareto_front_2d(F)]
        F = F[np.argsort(F[:, 0])]
        widths = np.diff(np.append(F[:, 0], ref[0]))
        return float(np.sum(widths * (ref[1] - F[:, 1])))
    from moocore import hypervolume as _moocore_hypervolume

    return float(_moocore_hypervolume(F, ref=ref))


def normalize(points: np.ndarray, ideal: np.ndarray, nadir: np.ndarray) -> np.ndarray:
    """Scale each objective so that `ideal` -> 0 and `nadir` -> 1 (a flat objective -> 0)."""
    ideal, nadir = np.asarray(ideal, float), np.asarray(nadir, float)
    span = np.where(nadir > ideal, nadir - ideal, 1.0)
    return (np.asarray(points, float) - ideal) / span
