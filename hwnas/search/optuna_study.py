"""Driving an Optuna sampler over a space's encoding (the `bo` and `tpe` strategies).

Optuna is an optional extra (`pip install 'hwnas[bo]'`); a strategy that needs it and
does not find it is an InputError naming the extra. Each gene is a categorical
parameter over its encoded values; a trial whose architecture was already evaluated
(another encoding of it, or a repeat) is told its known values at no cost to the budget.
Constraint violations go to the sampler's `constraints_func` (feasible when all <= 0).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from hwnas.errors import InputError
from hwnas.search.problem import ArchProblem, vector_key
from hwnas.search.strategies.base import SearchBudget

EXTRA = "bo"
# consecutive trials that propose only known architectures before the search is taken as converged
_MAX_REPEATS = 200


def import_optuna(strategy: str) -> Any:
    """The `optuna` module, or an InputError naming the extra that installs it."""
    try:
        import optuna
    except ImportError as exc:
        raise InputError(f"strategy '{strategy}' needs Optuna, which is not installed; "
                         f"install the extra: pip install 'hwnas[{EXTRA}]'", field="algo") from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def constraints_of(trial) -> list[float]:
    """Optuna < 5's `constraints_func`: the violations stored on the trial."""
    return list(trial.user_attrs.get("violations", []))


def constraint_options(problem: ArchProblem, optuna: Any) -> dict:
    """The sampler's constraint argument where this Optuna version still takes one (< 5)."""
    if not problem.n_ieq_constr or hasattr(optuna.trial.Trial, "set_constraint"):
        return {}
    return {"constraints_func": constraints_of}


def run_study(problem: ArchProblem, budget: SearchBudget, on_generation: Callable[[], None],
              sampler, batch_size: int) -> None:
    """Ask/tell `sampler` until the budget is spent; `on_generation()` after every `batch_size`
    new architectures. Every value is minimised (the problem's F)."""
    import optuna

    space, evaluator = problem.space, problem.evaluator
    lo, hi = (np.asarray(b, dtype=np.int64) for b in space.bounds)
    study = optuna.create_study(directions=["minimize"] * problem.n_obj, sampler=sampler)
    generation, in_batch, repeats = 0, 0, 0
    while budget.generations_left(generation) and evaluator.remaining > 0 and repeats < _MAX_REPEATS:
        trial = study.ask()
        x = np.array([trial.suggest_categorical(f"g{i}", list(range(int(a), int(b) + 1)))
                      for i, (a, b) in enumerate(zip(lo, hi, strict=True))], dtype=np.int64)
        arch = space.decode(x)
        new = not evaluator.knows_key(vector_key(space.encode(arch)))
        F, G = problem.evaluate_archs([arch])
        if problem.n_ieq_constr:
            if hasattr(trial, "set_constraint"):
                for (name, _), value in zip(problem.spec.constraints, G[0], strict=True):
                    trial.set_constraint(name, float(value))
            else:
                trial.set_user_attr("violations", G[0].tolist())
        study.tell(trial, F[0].tolist())
        if not new:
            repeats += 1
            continue
        repeats, in_batch = 0, in_batch + 1
        if in_batch == batch_size:
            on_generation()
            generation, in_batch = generation + 1, 0
    if in_batch:
        on_generation()
