"""`search(...)`: the one call that joins a space, objectives, constraints and a strategy."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from hwnas.errors import InputError
from hwnas.search.indicators import hypervolume, normalize, pareto_front
from hwnas.search.planning import SearchProgress
from hwnas.search.problem import DEFAULT_MAXIMIZE, ArchEvaluator, ArchProblem, Metric, ObjectiveSpec, TimeUp
from hwnas.search.result import SearchResult
from hwnas.search.strategies.base import DEFAULT_STRATEGY, SearchBudget, Strategy, get_strategy
from hwnas.space import SearchSpace, get_space

DEFAULT_GENERATIONS = 100
# normalised reference point coordinate (objectives scaled so the worst feasible value is 1)
HV_REFERENCE = 1.1
# generations in a row without a new evaluation after which a search has converged
_MAX_STALLED_GENERATIONS = 50


class _Stalled(Exception):
    pass


def search(
    space: SearchSpace | str,
    metrics: Mapping[str, Metric],
    objectives: Sequence[str] = ("accuracy", "latency_ms"),
    constraints: Mapping[str, float] | None = None,
    strategy: str | Strategy = DEFAULT_STRATEGY,
    *,
    evaluations: int | None = None,
    generations: int | None = None,
    pop_size: int | None = None,
    seed: int = 0,
    maximize: Iterable[str] = DEFAULT_MAXIMIZE,
    strategy_options: Mapping | None = None,
    evaluator: ArchEvaluator | None = None,
    progress: bool = True,
    max_seconds: float | None = None,
) -> SearchResult:
    """Search `space` for architectures that are Pareto-optimal in `objectives`.

    metrics: name -> `f(archs: list[dict]) -> array`, batched; objectives and constraints
        name entries of it (`maximize` lists those to maximise, e.g. accuracy).
    constraints: name -> upper limit (e.g. {"latency_ms": 20.0}).
    evaluations / generations: stop after that many distinct architectures / generations,
        whichever first (neither given: 100 generations).
    max_seconds: wall-clock budget; the search ends with what it has evaluated once it is spent
        (checked every few evaluations).
    evaluator: pass one to share its cache (and query count) between several searches;
        `evaluations` then counts only this search's new architectures.
    """
    if isinstance(space, str):
        space = get_space(space)
    for name, value in (("evaluations", evaluations), ("generations", generations), ("pop_size", pop_size)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise InputError(f"must be a positive integer, got {value!r}", field=name)
    if max_seconds is not None and (not np.isfinite(max_seconds) or max_seconds <= 0):
        raise InputError(f"must be a positive number of seconds, got {max_seconds!r}", field="max_seconds")
    if evaluations is None and generations is None:
        generations = DEFAULT_GENERATIONS
    spec = ObjectiveSpec.build(metrics, objectives, constraints, maximize)
    if isinstance(strategy, str):
        strategy = get_strategy(strategy, pop_size=pop_size, **dict(strategy_options or {}))

    if evaluator is None:
        evaluator = ArchEvaluator(space, metrics)
    start_count, start_metric_seconds = evaluator.n_evaluations, evaluator.metric_seconds
    evaluator.max_evaluations = None if evaluations is None else start_count + int(evaluations)
    problem = ArchProblem(space, evaluator, spec)
    budget = SearchBudget(evaluations, generations)
    ran = strategy.strategy_ran(budget)

    snapshots: list[int] = []
    stalled = 0
    t0 = time.perf_counter()
    evaluator.deadline = None if max_seconds is None else t0 + float(max_seconds)
    bar = SearchProgress(ran, _planned_evaluations(strategy, evaluations, generations), evaluator.deadline, t0,
                         enabled=progress)

    def on_generation() -> None:
        nonlocal stalled
        stalled = stalled + 1 if snapshots and snapshots[-1] == evaluator.n_evaluations else 0
        snapshots.append(evaluator.n_evaluations)
        bar.update(evaluator.n_evaluations - start_count)
        if stalled >= _MAX_STALLED_GENERATIONS:
            raise _Stalled
        if evaluator.deadline is not None and time.perf_counter() >= evaluator.deadline:
            raise TimeUp("the wall-clock budget ran out")

    timed_out = False
    try:
        strategy.run(problem, budget, seed, on_generation)
    except _Stalled:
        pass
    except TimeUp:
        timed_out = True
        if not snapshots or snapshots[-1] != evaluator.n_evaluations:
            snapshots.append(evaluator.n_evaluations)
    finally:
        bar.close()
        evaluator.deadline = None
    seconds = time.perf_counter() - t0

    return _build_result(problem, strategy, snapshots, seconds, seed,
                         settings={"space": space.name, "strategy": strategy.name, "strategy_ran": ran,
                                   "max_seconds": max_seconds, "stopped_on_time": timed_out,
                                   "objectives": list(spec.objectives),
                                   "maximize": sorted(spec.maximize & set(metrics)),
                                   "constraints": dict(spec.constraints),
                                   "evaluations": evaluations, "generations": generations,
                                   **{f"strategy_{k}": v for k, v in strategy.settings().items()}},
                         start_count=start_count, start_metric_seconds=start_metric_seconds)


def _planned_evaluations(strategy: Strategy, evaluations: int | None, generations: int | None) -> int | None:
    """What the progress line counts towards: the evaluation budget, else population x generations."""
    if evaluations is not None:
        return int(evaluations)
    pop_size = strategy.settings().get("pop_size")
    return int(pop_size) * int(generations) if pop_size and generations else None


def _build_result(problem: ArchProblem, strategy: Strategy, snapshots: list[int], seconds: float,
                  seed: int, settings: dict, start_count: int, start_metric_seconds: float) -> SearchResult:
    spec, records = problem.spec, problem.evaluator.records
    values = {name: np.array([r.values[name] for r in records], float) for name in problem.evaluator.metrics}
    F = spec.minimised(values) if records else np.zeros((0, len(spec.objectives)))
    G = spec.violations(values) if records else np.zeros((0, len(spec.constraints)))
    feasible = np.all(G <= 0, axis=1) if G.shape[1] else np.ones(len(records), dtype=bool)

    entries = [
        {"arch": r.arch,
         "objectives": {n: r.values[n] for n in spec.objectives},
         "constraints": {n: r.values[n] for n, _ in spec.constraints},
         "feasible": bool(ok)}
        for r, ok in zip(records, feasible, strict=True)
    ]
    feasible_idx = np.flatnonzero(feasible)
    front = feasible_idx[pareto_front(F[feasible_idx])] if len(feasible_idx) else feasible_idx
    front = front[np.argsort(F[front, 0], kind="stable")] if len(front) else front

    history: list[float] = []
    normalization: dict[str, list[float]] = {}
    if len(feasible_idx):
        ideal, nadir = F[feasible_idx].min(axis=0), F[feasible_idx].max(axis=0)
        normalization = {"ideal": ideal.tolist(), "nadir": nadir.tolist(),
                         "reference": [HV_REFERENCE] * F.shape[1]}
        Fn = normalize(F, ideal, nadir)
        ref = np.full(F.shape[1], HV_REFERENCE)
        for n in snapshots:
            upto = feasible_idx[feasible_idx < n]
            history.append(hypervolume(Fn[upto], ref))
    else:
        history = [0.0] * len(snapshots)

    return SearchResult(
        pareto=[entries[i] for i in front],
        evaluated=entries,
        hypervolume_history=history,
        evaluations=problem.evaluator.n_evaluations - start_count,
        seconds=seconds,
        seed=seed,
        settings=settings,
        hv_normalization=normalization,
        metric_seconds=problem.evaluator.metric_seconds - start_metric_seconds,
    )
