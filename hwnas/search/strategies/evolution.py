"""Constrained single-objective evolution as in once-for-all (OFA's EvolutionFinder).

Maximises (minimises) the first objective subject to the constraints: a population of
feasible random architectures; each generation keeps the best `parent_ratio`, and refills
the population with `mutation_ratio` mutants of random parents (each gene with
`arch_mutation_prob`, the resolution "r" with `resolution_mutation_prob`) and crossovers of
two random parents. Children that violate a constraint are redrawn, as in OFA.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from hwnas.search.problem import ArchProblem, arch_key
from hwnas.search.strategies.base import SearchBudget, Strategy, best_first, fitness, register_strategy
from hwnas.space.base import Arch

DEFAULTS = {"parent_ratio": 0.25, "mutation_ratio": 0.5, "arch_mutation_prob": 0.1,
            "resolution_mutation_prob": 0.5}
DEFAULT_POP_SIZE = 100
# rounds of redrawing infeasible children before the generation goes on with fewer
_MAX_REDRAWS = 20


def within_budget(problem: ArchProblem, archs: Sequence[Arch]) -> list[Arch]:
    """The longest prefix of `archs` whose new architectures fit the evaluation budget."""
    evaluator, kept, new = problem.evaluator, [], set()
    for arch in archs:
        key = arch_key(problem.space, arch)
        if not evaluator.knows_key(key) and key not in new:
            if len(new) + 1 > evaluator.remaining:
                break
            new.add(key)
        kept.append(arch)
    return kept


def fill_feasible(problem: ArchProblem, make: Callable[[], Arch], n: int) -> list[tuple[Arch, np.ndarray]]:
    """Draw `n` feasible architectures from `make()`, evaluating in batches."""
    out: list[tuple[Arch, np.ndarray]] = []
    for _ in range(_MAX_REDRAWS):
        if len(out) >= n or problem.evaluator.remaining <= 0:
            break
        batch = within_budget(problem, [make() for _ in range(n - len(out))])
        if not batch:
            break
        keys = fitness(problem, batch)
        out.extend((a, k) for a, k in zip(batch, keys, strict=True) if k[0] <= 0)
    return out


@register_strategy("evolution")
class OFAEvolution(Strategy):
    """Options: `pop_size` (100), `parent_ratio` (0.25), `mutation_ratio` (0.5),
    `arch_mutation_prob` (0.1), `resolution_mutation_prob` (0.5)."""

    multi_objective = False

    def _option(self, name: str) -> float:
        return float(self.options.get(name, DEFAULTS[name]))

    def settings(self) -> dict:
        return {"pop_size": self.pop_size or DEFAULT_POP_SIZE, **DEFAULTS, **self.options}

    def mutate(self, problem: ArchProblem, arch: Arch, rng: np.random.Generator) -> Arch:
        space = problem.space
        child = space.mutate(arch, rng, self._option("arch_mutation_prob"))
        if "r" in arch:  # resolution has its own (higher) mutation rate, as in OFA
            child = dict(child, r=arch["r"])
            if rng.random() < self._option("resolution_mutation_prob"):
                child["r"] = space.sample(rng)["r"]
            child = space.validate(child)
        return child

    def run(self, problem: ArchProblem, budget: SearchBudget, seed: int,
            on_generation: Callable[[], None]) -> None:
        space = problem.space
        rng = np.random.default_rng(seed)
        pop_size = self.pop_size or DEFAULT_POP_SIZE
        n_parents = max(1, int(round(self._option("parent_ratio") * pop_size)))
        n_mutants = int(round(self._option("mutation_ratio") * pop_size))

        population = fill_feasible(problem, lambda: space.sample(rng), pop_size)
        on_generation()
        generation = 1
        while population and budget.generations_left(generation) and problem.evaluator.remaining > 0:
            order = best_first(np.array([k for _, k in population]))
            parents = [population[i][0] for i in order[:n_parents]]

            def mutant(parents: list[Arch] = parents) -> Arch:
                return self.mutate(problem, parents[rng.integers(len(parents))], rng)

            def crossed(parents: list[Arch] = parents) -> Arch:
                a, b = parents[rng.integers(len(parents))], parents[rng.integers(len(parents))]
                return space.crossover(a, b, rng)

            children = fill_feasible(problem, mutant, n_mutants)
            children += fill_feasible(problem, crossed, pop_size - n_mutants)
            population = [population[i] for i in order[:n_parents]] + children
            on_generation()
            generation += 1
