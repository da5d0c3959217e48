"""Multi-objective architecture search, laid out like pymoo.

- problem: `ArchProblem` (a space's encoding, named objectives/constraints) and the
  counting, caching `ArchEvaluator`
- operators: space-aware sampling, crossover, mutation, duplicate elimination
- strategies: `nsga2`, `random`, `evolution`, `regularized-evolution`, `pareto-local-search`, `grid`,
  `bo`, `tpe` (these two need the `bo` extra: Optuna), `rl`, `morphism`, `zero-cost`, by name
- planning: wall-clock budgets (`max_seconds`), defaults sized from an evaluation's measured cost
- indicators: `pareto_front`, `hypervolume`
- optimize: `search(space, metrics, objectives, constraints, strategy, ...)`, the one verb
- tabular: scoring a strategy on a tabular benchmark (NAS-Bench-201) against its true front
"""

from hwnas.search.indicators import hypervolume, normalize, pareto_front
from hwnas.search.optimize import search
from hwnas.search.plot import plot_hypervolume, plot_pareto
from hwnas.search.problem import ArchEvaluator, ArchProblem, ObjectiveSpec
from hwnas.search.result import SearchResult, best_under_budget
from hwnas.search.strategies import SearchBudget, Strategy, get_strategy, register_strategy, strategy_names

__all__ = [
    "ArchEvaluator", "ArchProblem", "ObjectiveSpec", "SearchBudget", "SearchResult", "Strategy",
    "best_under_budget", "get_strategy", "hypervolume", "normalize", "pareto_front", "plot_hypervolume",
    "plot_pareto", "register_strategy", "search", "strategy_names",
]


from hwnas.verb_module import make_verb  # noqa: E402

make_verb(__name__, "hwnas.pipeline:search")  # hwnas.search(...) is the library verb
