"""A Gaussian process over architecture encodings, for surrogate-guided search (`bo`, `pareto-local-search`).

The kernel is the exponential kernel of the Hamming distance between two integer encodings
(how many genes differ; with a space's `surrogate_genes`, e.g. a cell without its dead
edges and how many edges run each op, those count too): k(a, b) = exp(-d(a, b) / ell). Its
length scale and noise are the ones of a small grid that maximise each target's marginal
likelihood; so is the subset of columns the distance counts, where a space offers alternatives
(`surrogate_views`: on NAS-Bench-201 accuracy chooses the columns that say what the cell computes,
latency all of them). Targets are best given as normal scores of ranks (`normal_scores`): a few very
poor architectures then do not dominate the fit.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular
from scipy.special import ndtri as _normal_ppf
from threadpoolctl import threadpool_limits

from hwnas.space.base import Arch

# the grid the hyperparameters are chosen from: length scale in genes, noise variance
_LENGTH_SCALES = (1.0, 2.0, 4.0, 8.0, 32.0)
_NOISES = (1e-3, 1e-2, 1e-1)
# the grid is searched on at most this many training points (then one fit on all of them)
_MAX_GRID_POINTS = 400


def encodings(space, archs: list[Arch]) -> np.ndarray:
    """Encodings of `archs`, extended by the space's surrogate features (`extended`)."""
    return extended(space, np.array([space.encode(a) for a in archs], dtype=np.int64))


def extended(space, X: np.ndarray) -> np.ndarray:
    """Rows of encodings `X` followed by the space's surrogate features (`surrogate_genes`), if any."""
    extra = surrogate_genes(space, X)
    return X if extra is None else np.hstack([X, extra[0]])


def surrogate_genes(space, X: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(features, upper bounds) a space adds to rows of encodings `X` for surrogate models: its
    `surrogate_genes`, else its `structure_genes` (what the genes compute), else None."""
    for name in ("surrogate_genes", "structure_genes"):
        found = getattr(space, name)(X) if hasattr(space, name) else None
        if found is not None:
            return found
    return None


def surrogate_views(space, X: np.ndarray) -> list[np.ndarray]:
    """The space's `surrogate_views` (column subsets of [encoding, surrogate_genes] a surrogate may fit
    an objective on instead of all columns) where the rows `X` carry those columns, else none."""
    if not hasattr(space, "surrogate_views"):
        return []
    views = [np.asarray(v, dtype=np.int64) for v in space.surrogate_views()]
    return [v for v in views if len(v) and v.max() < X.shape[1]]


class HammingGP:
    """A GP with the exponential Hamming kernel exp(-d / ell) between integer encodings, fitted
    to standardised targets (one GP per column, sharing the kernel's grid search). `views`: column
    subsets the distance may count instead of all columns, chosen per target like ell and the
    noise; `chosen` holds each target's (view, ell, noise) after `posterior` (view 0: all columns)."""

    def __init__(self, X: np.ndarray, X_new: np.ndarray, views: list[np.ndarray] | None = None):
        # one distance per view: all columns, then each alternative subset of columns
        subsets = [np.arange(X.shape[1])] + [np.asarray(v) for v in (views or [])]
        self.d = [_hamming(X[:, v], X[:, v]) for v in subsets]
        self.d_new = [_hamming(X_new[:, v], X[:, v]) for v in subsets]

    def posterior(self, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, standard deviation) of a new observation at each new encoding, per column of
        `Y` (n, k); each column's length scale and noise maximise its marginal likelihood (on
        an evenly spaced subset of at most `_MAX_GRID_POINTS` training points).

        One BLAS thread: the matrices are at most a few hundred rows, and a BLAS thread pool that
        waits for cores other work holds made a search 5-25x slower on a busy 2-core machine.
        """
        with threadpool_limits(limits=1, user_api="blas"):
            return self._posterior(Y)

    def _posterior(self, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Y = np.atleast_2d(np.asarray(Y, float).T).T
        mu, sd = Y.mean(axis=0), np.where(Y.std(axis=0) > 0, Y.std(axis=0), 1.0)
        T = (Y - mu) / sd
        n = len(T)
        sub = np.unique(np.linspace(0, n - 1, min(n, _MAX_GRID_POINTS)).astype(np.int64))
        best: list = [None] * T.shape[1]
        for view, d in enumerate(self.d):
            for ell in _LENGTH_SCALES:
                for noise in _NOISES:
                    fit = _fit(d[np.ix_(sub, sub)], T[sub], ell, noise)
                    if fit is None:
                        continue
                    L, alpha = fit
                    evidence = -0.5 * (T[sub] * alpha).sum(axis=0) - np.log(np.diag(L)).sum()
                    for c in range(T.shape[1]):
                        if best[c] is None or evidence[c] > best[c][0]:
                            best[c] = (evidence[c], view, ell, noise)
        self.chosen = [b[1:] if b is not None else None for b in best]
        means, stds = [], []
        for c in range(T.shape[1]):
            _, view, ell, noise = best[c] if best[c] is not None else (0.0, 0, _LENGTH_SCALES[-1], _NOISES[-1])
            d = self.d[view]
            fit = _fit(d, T[:, c:c + 1], ell, noise) or _fit(d, T[:, c:c + 1], ell, 1.0)
            L, alpha = fit
            k = np.exp(-self.d_new[view] / ell)
            v = solve_triangular(L, k.T, lower=True)
            means.append(mu[c] + sd[c] * (k @ alpha[:, 0]))
            stds.append(sd[c] * np.sqrt(np.clip(1.0 + noise - (v ** 2).sum(axis=0), 1e-12, None)))
        return np.stack(means, axis=1), np.stack(stds, axis=1)


def _fit(d: np.ndarray, T: np.ndarray, ell: float, noise: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(Cholesky factor of K + noise I, K^-1 T) for the kernel exp(-d / ell); None if not positive definite."""
    try:
        L = np.linalg.cholesky(np.exp(-d / ell) + noise * np.eye(len(d)))
    except np.linalg.LinAlgError:
        return None
    return L, solve_triangular(L, solve_triangular(L, T, lower=True), lower=True, trans=1)


def _hamming(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    return (A[:, None, :] != B[None, :, :]).sum(axis=2).astype(float)


def mid_ranks(Y: np.ndarray) -> np.ndarray:
    """Each column's ranks scaled to [0, 1): rank / n, tied values sharing their mean rank (a latency
    timed in whole milliseconds ties many architectures; distinct ranks would order them by chance)."""
    Y = np.atleast_2d(np.asarray(Y, float).T).T
    return np.stack([_rank_among(Y[:, k], Y[:, k]) - 0.5 for k in range(Y.shape[1])], axis=1) / len(Y)


def normal_scores(Y: np.ndarray) -> np.ndarray:
    """Each column replaced by the standard normal quantiles of its ranks (ties share a rank)."""
    Y = np.atleast_2d(np.asarray(Y, float).T).T
    out = np.empty_like(Y)
    for k in range(Y.shape[1]):
        out[:, k] = score_of(Y[:, k], Y[:, k])
    return out


def score_of(column: np.ndarray, values) -> np.ndarray:
    """The normal score that `values` would have among `column` (mid-rank of ties)."""
    return _normal_ppf((_rank_among(column, values) + 0.5) / (len(column) + 1.0))


def _rank_among(column: np.ndarray, values) -> np.ndarray:
    """How many of `column` lie below each of `values`, a tie counting half: (0-based mid-rank) + 1/2 for
    a value of `column`, so ties share one rank."""
    s = np.sort(column)
    return (np.searchsorted(s, values, "left") + np.searchsorted(s, values, "right")) / 2.0
