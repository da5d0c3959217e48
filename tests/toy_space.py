"""A space-agnostic test bed shared by the search tests: n integer genes in [0, k)."""

from __future__ import annotations

import numpy as np

from hwnas.space.base import SearchSpace


class VectorSpace(SearchSpace):
    """n integer genes in [0, k): a space-agnostic test bed."""

    name = "vector"

    def __init__(self, n: int = 6, k: int = 5):  # no `neighbours`: local moves come from `mutate`
        self.n, self.k = n, k

    def sample(self, rng):
        return {"x": rng.integers(0, self.k, size=self.n).tolist()}

    def mutate(self, arch, rng, prob=0.1):
        x = np.array(arch["x"])
        hit = rng.random(self.n) < prob
        x[hit] = (x[hit] + rng.integers(1, self.k, size=hit.sum())) % self.k
        return {"x": x.tolist()}

    def crossover(self, a, b, rng):
        return {"x": np.where(rng.random(self.n) < 0.5, a["x"], b["x"]).tolist()}

    def encode(self, arch):
        return np.array(arch["x"], dtype=np.int64)

    def decode(self, x):
        return {"x": [int(v) for v in x]}

    @property
    def bounds(self):
        return np.zeros(self.n, dtype=np.int64), np.full(self.n, self.k - 1, dtype=np.int64)
