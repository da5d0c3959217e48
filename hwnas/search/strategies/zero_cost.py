"""Search driven by zero-cost proxies: rank a large random pool by a training-free score,
spend the evaluations on the best-ranked, refit (after Abdelfattah et al. 2021, "Zero-cost
proxies for lightweight NAS", and their warm-up / move-proposal use).

1. A pool of `pool_size` distinct random architectures (the whole space if it is smaller)
   is scored by the proxy: SynFlow or NASWOT on the freshly initialised network (the
   proxies of `hwnas.estimate.zero_cost`, for spaces that `build` networks), or the
   parameter count (`params`, one of the proxies of that paper, for spaces that only count
   them, such as NAS-Bench-201 here).
2. The first `pop_size` evaluations are spread evenly over the pool's proxy ranking, so the
   first fit sees every part of it.
3. Each later generation fits a ridge model per objective (one-hot genes, what the space
   says its genes compute, and the proxy's rank as a feature; targets are the ranks of the
   evaluated values) and evaluates the unseen pool members predicted to add the most
   hypervolume to the evaluated front (two objectives), then those predicted
   non-dominated, sparsest first. Constraint violations are not modelled: infeasible
   architectures are evaluated and left off the front.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from hwnas.errors import InputError
from hwnas.search.gp import mid_ranks
from hwnas.search.problem import ArchProblem, vector_key
from hwnas.search.strategies.base import SearchBudget, Strategy, register_strategy
from hwnas.search.strategies.pareto_local_search import (
    _Features,
    _greedy_hypervolume,
    _ridge_predict,
    _with_surrogate_genes,
    fill_by_fronts,
)
from hwnas.space.base import SearchSpace

DEFAULT_POP_SIZE = 50
DEFAULT_POOL_SIZE = 2000
# without a pool size given, at most this many pool members per evaluation of the budget
POOL_PER_EVALUATION = 10
# under a wall-clock budget, the share of the time left that scoring the pool may take
PROXY_TIME_SHARE = 0.25
_SCORE_CHUNK = 16
PROXIES = ("auto", "synflow", "naswot", "params")
# ridge penalty of the refit (the same features and scale as pareto-local-search's surrogate)
_RIDGE = 30.0
# random draws per pool member before accepting a smaller pool (a small space runs out)
_DRAWS_PER_MEMBER = 20


def proxy_scores(space: SearchSpace, proxy: str, archs: list, seed: int) -> np.ndarray:
    """Higher is better. `auto`: SynFlow where the space builds networks, else parameters."""
    if proxy == "auto":
        proxy = "synflow" if hasattr(space, "build") else "params"
    if proxy == "params":
        if not hasattr(space, "params"):
            raise InputError(f"space '{space.name}' does not count parameters", field="proxy")
        return np.array([float(space.params(a)) for a in archs])
    if not hasattr(space, "build"):
        raise InputError(f"proxy '{proxy}' needs a space that builds networks; space '{space.name}' "
                         "does not (use proxy 'params')", field="proxy")
    from hwnas.estimate.zero_cost import ZeroCostEstimator

    return ZeroCostEstimator(space, proxy=proxy, seed=seed).predict(archs)


@register_strategy("zero-cost")
class ZeroCostSearch(Strategy):
    """Options: `pop_size`, architectures evaluated per generation (50; under an evaluation
    budget K, min(50, max(10, K/20))); `pool_size` scored by the proxy (2,000, at most 10 per
    evaluation of the budget; under a wall-clock budget, as many as a quarter of it scores); `proxy`
    ("auto", "synflow", "naswot" or "params")."""

    multi_objective = True

    def settings(self) -> dict:
        return {"pop_size": self.pop_size or DEFAULT_POP_SIZE, "pool_size": self.pool_size(),
                "proxy": self.proxy(), **self.options}

    def pool_size(self) -> int:
        return int(self.options.get("pool_size", DEFAULT_POOL_SIZE))

    def proxy(self) -> str:
        proxy = str(self.options.get("proxy", "auto"))
        if proxy not in PROXIES:
            raise InputError(f"unknown proxy {proxy!r}; expected one of {', '.join(PROXIES)}", field="proxy")
        return proxy

    def run(self, problem: ArchProblem, budget: SearchBudget, seed: int,
            on_generation: Callable[[], None]) -> None:
        space, evaluator = problem.space, problem.evaluator
        rng = np.random.default_rng(seed)
        batch_size = self.pop_size = self.population_size(budget, DEFAULT_POP_SIZE)
        pool_size = self.pool_size()
        if budget.evaluations is not None and "pool_size" not in self.options:
            pool_size = min(pool_size, POOL_PER_EVALUATION * budget.evaluations)
        X = _pool(problem, rng, pool_size)
        if not len(X):
            return
        X, score = self._score_in_time(problem, X, batch_size, seed)
        archs = [space.decode(x) for x in X]
        # in [0, 1], tied scores (e.g. cells with equal parameter counts) sharing one rank
        proxy_rank = mid_ranks(score)[:, 0] * len(score) / max(len(score) - 1, 1)
        evaluated = np.zeros(len(X), dtype=bool)
        F = np.full((len(X), problem.n_obj), np.nan)
        violation = np.zeros(len(X))

        first = min(batch_size, len(X), int(evaluator.remaining))
        picks = np.argsort(score, kind="stable")[np.linspace(0, len(X) - 1, first).round().astype(int)]
        generation = 0
        while len(picks) and budget.generations_left(generation):
            F_new, G_new = problem.evaluate_archs([archs[i] for i in picks])
            F[picks], evaluated[picks] = F_new, True
            violation[picks] = np.clip(G_new, 0, None).sum(axis=1) if G_new.size else 0.0
            on_generation()
            generation += 1
            count = int(min(batch_size, evaluator.remaining, (~evaluated).sum()))
            picks = self._predicted_best(space, X, proxy_rank, evaluated, F, violation, count)

    def _score_in_time(self, problem: ArchProblem, X: np.ndarray, least: int, seed: int
                       ) -> tuple[np.ndarray, np.ndarray]:
        """The pool's proxy scores, in chunks; under a wall-clock budget (the evaluator's
        deadline) scoring stops after `PROXY_TIME_SHARE` of the time left (keeping at least
        `least` members), since a network proxy costs a fraction of a second per subnet."""
        space, deadline = problem.space, problem.evaluator.deadline
        start = time.perf_counter()
        stop = None if deadline is None else start + PROXY_TIME_SHARE * max(0.0, deadline - start)
        scores: list[float] = []
        for i in range(0, len(X), _SCORE_CHUNK):
            if stop is not None and len(scores) >= least and time.perf_counter() >= stop:
                break
            chunk = [space.decode(x) for x in X[i:i + _SCORE_CHUNK]]
            scores.extend(proxy_scores(space, self.proxy(), chunk, seed).tolist())
        return X[:len(scores)], np.array(scores)

    def _predicted_best(self, space: SearchSpace, X: np.ndarray, proxy_rank: np.ndarray, evaluated: np.ndarray,
                        F: np.ndarray, violation: np.ndarray, count: int) -> np.ndarray:
        if count <= 0:
            return np.zeros(0, dtype=np.int64)
        seen, unseen = np.flatnonzero(evaluated), np.flatnonzero(~evaluated)
        lo, hi = (np.asarray(b, dtype=np.int64) for b in space.bounds)
        X_seen, X_pool, lo, hi = _with_surrogate_genes(space, X[seen], X[unseen], lo, hi)
        features = _Features(lo, hi, len(space.bounds[0]))
        A = np.hstack([features(X_seen), proxy_rank[seen, None]])
        B = np.hstack([features(X_pool), proxy_rank[unseen, None]])
        F_seen = F[seen]
        ranks = mid_ranks(F_seen)
        predicted_ranks = _ridge_predict(A, ranks, B, _RIDGE)
        predicted = np.stack([np.quantile(F_seen[:, k], np.clip(predicted_ranks[:, k], 0, 1))
                              for k in range(F.shape[1])], axis=1)
        known = F_seen[violation[seen] <= 0]
        chosen: list[int] = []
        if known.shape[1] == 2 and len(known):
            chosen = _greedy_hypervolume(known, predicted, None, count)
        chosen = fill_by_fronts(known, predicted, chosen, count)
        return unseen[np.array(chosen[:count], dtype=np.int64)]


def _pool(problem: ArchProblem, rng: np.random.Generator, size: int) -> np.ndarray:
    """Up to `size` distinct unseen random architectures (canonical encodings)."""
    space, evaluator = problem.space, problem.evaluator
    rows, keys = [], set()
    for _ in range(_DRAWS_PER_MEMBER * size):
        if len(rows) >= size:
            break
        x = space.encode(space.sample(rng))
        key = vector_key(x)
        if key not in keys and not evaluator.knows_key(key):
            keys.add(key)
            rows.append(x)
    return np.array(rows, dtype=np.int64).reshape(len(rows), len(space.bounds[0]))
