"""Searches that end: a wall-clock budget, defaults sized from the measured cost of an
evaluation, and a progress line that tells the remaining time from the first generation."""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from hwnas.errors import InputError
from hwnas.space.base import SearchSpace

# the wall-clock budget of `hwnas search` unless given (--max-time)
DEFAULT_MAX_SECONDS = 600.0
# share of the wall-clock budget the planned evaluations should fill (the rest: the strategy's
# own work and the variation in an estimator's cost)
PLANNED_SHARE = 0.8
# random subnets timed to measure an evaluation's cost
PROBE_ARCHS = 3
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | float | int, field: str = "--max-time") -> float:
    """Seconds from "90", "90s", "10m", "1.5h" (or a number); InputError otherwise."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", str(text))
        if not match:
            raise InputError(f"expected a duration such as 90s, 10m or 1.5h, got {text!r}", field=field)
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not math.isfinite(seconds) or seconds <= 0:
        raise InputError(f"must be a positive duration, got {text!r}", field=field)
    return seconds


def seconds_per_evaluation(space: SearchSpace, metrics: Mapping[str, Callable], *, seed: int = 0,
                           n: int = PROBE_ARCHS) -> float:
    """Wall-clock seconds to evaluate every metric on one subnet, timed on `n` random subnets
    (one at a time, as a search that stops on time evaluates them)."""
    rng = np.random.default_rng(seed)
    archs = [space.sample(rng) for _ in range(n)]
    t0 = time.perf_counter()
    for arch in archs:
        for fn in metrics.values():
            fn([arch])
    return (time.perf_counter() - t0) / n


@dataclass
class SearchPlan:
    """How many evaluations fit the wall-clock budget at the measured cost."""

    max_seconds: float
    seconds_per_evaluation: float
    evaluations: int

    def describe(self) -> str:
        return (f"{self.seconds_per_evaluation:.3g} s per subnet (measured on {PROBE_ARCHS} random subnets): "
                f"{self.evaluations} subnets fit {format_seconds(self.max_seconds)}")


def plan_evaluations(max_seconds: float, cost: float, *, cap: int = 10_000) -> SearchPlan:
    """Evaluations that fill `PLANNED_SHARE` of `max_seconds` at `cost` seconds each (10 .. cap)."""
    fit = int(PLANNED_SHARE * max_seconds / max(cost, 1e-9))
    return SearchPlan(max_seconds, cost, int(min(cap, max(10, fit))))


def default_budget(space: SearchSpace, metrics: Mapping[str, Callable], max_seconds: float, *,
                   pop_size: int | None, generations: int | None, evaluations: int | None,
                   seed: int = 0) -> tuple[int | None, int | None, SearchPlan | None]:
    """(evaluations, generations, plan) for a search given at most these limits: with none of
    pop_size, generations, evaluations given, an evaluation budget sized from the measured cost
    of an evaluation to fit `max_seconds` (plan says how it was sized); otherwise as given
    (generations 100 if neither generations nor evaluations is)."""
    if pop_size is None and generations is None and evaluations is None:
        plan = plan_evaluations(max_seconds, seconds_per_evaluation(space, metrics, seed=seed))
        return plan.evaluations, None, plan
    if generations is None and evaluations is None:
        generations = 100
    return evaluations, generations, None


def format_seconds(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


class SearchProgress:
    """A progress line in evaluations: done / planned, evaluations per second and the time
    left, from the rate measured so far (so from the first generation on), capped by the
    wall-clock budget's deadline."""

    def __init__(self, name: str, planned: int | None, deadline: float | None, start: float,
                 enabled: bool = True):
        self.planned, self.deadline, self.start = planned, deadline, start
        self.bar = tqdm(total=planned, desc=f"search {name}", unit="subnet", file=sys.stderr, disable=not enabled,
                        leave=False, bar_format="{desc}: {n}/{total} subnets [{elapsed}{postfix}]"
                        if planned else "{desc}: {n} subnets [{elapsed}{postfix}]")

    def estimate(self, done: int, now: float) -> tuple[float, float]:
        """(evaluations per second so far, seconds left: the planned rest at that rate, or the
        deadline if sooner; inf when neither is known)."""
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        left = math.inf
        if self.planned and rate > 0:
            left = max(0, self.planned - done) / rate
        if self.deadline is not None:
            left = min(left, max(0.0, self.deadline - now))
        return rate, left

    def update(self, done: int) -> None:
        rate, left = self.estimate(done, time.perf_counter())
        text = f"{rate:.3g} subnets/s"
        if math.isfinite(left):
            text += f", {format_seconds(left)} left"
        self.bar.set_postfix_str(text, refresh=False)  # shown by the update, with its count
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()
