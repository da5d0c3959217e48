"""`differentiable`: one-shot gradient search on the supernet (hwnas.search.differentiable), one run per
budget of a sweep; the architectures found are evaluated like any strategy's, so pareto.json holds the
same fields and `hwnas export` takes them unchanged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hwnas.errors import InputError
from hwnas.search.problem import ArchProblem
from hwnas.search.strategies.base import SearchBudget, Strategy, register_strategy


@register_strategy("differentiable")
class DifferentiableStrategy(Strategy):
    """Options: `supernet` (checkpoint path or a loaded (supernet, meta) pair), `predictor` (a
    LatencyPredictor: the latency penalty), `budget_ms`, `sweep` (budgets of the front, default 4),
    and the fields of `DifferentiableSettings` (`relaxation` gdas / darts / proxyless, `steps`, ...)."""

    multi_objective = True

    def run(self, problem: ArchProblem, budget: SearchBudget, seed: int,
            on_generation: Callable[[], None]) -> None:
        from hwnas.search.differentiable import DifferentiableSettings, differentiable_search, sweep_budgets

        options = dict(self.options)
        missing = [k for k in ("supernet", "predictor", "budget_ms") if options.get(k) is None]
        if missing:
            raise InputError(f"differentiable search runs on a weight-sharing supernet with a latency table and "
                             f"a budget; missing {', '.join(missing)} (tabular benchmarks have no supernet)",
                             field="algo")
        supernet, meta = self._supernet(options.pop("supernet"))
        predictor, budget_ms = options.pop("predictor"), float(options.pop("budget_ms"))
        sweep = int(options.pop("sweep", 4))
        known = set(DifferentiableSettings.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(f"unknown option(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}",
                             field="strategy_options")
        self.runs: list[dict[str, Any]] = []
        state = {k: v.detach().clone() for k, v in supernet.state_dict().items()}
        for i, b in enumerate(sweep_budgets(budget_ms, sweep)):
            if budget.evaluations is not None and problem.evaluator.remaining <= 0:
                break
            supernet.load_state_dict(state)  # every budget starts from the checkpoint's weights
            run = differentiable_search(supernet, meta, predictor, b,
                                        DifferentiableSettings(**{**options, "seed": seed + i}))
            self.runs.append(run.to_dict())
            supernet.load_state_dict(state)
            problem.evaluate_archs([run.arch])
            on_generation()

    @staticmethod
    def _supernet(source: Any) -> tuple[Any, dict]:
        if isinstance(source, tuple):
            return source
        from hwnas.train import load_checkpoint

        return load_checkpoint(source)

    def settings(self) -> dict[str, Any]:
        shown = {k: v for k, v in self.options.items() if k not in ("supernet", "predictor")}
        return {"pop_size": self.pop_size, **shown, "runs": getattr(self, "runs", [])}
