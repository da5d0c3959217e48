"""Regularized (aging) evolution, as in AmoebaNet (Real et al., 2019).

A population of `pop_size` random architectures; each step samples `sample_size` of them,
mutates the best (first objective, constraint violations ranked last) into a child that
differs from its parent (and, when it can, from every architecture evaluated so far), adds
the child and removes the oldest member.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np

from hwnas.search.problem import ArchProblem, arch_key
from hwnas.search.strategies.base import SearchBudget, Strategy, best_first, fitness, register_strategy
from hwnas.space.base import Arch

DEFAULT_POP_SIZE = 50
# tries to draw a child that differs from its parent
_MAX_MUTATION_TRIES = 100


@register_strategy("regularized-evolution")
class RegularizedEvolution(Strategy):
    """Options: `pop_size` P (50; under an evaluation budget K, min(50, max(10, K/20))),
    `sample_size` S (P/4), `mutation_prob` per gene
    (1/n_var: one gene on average, at least one always). A generation is P children."""

    multi_objective = False

    def settings(self) -> dict:
        pop_size = self.pop_size or DEFAULT_POP_SIZE
        return {"pop_size": pop_size, "sample_size": self.sample_size(pop_size), **self.options}

    def sample_size(self, pop_size: int) -> int:
        # AmoebaNet's ratio (P=100, S=25) unless given
        return min(pop_size, int(self.options.get("sample_size", max(2, round(pop_size / 4)))))

    def child(self, problem: ArchProblem, parent: Arch, rng: np.random.Generator) -> Arch:
        """A mutant of `parent` that differs from it, preferably one not evaluated yet."""
        space = problem.space
        prob = self.options.get("mutation_prob", 1.0 / len(space.bounds[0]))
        parent_key = arch_key(space, parent)
        fallback = None
        for _ in range(_MAX_MUTATION_TRIES):
            child = space.mutate(parent, rng, prob)
            key = arch_key(space, child)
            if key == parent_key:
                continue
            if not problem.evaluator.knows_key(key):
                return child
            fallback = fallback or child
        return fallback if fallback is not None else space.sample(rng)

    def run(self, problem: ArchProblem, budget: SearchBudget, seed: int,
            on_generation: Callable[[], None]) -> None:
        space, evaluator = problem.space, problem.evaluator
        rng = np.random.default_rng(seed)
        pop_size = self.pop_size = self.population_size(budget, DEFAULT_POP_SIZE)
        sample_size = self.sample_size(pop_size)

        initial: list[Arch] = []
        while len(initial) < pop_size and evaluator.count_new(initial) < evaluator.remaining:
            initial.append(space.sample(rng))
        if not initial:
            return
        keys = fitness(problem, initial)
        population: deque[tuple[Arch, np.ndarray]] = deque(zip(initial, keys, strict=True))
        on_generation()
        generation, steps = 1, 0
        while budget.generations_left(generation) and evaluator.remaining > 0:
            picks = rng.choice(len(population), size=sample_size, replace=False)
            sample_keys = np.array([population[i][1] for i in picks])
            parent = population[picks[best_first(sample_keys)[0]]][0]
            child = self.child(problem, parent, rng)
            population.append((child, fitness(problem, [child])[0]))
            population.popleft()
            steps += 1
            if steps % pop_size == 0:
                on_generation()
                generation += 1
        if steps % pop_size:
            on_generation()
