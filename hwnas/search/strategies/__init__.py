"""Search strategies, looked up by name: `get_strategy("nsga2")`."""

from hwnas.search.strategies.base import (
    DEFAULT_STRATEGY,
    SearchBudget,
    Strategy,
    get_strategy,
    register_strategy,
    strategy_names,
)

__all__ = ["DEFAULT_STRATEGY", "SearchBudget", "Strategy", "get_strategy", "register_strategy", "strategy_names"]
