"""NSGA-II (pymoo) over a space's encoding, with space-aware operators.

Duplicate elimination also rejects any architecture already evaluated, so every offspring
is a new query: on a small tabular space this is what makes a fixed budget count.
"""

from __future__ import annotations

from collections.abc import Callable

from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.evaluator import Evaluator
from pymoo.core.termination import NoTermination

from hwnas.search.operators import EncodingDuplicateElimination, SpaceCrossover, SpaceMutation, SpaceSampling
from hwnas.search.problem import ArchProblem
from hwnas.search.strategies.base import SearchBudget, Strategy, register_strategy

DEFAULT_POP_SIZE = 100


@register_strategy("nsga2")
class NSGA2Strategy(Strategy):
    """Options: `pop_size` (100; under an evaluation budget K, min(100, max(10, K/20))),
    `mutation_prob` per gene (1/n_var: one gene on average), `crossover_prob` (0.9)."""

    multi_objective = True

    def run(self, problem: ArchProblem, budget: SearchBudget, seed: int,
            on_generation: Callable[[], None]) -> None:
        space, evaluator = problem.space, problem.evaluator
        pop_size = self.pop_size = self.population_size(budget, DEFAULT_POP_SIZE)
        algorithm = NSGA2(
            pop_size=pop_size,
            sampling=SpaceSampling(space, evaluator),
            crossover=SpaceCrossover(space, prob=self.options.get("crossover_prob", 0.9)),
            mutation=SpaceMutation(space, self.options.get("mutation_prob")),
            eliminate_duplicates=EncodingDuplicateElimination(evaluator),
        )
        algorithm.setup(problem, termination=NoTermination(), seed=seed, verbose=False)
        pymoo_evaluator = Evaluator()
        generation = 0
        while budget.generations_left(generation) and evaluator.remaining > 0:
            offspring = algorithm.ask()
            if offspring is None or len(offspring) == 0:
                break  # the space holds no unseen architecture the operators can reach
            # stay within the evaluation budget: keep as many new archs as it allows
            if len(offspring) > evaluator.remaining:
                offspring = offspring[: int(evaluator.remaining)]
            pymoo_evaluator.eval(problem, offspring)
            algorithm.tell(infills=offspring)
            on_generation()
            generation += 1
        if generation == 0 and evaluator.remaining > 0:
            raise RuntimeError(f"NSGA-II could not sample any architecture (seed {seed})")
