"""Tree-structured Parzen estimators (Optuna's `TPESampler`), multi-objective (MOTPE).

The evaluated architectures are split into a good and a bad group (with several
objectives, by non-dominated rank and hypervolume contribution, as in MOTPE, Ozaki et
al. 2020); a Parzen estimator of each group's genes (multivariate: the genes jointly)
scores candidates by l(x)/g(x), and the best of `candidates` draws from l is evaluated.
Infeasible architectures rank below feasible ones. Optional extra: `pip install 'hwnas[bo]'`.
"""

from __future__ import annotations

from collections.abc import Callable

from hwnas.search.optuna_study import constraint_options, import_optuna, run_study
from hwnas.search.problem import ArchProblem
from hwnas.search.strategies.base import SearchBudget, Strategy, register_strategy

DEFAULT_BATCH = 50
DEFAULT_STARTUP = 20
DEFAULT_CANDIDATES = 24


@register_strategy("tpe")
class TreeParzenEstimators(Strategy):
    """Options: `pop_size`, architectures per reported generation (50); `startup`, random
    architectures first (20); `candidates` drawn per pick (24)."""

    multi_objective = True

    def settings(self) -> dict:
        return {"pop_size": self.pop_size or DEFAULT_BATCH,
                "startup": int(self.options.get("startup", DEFAULT_STARTUP)),
                "candidates": int(self.options.get("candidates", DEFAULT_CANDIDATES)), **self.options}

    def run(self, problem: ArchProblem, budget: SearchBudget, seed: int,
            on_generation: Callable[[], None]) -> None:
        optuna = import_optuna(self.name)
        sampler = optuna.samplers.TPESampler(
            seed=seed, multivariate=True, n_startup_trials=int(self.options.get("startup", DEFAULT_STARTUP)),
            n_ei_candidates=int(self.options.get("candidates", DEFAULT_CANDIDATES)),
            **constraint_options(problem, optuna))
        run_study(problem, budget, on_generation, sampler, self.pop_size or DEFAULT_BATCH)
