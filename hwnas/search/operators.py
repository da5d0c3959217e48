"""pymoo operators that vary architectures through their space, on integer encodings.

Sampling, crossover and mutation decode the vector, call the space's own `sample`,
`crossover`, `mutate`, and encode again, so every offspring is a valid architecture.
"""

from __future__ import annotations

import numpy as np
from pymoo.core.crossover import Crossover
from pymoo.core.duplicate import DuplicateElimination
from pymoo.core.mutation import Mutation
from pymoo.core.sampling import Sampling

from hwnas.search.problem import ArchEvaluator, ArchKey, vector_key
from hwnas.space.base import SearchSpace

# tries per requested sample before accepting fewer distinct ones (a small space may run out)
_MAX_TRIES_PER_SAMPLE = 50


def default_mutation_prob(space: SearchSpace) -> float:
    """Per-gene mutation probability: 1/n_var, one gene on average (Deb's setting for NSGA-II).

    OFA's 0.1 resamples 4.6 of mbv3's 46 genes per child: offspring land too far from their
    parents for a front to converge in 100 generations."""
    return 1.0 / len(space.bounds[0])


class SpaceSampling(Sampling):
    """Distinct random architectures from `space.sample`, skipping already evaluated ones."""

    def __init__(self, space: SearchSpace, evaluator: ArchEvaluator | None = None):
        super().__init__()
        self.space = space
        self.evaluator = evaluator

    def _do(self, problem, n_samples, *args, random_state=None, **kwargs):
        rows, seen = [], set()
        for _ in range(n_samples * _MAX_TRIES_PER_SAMPLE):
            if len(rows) == n_samples:
                break
            x = self.space.encode(self.space.sample(random_state))
            key = vector_key(x)
            if key in seen or (self.evaluator is not None and self.evaluator.knows_key(key)):
                continue
            seen.add(key)
            rows.append(x)
        return np.array(rows, dtype=np.int64).reshape(len(rows), problem.n_var)


class SpaceCrossover(Crossover):
    """Two parents -> one child by `space.crossover`."""

    def __init__(self, space: SearchSpace, prob: float = 0.9):
        super().__init__(n_parents=2, n_offsprings=1, prob=prob)
        self.space = space

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        _, n_matings, n_var = X.shape
        Q = np.empty((1, n_matings, n_var), dtype=np.int64)
        for k in range(n_matings):
            a, b = self.space.decode(X[0, k]), self.space.decode(X[1, k])
            Q[0, k] = self.space.encode(self.space.crossover(a, b, random_state))
        return Q


class SpaceMutation(Mutation):
    """`space.mutate` with a per-gene probability."""

    def __init__(self, space: SearchSpace, gene_prob: float | None = None):
        super().__init__(prob=1.0)
        self.space = space
        self.gene_prob = default_mutation_prob(space) if gene_prob is None else gene_prob

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        Xp = np.empty_like(np.asarray(X, dtype=np.int64))
        for i, x in enumerate(X):
            Xp[i] = self.space.encode(self.space.mutate(self.space.decode(x), random_state, self.gene_prob))
        return Xp


class EncodingDuplicateElimination(DuplicateElimination):
    """Drops offspring equal to another offspring, to the population, or (optionally) to any
    architecture already evaluated, so every offspring costs one new query."""

    def __init__(self, evaluator: ArchEvaluator | None = None):
        super().__init__()
        self.evaluator = evaluator

    def _do(self, pop, other, is_duplicate):
        seen: set[ArchKey] = set()
        if other is not None:
            seen.update(vector_key(x) for x in other.get("X"))
        for i, x in enumerate(pop.get("X")):
            key = vector_key(x)
            if key in seen or (other is None and self.evaluator is not None and self.evaluator.knows_key(key)):
                is_duplicate[i] = True
            else:
                seen.add(key)
        return is_duplicate
