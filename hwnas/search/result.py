"""What a search returns: the Pareto set, everything evaluated, and the hypervolume history."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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


def stderr_of(entry: dict, name: str) -> float | None:
    """The standard error recorded for `name` in an evaluated entry (None when none was recorded)."""
    value = (entry.get("stderr") or {}).get(name)
    return None if value is None else float(value)


def attach_stderr(result: SearchResult, name: str, stderr: Callable[[list[dict]], Sequence[float]]) -> None:
    """Record in every evaluated entry the standard error of its objective `name`
    (`entry["stderr"][name]`), as `stderr(archs)` gives it; the front holds the same entries."""
    if not result.evaluated:
        return
    values = np.asarray(stderr([e["arch"] for e in result.evaluated]), dtype=float)
    for entry, value in zip(result.evaluated, values, strict=True):
        entry.setdefault("stderr", {})[name] = round(float(value), 4) if np.isfinite(value) else None


def accuracy_size_agreement(result: SearchResult, macs: Callable[[dict], float],
                            objective: str = "accuracy") -> dict[str, Any] | None:
    """Kendall tau between the evaluated subnets' `objective` estimates and their MACs: whether the
    estimates rise with the subnets' size, as trained subnets' accuracies do where size matters. Near zero,
    the estimates order the subnets by noise, or the subnets differ too little in accuracy for size to show
    (scoring them on other images tells which). None without the objective or with fewer than 3 subnets."""
    from hwnas.stats import kendall_tau

    entries = [e for e in result.evaluated if objective in e.get("objectives", {})]
    if len(entries) < 3:
        return None
    values = [float(e["objectives"][objective]) for e in entries]
    sizes = [float(macs(e["arch"])) for e in entries]
    return {"kendall_tau": round(kendall_tau(values, sizes), 4), "subnets": len(entries),
            "of": f"{objective} estimate vs MACs of every evaluated subnet"}


# the picked subnet's lead must exceed this many standard errors of the difference between two estimates
TIE_STANDARD_ERRORS = 1.0


def best_under_budget(result: SearchResult, budget: float, *, metric: str = "latency_ms",
                      objective: str | None = None, tie_standard_errors: float = TIE_STANDARD_ERRORS) -> dict | None:
    """The evaluated architecture with the best primary objective among the feasible ones
    whose `metric` is within `budget`; None if there is none.

    The primary objective is the first maximised objective, else the first objective. Where the
    entries carry standard errors of it (`attach_stderr`), a lead smaller than `tie_standard_errors`
    standard errors of the difference (sqrt(se_a^2 + se_b^2)) is no lead: every candidate that close to
    the best estimate is tied with it, and the one with the lowest `metric` among them is returned.
    The returned entry (a copy) then says so under "selection": the rule, the tied candidates and the
    highest estimate.
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
    top = candidates[int(np.argmin(scores))]
    top_se = stderr_of(top, objective)
    if top_se is None:
        return top
    tied = []
    for entry, score in zip(candidates, scores, strict=True):
        se = stderr_of(entry, objective)
        lead = score - sign * _value(top, objective)  # >= 0: how far `entry` trails the best estimate
        if entry is top or (se is not None and lead <= tie_standard_errors * math.hypot(top_se, se)):
            tied.append(entry)
    chosen = min(tied, key=lambda e: (_value(e, metric), sign * _value(e, objective)))
    rule = (f"highest {objective} estimate under the budget; estimates within {tie_standard_errors:g} standard "
            f"error of the difference of it are ties, and the tie with the lowest {metric} is picked")
    selection: dict[str, Any] = {"rule": rule, "tied": len(tied)}
    if len(tied) > 1:
        selection["note"] = (f"{len(tied)} subnets under the budget have {objective} estimates within the "
                             f"uncertainty of the highest ({_value(top, objective):.4g} ± {top_se:.2g}); the "
                             f"estimates cannot tell them apart, so the one with the lowest {metric} is picked")
        selection["highest_estimate"] = {"arch": top["arch"], objective: _value(top, objective),
                                         "stderr": top_se, metric: _value(top, metric)}
        selection["tied_with"] = [{objective: _value(e, objective), "stderr": stderr_of(e, objective),
                                   metric: _value(e, metric)} for e in sorted(tied, key=lambda e: _value(e, metric))]
    return {**chosen, "selection": selection}
