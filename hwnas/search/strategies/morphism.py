"""Network morphism: grow a network one choice at a time from the smallest, hill-climbing
on a Pareto archive (after Wei et al. 2016, Elsken et al. 2017's NASH, Cai et al. 2018).

A morphism makes a network larger without changing what it computes (a wider layer, a new
identity block, a larger kernel padded with zeros); as a search move it means: from an
evaluated architecture, go to one that is larger in exactly one choice. The search starts
from `start` (the space's `smallest()` by default) and each generation grows the members of
the archive's non-dominated front, sparsest part of the front first, one growth per member
per round, into unseen architectures; a member all of whose growths are evaluated is done,
and then the next rank is grown. Infeasible architectures are not grown (under a latency
limit, growing only adds latency) unless nothing feasible is left to grow.

A growth is what the space's `grow(arch)` lists where it has one (NAS-Bench-201: each edge to
the next op of none < skip < avg_pool < conv 1x1 < conv 3x3); otherwise one gene's encoded
value + 1, for spaces whose encodings order every choice from small to large (mbv3:
resolution, depth, kernel, expand). So no evaluated architecture is smaller than the start.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hwnas.search.indicators import pareto_front
from hwnas.search.problem import ArchKey, ArchProblem, arch_key
from hwnas.search.strategies.base import SearchBudget, Strategy, register_strategy
from hwnas.search.strategies.pareto_local_search import _crowding
from hwnas.space.base import Arch, SearchSpace

DEFAULT_POP_SIZE = 50
# growths in a row that leave the computed function unchanged before one is taken as a move
_MAX_SILENT_STEPS = 3


def growths(space: SearchSpace, arch: Arch) -> list[Arch]:
    """The architectures one choice larger than `arch` that compute something else: a growth
    that leaves what the network computes unchanged (a space's `structure_genes` equal, e.g. an
    op on a dead NAS-Bench-201 edge) can only add latency, so it is grown on in its place
    (up to `_MAX_SILENT_STEPS` deep)."""
    out: dict[ArchKey, Arch] = {}
    own = arch_key(space, arch)
    frontier = [arch]
    for _ in range(_MAX_SILENT_STEPS):
        silent: list[Arch] = []
        for parent in frontier:
            for cand in _one_step(space, parent):
                key = arch_key(space, cand)
                if key == own or key in out:
                    continue
                if _same_function(space, arch, cand):
                    silent.append(cand)
                else:
                    out[key] = cand
        if not silent:
            break
        frontier = silent
    return list(out.values())


def _same_function(space: SearchSpace, a: Arch, b: Arch) -> bool:
    if not hasattr(space, "structure_genes"):
        return False
    S, _ = space.structure_genes(np.stack([space.encode(a), space.encode(b)]))
    return bool(np.array_equal(S[0], S[1]))


def _one_step(space: SearchSpace, arch: Arch) -> list[Arch]:
    if hasattr(space, "grow"):
        candidates = list(space.grow(arch))
    else:
        x = space.encode(arch)
        _, hi = space.bounds
        candidates = []
        for g in np.flatnonzero(x < hi):
            y = x.copy()
            y[g] += 1
            candidates.append(space.decode(y))
    return candidates


def start_of(space: SearchSpace, options: dict) -> Arch:
    if options.get("start") is not None:
        return space.validate(options["start"])
    if hasattr(space, "smallest"):
        return space.smallest()
    return space.decode(space.bounds[0])


@register_strategy("morphism")
class NetworkMorphism(Strategy):
    """Options: `pop_size`, architectures grown per generation (50; under an evaluation
    budget K, min(50, max(10, K/20))); `start`, the architecture to grow from (the space's smallest)."""

    multi_objective = True

    def settings(self) -> dict:
        return {"pop_size": self.pop_size or DEFAULT_POP_SIZE, **self.options}

    def run(self, problem: ArchProblem, budget: SearchBudget, seed: int,
            on_generation: Callable[[], None]) -> None:
        space, evaluator = problem.space, problem.evaluator
        rng = np.random.default_rng(seed)
        batch_size = self.pop_size = self.population_size(budget, DEFAULT_POP_SIZE)
        archs: list[Arch] = [start_of(space, self.options)]
        F, G = problem.evaluate_archs(archs)
        violation = np.clip(G, 0, None).sum(axis=1) if G.size else np.zeros(1)
        pending: dict[int, list[Arch]] = {}
        done: set[int] = set()
        on_generation()
        generation = 1
        while budget.generations_left(generation) and evaluator.remaining > 0:
            size = int(min(batch_size, evaluator.remaining))
            batch: list[Arch] = []
            batch_keys: set[ArchKey] = set()
            for members in _ranked(F, violation):
                active = [int(i) for i in members if int(i) not in done]
                while active and len(batch) < size:
                    for i in list(active):
                        if len(batch) >= size:
                            break
                        if i not in pending:
                            grown = growths(space, archs[i])
                            pending[i] = [grown[j] for j in rng.permutation(len(grown))]
                        arch = _next_unseen(problem, pending[i], batch_keys)
                        if arch is None:
                            done.add(i)
                            active.remove(i)
                            continue
                        batch_keys.add(arch_key(space, arch))
                        batch.append(arch)
                if len(batch) >= size:
                    break
            if not batch:
                break  # every architecture reachable by growth is evaluated
            F_new, G_new = problem.evaluate_archs(batch)
            archs.extend(batch)
            F = np.vstack([F, F_new])
            violation = np.r_[violation, np.clip(G_new, 0, None).sum(axis=1) if G_new.size else np.zeros(len(batch))]
            on_generation()
            generation += 1


def _next_unseen(problem: ArchProblem, pending: list[Arch], batch_keys: set[ArchKey]) -> Arch | None:
    while pending:
        arch = pending.pop(0)
        key = arch_key(problem.space, arch)
        if key not in batch_keys and not problem.evaluator.knows_key(key):
            return arch
    return None


def _ranked(F: np.ndarray, violation: np.ndarray) -> list[np.ndarray]:
    """Archive indices by non-dominated rank among the feasible, each rank sparsest first;
    then the infeasible, least violating first."""
    ranks: list[np.ndarray] = []
    left = np.flatnonzero(violation <= 0)
    while len(left):
        front = left[pareto_front(F[left])]
        left = np.setdiff1d(left, front)
        ranks.append(front[np.argsort(-_crowding(F[front]), kind="stable")])
    infeasible = np.flatnonzero(violation > 0)
    ranks.extend(infeasible[np.argsort(violation[infeasible], kind="stable")].reshape(-1, 1))
    return ranks
