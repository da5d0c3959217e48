"""Random search: distinct uniform samples from the space, one batch per generation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hwnas.search.problem import ArchProblem, arch_key
from hwnas.search.strategies.base import SearchBudget, Strategy, register_strategy

DEFAULT_BATCH = 100
# consecutive already-seen samples after which the space is taken as exhausted
_MAX_MISSES = 10_000


@register_strategy("random")
class RandomSearch(Strategy):
    """Options: `pop_size`, the batch evaluated per generation (100)."""

    multi_objective = True

    def run(self, problem: ArchProblem, budget: SearchBudget, seed: int,
            on_generation: Callable[[], None]) -> None:
        space, evaluator = problem.space, problem.evaluator
        rng = np.random.default_rng(seed)
        batch_size = self.pop_size or DEFAULT_BATCH
        generation, misses = 0, 0
        while budget.generations_left(generation) and evaluator.remaining > 0 and misses < _MAX_MISSES:
            want = int(min(batch_size, evaluator.remaining))
            batch, keys = [], set()
            while len(batch) < want and misses < _MAX_MISSES:
                arch = space.sample(rng)
                key = arch_key(space, arch)
                if key in keys or evaluator.knows_key(key):
                    misses += 1
                    continue
                misses = 0
                keys.add(key)
                batch.append(arch)
            if not batch:
                break
            problem.evaluate_archs(batch)
            on_generation()
            generation += 1
