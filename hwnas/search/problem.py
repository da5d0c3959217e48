"""The search problem: a space's integer encoding, named objectives and constraints.

Objectives and constraints are plain callables `f(archs: list[dict]) -> array`, looked up by
name in a `metrics` dict, so a problem knows nothing about where the numbers come from
(a latency table, a supernet, a tabular benchmark). Every value is minimised internally;
maximised objectives (accuracy) are negated.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from pymoo.core.problem import Problem

from hwnas.errors import InputError
from hwnas.space.base import Arch, SearchSpace

Metric = Callable[[list[Arch]], "np.ndarray | Sequence[float]"]

# objectives maximised unless stated otherwise
DEFAULT_MAXIMIZE: tuple[str, ...] = ("accuracy",)


class BudgetExhausted(RuntimeError):
    """A strategy asked for more distinct evaluations than its budget allows."""


class TimeUp(RuntimeError):
    """The wall-clock budget ran out: `search` ends with what was evaluated."""


# with a deadline, new architectures are evaluated this many at a time, the clock read between
_DEADLINE_CHUNK = 4


ArchKey = bytes


def vector_key(x: np.ndarray) -> ArchKey:
    """A hashable identity of an encoding vector (its int64 bytes: fast to hash)."""
    return np.ascontiguousarray(x, dtype=np.int64).tobytes()


def key_vector(key: ArchKey) -> np.ndarray:
    return np.frombuffer(key, dtype=np.int64).copy()


def arch_key(space: SearchSpace, arch: Arch) -> ArchKey:
    """A hashable identity of an architecture: its integer encoding."""
    return vector_key(space.encode(arch))


@dataclass
class EvaluatedArch:
    """One distinct architecture and every metric measured on it."""

    arch: Arch
    values: dict[str, float]


@dataclass
class ArchEvaluator:
    """Evaluates metrics on batches of architectures, once per distinct architecture.

    `n_evaluations` counts distinct architectures (a re-query is free); `max_evaluations`
    caps it and a strategy must stay under it (`remaining`).
    """

    space: SearchSpace
    metrics: Mapping[str, Metric]
    max_evaluations: int | None = None
    records: list[EvaluatedArch] = field(default_factory=list)
    metric_seconds: float = 0.0  # time spent inside the metric callables
    deadline: float | None = None  # time.perf_counter() after which no new architecture is evaluated
    _index: dict[ArchKey, int] = field(default_factory=dict)

    @property
    def n_evaluations(self) -> int:
        return len(self.records)

    @property
    def remaining(self) -> int | float:
        return float("inf") if self.max_evaluations is None else self.max_evaluations - len(self.records)

    def is_known(self, arch: Arch) -> bool:
        return arch_key(self.space, arch) in self._index

    def knows_key(self, key: ArchKey) -> bool:
        return key in self._index

    def count_new(self, archs: Iterable[Arch]) -> int:
        """How many distinct architectures of `archs` have not been evaluated yet."""
        return len({arch_key(self.space, a) for a in archs} - self._index.keys())

    def evaluate(self, archs: Sequence[Arch]) -> dict[str, np.ndarray]:
        """Every metric for every arch (cached); new archs are measured in one batch per metric."""
        return self._evaluate_keys([arch_key(self.space, a) for a in archs])

    def evaluate_encoded(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """`evaluate` for rows of encodings (decodes only the architectures not seen yet)."""
        return self._evaluate_keys([vector_key(x) for x in np.atleast_2d(X)])

    def _evaluate_keys(self, keys: list[ArchKey]) -> dict[str, np.ndarray]:
        new: dict[ArchKey, Arch] = {}
        for key in keys:
            if key not in self._index and key not in new:
                new[key] = self.space.decode(key_vector(key))
        if len(new) > self.remaining:
            raise BudgetExhausted(f"{len(new)} new architectures but only {self.remaining} evaluations left")
        items = list(new.items())
        step = len(items) if self.deadline is None else _DEADLINE_CHUNK
        for start in range(0, len(items), max(step, 1)):
            if self.deadline is not None and time.perf_counter() >= self.deadline:
                raise TimeUp(f"the wall-clock budget ran out after {len(self.records)} evaluations")
            chunk = items[start:start + step]
            batch = [arch for _, arch in chunk]
            t0 = time.perf_counter()
            columns = {name: self._call(name, fn, batch) for name, fn in self.metrics.items()}
            self.metric_seconds += time.perf_counter() - t0
            for i, (key, arch) in enumerate(chunk):
                self._index[key] = len(self.records)
                self.records.append(EvaluatedArch(arch, {n: float(col[i]) for n, col in columns.items()}))
        rows = [self.records[self._index[k]].values for k in keys]
        return {name: np.array([r[name] for r in rows], dtype=float) for name in self.metrics}

    @staticmethod
    def _call(name: str, fn: Metric, batch: list[Arch]) -> np.ndarray:
        values = np.asarray(fn(batch), dtype=float).reshape(-1)
        if values.shape[0] != len(batch):
            raise ValueError(f"metric '{name}' returned {values.shape[0]} values for {len(batch)} archs")
        return values


@dataclass(frozen=True)
class ObjectiveSpec:
    """Which metrics are objectives (and in which direction) and which are bounded."""

    objectives: tuple[str, ...]
    maximize: frozenset[str]
    constraints: tuple[tuple[str, float], ...]  # (metric, upper limit): metric <= limit

    @classmethod
    def build(cls, metrics: Mapping[str, Metric], objectives: Sequence[str],
              constraints: Mapping[str, float] | None = None,
              maximize: Iterable[str] = DEFAULT_MAXIMIZE) -> ObjectiveSpec:
        """Check every name against `metrics`; an unknown one is an InputError listing the known."""
        known = ", ".join(metrics) or "(none)"
        if not objectives:
            raise InputError("at least one objective is needed", field="objectives")
        for name in objectives:
            if name not in metrics:
                raise InputError(f"unknown objective '{name}'; available: {known}", field="objectives")
        if len(set(objectives)) != len(objectives):
            raise InputError(f"objectives repeat a name: {list(objectives)}", field="objectives")
        if constraints is not None and not isinstance(constraints, Mapping):
            raise InputError(f"expected a mapping name -> upper limit, got {constraints!r}", field="constraints")
        limits: list[tuple[str, float]] = []
        for name, limit in (constraints or {}).items():
            if name not in metrics:
                raise InputError(f"unknown constraint '{name}'; available: {known}", field="constraints")
            if not np.isfinite(float(limit)):
                raise InputError(f"limit of '{name}' must be a finite number, got {limit!r}", field="constraints")
            limits.append((name, float(limit)))
        return cls(tuple(objectives), frozenset(maximize), tuple(limits))

    def sign(self, name: str) -> float:
        return -1.0 if name in self.maximize else 1.0

    def minimised(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """(n, n_obj) objective matrix, every column to be minimised."""
        return np.stack([self.sign(n) * np.asarray(values[n], float) for n in self.objectives], axis=1)

    def violations(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """(n, n_constr) matrix of `value - limit` (<= 0 means satisfied)."""
        n = len(next(iter(values.values()))) if values else 0
        if not self.constraints:
            return np.zeros((n, 0))
        return np.stack([np.asarray(values[name], float) - limit for name, limit in self.constraints], axis=1)


class ArchProblem(Problem):
    """A vectorised pymoo problem over a space's integer encoding."""

    def __init__(self, space: SearchSpace, evaluator: ArchEvaluator, spec: ObjectiveSpec):
        xl, xu = space.bounds
        super().__init__(n_var=len(xl), n_obj=len(spec.objectives), n_ieq_constr=len(spec.constraints),
                         xl=np.asarray(xl), xu=np.asarray(xu), vtype=int)
        self.space = space
        self.evaluator = evaluator
        self.spec = spec

    def decode_all(self, X: np.ndarray) -> list[Arch]:
        return [self.space.decode(np.asarray(x).astype(np.int64)) for x in np.atleast_2d(X)]

    def evaluate_archs(self, archs: Sequence[Arch]) -> tuple[np.ndarray, np.ndarray]:
        """(F, G) for `archs`: minimised objectives and constraint violations."""
        values = self.evaluator.evaluate(archs)
        return self.spec.minimised(values), self.spec.violations(values)

    def _evaluate(self, X, out, *args, **kwargs):
        values = self.evaluator.evaluate_encoded(np.asarray(X).astype(np.int64))
        F, G = self.spec.minimised(values), self.spec.violations(values)
        out["F"] = F
        if self.n_ieq_constr:
            out["G"] = G
