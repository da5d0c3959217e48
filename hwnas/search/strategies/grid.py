"""Grid search: every architecture of a small space, or of a coarse grid of its choices.

The grid is the product of each gene's allowed encoded values (all of them, or the ones
given in `choices`). A grid larger than `max_size` is refused with its size. When the
evaluation budget is smaller than the grid, the points are visited in a seeded random
order (so a truncated grid is an unbiased sample of it); otherwise in encoding order.
Spaces whose encoding has inactive genes (mbv3's unused block slots) map several grid
points to one architecture: each is evaluated once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from hwnas.errors import InputError
from hwnas.search.problem import ArchProblem, vector_key
from hwnas.search.strategies.base import SearchBudget, Strategy, register_strategy

DEFAULT_BATCH = 100
DEFAULT_MAX_SIZE = 1_000_000


def grid_values(bounds: tuple[np.ndarray, np.ndarray],
                choices: Mapping[int, Sequence[int]] | Sequence[Sequence[int]] | None) -> list[np.ndarray]:
    """Each gene's grid values: all of [lo, hi], or those `choices` gives (by gene position)."""
    lo, hi = (np.asarray(b, dtype=np.int64) for b in bounds)
    values = [np.arange(a, b + 1) for a, b in zip(lo, hi, strict=True)]
    if choices is None:
        return values
    items = choices.items() if isinstance(choices, Mapping) else enumerate(choices)
    for gene, allowed in items:
        if not isinstance(gene, (int, np.integer)) or not 0 <= int(gene) < len(lo):
            raise InputError(f"gene {gene!r} is not a position of the encoding (0..{len(lo) - 1})",
                             field="choices")
        picked = sorted({int(v) for v in allowed})
        if not picked or picked[0] < lo[gene] or picked[-1] > hi[gene]:
            raise InputError(f"gene {gene} takes values in [{lo[gene]}, {hi[gene]}], got {list(allowed)!r}",
                             field="choices")
        values[int(gene)] = np.array(picked, dtype=np.int64)
    return values


@register_strategy("grid")
class GridSearch(Strategy):
    """Options: `pop_size`, the batch evaluated per generation (100); `choices`, the allowed
    encoded values per gene (a list per gene, or {gene position: values}; default: all);
    `max_size` of the grid (1,000,000: a larger one is refused)."""

    multi_objective = True

    def settings(self) -> dict:
        return {"pop_size": self.pop_size or DEFAULT_BATCH, "max_size": self.max_size(), **self.options}

    def max_size(self) -> int:
        return int(self.options.get("max_size", DEFAULT_MAX_SIZE))

    def grid(self, problem: ArchProblem) -> list[np.ndarray]:
        """The grid's values per gene; InputError with the grid's size if it is too large."""
        values = grid_values(problem.space.bounds, self.options.get("choices"))
        size = int(np.prod([len(v) for v in values], dtype=object))
        if size > self.max_size():
            raise InputError(f"the grid of space '{problem.space.name}' has {size:,} points, more than "
                             f"max_size {self.max_size():,}; give a coarser grid (choices) or another strategy",
                             field="algo")
        return values

    def run(self, problem: ArchProblem, budget: SearchBudget, seed: int,
            on_generation: Callable[[], None]) -> None:
        values = self.grid(problem)
        evaluator = problem.evaluator
        sizes = np.array([len(v) for v in values], dtype=np.int64)
        size = int(np.prod(sizes))
        order = (np.random.default_rng(seed).permutation(size) if evaluator.remaining < size
                 else np.arange(size))
        batch_size = self.pop_size or DEFAULT_BATCH
        generation, position = 0, 0
        while budget.generations_left(generation) and evaluator.remaining > 0 and position < size:
            batch, keys = [], set()
            while len(batch) < min(batch_size, evaluator.remaining) and position < size:
                x = _point(values, sizes, int(order[position]))
                position += 1
                key = vector_key(problem.space.encode(problem.space.decode(x)))
                if key not in keys and not evaluator.knows_key(key):
                    keys.add(key)
                    batch.append(problem.space.decode(x))
            if batch:
                problem.evaluate_archs(batch)
            on_generation()
            generation += 1


def _point(values: list[np.ndarray], sizes: np.ndarray, index: int) -> np.ndarray:
    """The `index`-th grid point in mixed radix (last gene fastest)."""
    digits = np.empty(len(sizes), dtype=np.int64)
    for g in range(len(sizes) - 1, -1, -1):
        index, digits[g] = divmod(index, int(sizes[g]))
    return np.array([values[g][d] for g, d in enumerate(digits)], dtype=np.int64)
