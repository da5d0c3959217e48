"""Bayesian optimisation with a Gaussian process (Optuna's `GPSampler`), multi-objective.

Optuna models each objective with a GP over the encoding (categorical genes: a kernel on
their equality) and picks the next architecture by log expected hypervolume improvement
(one objective: log expected improvement), constraints by the probability of
feasibility. We use Optuna rather than BoTorch because it is pure Python on top of the
torch already installed, handles categorical genes and constraints natively, and the
same dependency gives `tpe`. It is an optional extra: `pip install 'hwnas[bo]'`.

A GP refit and acquisition optimisation per architecture costs seconds here, so this
suits expensive evaluations (trained networks, measured latency), not thousands of cheap ones.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from hwnas.search.optuna_study import constraint_options, import_optuna, run_study
from hwnas.search.problem import ArchProblem
from hwnas.search.strategies.base import SearchBudget, Strategy, register_strategy

DEFAULT_BATCH = 10
DEFAULT_STARTUP = 20


@register_strategy("bo")
class BayesianOptimisation(Strategy):
    """Options: `pop_size`, architectures per reported generation (10); `startup`, random
    architectures before the GP takes over (20)."""

    multi_objective = True

    def settings(self) -> dict:
        return {"pop_size": self.pop_size or DEFAULT_BATCH,
                "startup": int(self.options.get("startup", DEFAULT_STARTUP)), **self.options}

    def run(self, problem: ArchProblem, budget: SearchBudget, seed: int,
            on_generation: Callable[[], None]) -> None:
        optuna = import_optuna(self.name)
        with warnings.catch_warnings():  # deterministic_objective is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.GPSampler(
                seed=seed, n_startup_trials=int(self.options.get("startup", DEFAULT_STARTUP)),
                deterministic_objective=True, **constraint_options(problem, optuna))
        run_study(problem, budget, on_generation, sampler, self.pop_size or DEFAULT_BATCH)
