"""The strategy protocol and the registry of strategies by name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hwnas.registry import STRATEGIES
from hwnas.search.problem import ArchProblem
from hwnas.space.base import Arch


@dataclass
class SearchBudget:
    """When to stop: after `evaluations` distinct architectures or `generations`, whichever first."""

    evaluations: int | None = None
    generations: int | None = None

    def generations_left(self, done: int) -> bool:
        return self.generations is None or done < self.generations


class Strategy(ABC):
    """A search strategy: drives `problem.evaluate_archs` until the budget is spent.

    Strategies only propose architectures; the evaluator keeps (and counts) everything that
    was evaluated, and the result is read from it, so all strategies are scored alike.
    Constructors only store options.
    """

    name: str = ""
    # does the strategy optimise all objectives at once, or the first one under constraints?
    multi_objective: bool = False

    def __init__(self, pop_size: int | None = None, **options: Any):
        self.pop_size = pop_size
        self.options = options

    @abstractmethod
    def run(self, problem: ArchProblem, budget: SearchBudget, seed: int,
            on_generation: Callable[[], None]) -> None:
        """Search; call `on_generation()` after each generation's evaluations."""

    def settings(self) -> dict[str, Any]:
        return {"pop_size": self.pop_size, **self.options}

    def strategy_ran(self, budget: SearchBudget) -> str:
        """The registered name of what runs under `budget` (a strategy may hand over to another)."""
        return self.name

    def population_size(self, budget: SearchBudget, default: int) -> int:
        """`pop_size` if given; else `default`, shrunk under a small evaluation budget so the
        search still runs about 20 generations (never below 10)."""
        if self.pop_size:
            return int(self.pop_size)
        if budget.evaluations is not None:
            return int(min(default, max(10, round(budget.evaluations / 20))))
        return default


def fitness(problem: ArchProblem, archs: Sequence[Arch]) -> np.ndarray:
    """Single-objective sort keys, (n, 2) rows of (total constraint violation, first
    objective): feasible archs first, then by objective; compare with `best_first`."""
    F, G = problem.evaluate_archs(archs)
    violation = np.clip(G, 0, None).sum(axis=1) if G.size else np.zeros(len(archs))
    return np.stack([violation, F[:, 0]], axis=1)


def best_first(keys: np.ndarray) -> np.ndarray:
    """Indices that sort fitness keys from best to worst (stable)."""
    keys = np.asarray(keys).reshape(-1, 2)
    return np.lexsort((keys[:, 1], keys[:, 0]))


# the strategy `hwnas search`, `hwnas bench` and `search(...)` use unless told otherwise
DEFAULT_STRATEGY = "pareto-local-search"


def register_strategy(name: str):
    """Decorator: register a Strategy class under `name` (it gets `cls.name = name`)."""
    return STRATEGIES.register(name)


def strategy_names() -> list[str]:
    return STRATEGIES.names()


def get_strategy(name: str, **options: Any) -> Strategy:
    """Build a registered strategy (built-in or from a plugin), checked against `StrategyLike`;
    an unknown name is an InputError listing the known ones."""
    return STRATEGIES.create(name, **options)
