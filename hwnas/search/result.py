"""What a search returns: the Pareto set, everything evaluated, and the hypervolume history."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hwnas.errors import InputError


@dataclass
class SearchResult:
    """The outcome of `search(...)`.

    `pareto` and `evaluated` hold entries `{"arch", "objectives": {name: value},
    "constraints": {name: value}, "feasible": bool}` in natural units (accuracy in %, not
    negated). `hypervolume_history[g]` is the hypervolume of every feasible architecture
    evaluated up to generation g, with objectives normalised by `hv_normalization`.
    """

    pareto: list[dict]
    evaluated: list[dict]
    hypervolume_history: list[float]
    evaluations: int
    seconds: float
    seed: int
    settings: dict[str, Any]
    hv_normalization: dict[str, list[float]] = field(default_factory=dict)
    metric_seconds: float = 0.0  # of `seconds`, the time spent inside the objective callables

    @property
    def hypervolume(self) -> float:
        return self.hypervolume_history[-1] if self.hypervolume_history else 0.0

    @property
    def objectives(self) -> list[str]:
        return list(self.settings["objectives"])

    def to_json(self, *, include_evaluated: bool = False) -> dict[str, Any]:
        out = asdict(self)
        out["hypervolume"] = self.hypervolume
        if not include_evaluated:
            out.pop("evaluated")
        return out


def _value(entry: dict, name: str) -> float:
    for part in ("objectives", "constraints"):
        if name in entry.get(part, {}):
            return float(entry[part][name])
    raise KeyError(name)


def best_under_budget(result: SearchResult, budget: float, *, metric: str = "latency_ms",
                      objective: str | None = None) -> dict | None:
    """The evaluated architecture with the best primary objective among the feasible ones
    whose `metric` is within `budget`; None if there is none.

    The primary objective is the first maximised objective, else the first objective.
    """
    maximize = set(result.settings.get("maximize", []))
    if objective is None:
        objective = next((o for o in result.objectives if o in maximize), result.objectives[0])
    candidates = []
    for entry in result.evaluated:
        try:
            cost = _value(entry, metric)
        except KeyError as exc:
            raise InputError(f"'{metric}' is neither an objective nor a constraint of this search",
                             field="metric") from exc
        if entry["feasible"] and cost <= budget:
            candidates.append(entry)
    if not candidates:
        return None
    sign = -1.0 if objective in maximize else 1.0
    scores = np.array([sign * _value(e, objective) for e in candidates])
    return candidates[int(np.argmin(scores))]
