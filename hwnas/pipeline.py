"""The library's verbs: each takes loaded objects or paths and returns a typed result.

    import hwnas
    table = hwnas.profile("cpu-ort-1t", "mbv3-small-input", "t.json")       # -> ProfileResult
    run = hwnas.search("mbv3-small-input", table=table.table, budget_ms=2.0,
                       objectives=("params", "latency_ms"), out="runs/r")   # -> SearchRun
    bundle = hwnas.export(run.pareto, out="deploy/d", untrained=True)        # -> BundleResult

Every result is a dataclass; `to_dict()` is what the CLI's `--json` prints. This module joins
the latency model, the accuracy estimator, the search and the export; the CLI (`hwnas.commands`)
parses arguments and makes one call here. Errors name the library's fields (`budget_ms`,
`strategy`, `formats`, `pick`); the CLI maps them to its flags.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import InputError, NotAvailableError

OBJECTIVES = ("accuracy", "latency_ms", "params", "flops")
# the latency a search takes from an uncalibrated table ran about 2x the measured one in the demo's table
UNCALIBRATED_NOTE = ("the latency table {table} has no calibration yet: its predictions are raw sums of op "
                     "latencies, which can be far from whole-subnet latency (about 2x on the demo's table), so "
                     "the budget may exclude subnets that meet it; calibrate it first (hwnas validate)")


# --- results ---------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class VerbResult:
    """A verb's result: its contract fields (DESIGN.md, CLI contract) plus `details`, the rest of
    what it reports. `to_dict()` gives them all, in the order the verb reported them."""

    details: dict[str, Any] = field(default_factory=dict, repr=False)
    _order: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def _own_fields(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name not in ("details", "_order") and not f.metadata.get("hidden")]

    @classmethod
    def from_dict(cls, d: dict[str, Any], **hidden: Any) -> VerbResult:
        own = cls._own_fields()
        return cls(**{k: d.get(k) for k in own}, **hidden, details={k: v for k, v in d.items() if k not in own},
                   _order=tuple(d))

    def to_dict(self) -> dict[str, Any]:
        merged = {**{k: getattr(self, k) for k in self._own_fields()}, **self.details}
        order = [k for k in self._order if k in merged] + [k for k in merged if k not in self._order]
        return {k: merged[k] for k in order}


@dataclass(kw_only=True)
class ProfileResult(VerbResult):
    table: str
    entries: int
    measured: int
    reused: int
    seconds: float


@dataclass(kw_only=True)
class ValidateResult(VerbResult):
    n: int
    mape: float
    within_10pct: float
    kendall_tau: float
    calibrated: dict


@dataclass(kw_only=True)
class FitLatencyResult(VerbResult):
    train: int
    test: int
    mape: float
    within_10pct: float
    kendall_tau: float


@dataclass(kw_only=True)
class TrainResult(VerbResult):
    checkpoint: str | None
    epochs: int | None
    acc_largest: float | None
    acc_smallest: float | None
    seconds: float | None


@dataclass(kw_only=True)
class SearchRun(VerbResult):
    pareto: str
    budget_ms: float
    n_pareto: int
    hypervolume: float
    evaluations: int
    seconds: float
    best_under_budget: dict | None
    notes: list[str]


@dataclass(kw_only=True)
class BenchResult(VerbResult):
    hv_ratio: float
    front_recall: float
    evaluations: int
    seconds: float


@dataclass(kw_only=True)
class BundleResult(VerbResult):
    out: str
    files: dict[str, str]
    max_abs_diff: float
    predicted_ms: float | None
    measured_ms: float | None
    notes: list[str]
    manifest: dict = field(default_factory=dict, repr=False, metadata={"hidden": True})


# --- the verbs ---------------------------------------------------------------------------------------
def profile(device_profile: Any, space: str, out: str | os.PathLike | None = None, *, resume: bool = False,
            overwrite: bool = False, quick: bool = False, space_options: dict | None = None,
            limit: int | None = None, progress: bool = True) -> ProfileResult:
    """Measure every op of `space` on a device profile (a DeviceProfile, a YAML path or a shipped
    profile's name) into a latency table at `out`."""
    from hwnas.latency.profile import profile as measure_table

    return ProfileResult.from_dict(measure_table(device_profile, space, out, resume=resume, overwrite=overwrite,
                                                 quick=quick, space_options=space_options, limit=limit,
                                                 progress=progress))


def validate(table: str | os.PathLike, n: int = 50, **options: Any) -> ValidateResult:
    """Time `n` random subnets whole and score the table's predictions (raw and calibrated) on them;
    options as `hwnas.latency.validate.validate` (calib_n, plot, seed, rounds, passes, retest, ...)."""
    from hwnas.latency.validate import validate as score_table

    return ValidateResult.from_dict(score_table(table, n, **options))


def fit_latency(csv: str | os.PathLike, target: str, train_size: int, **options: Any) -> FitLatencyResult:
    """Fit the whole-network latency model on `train_size` rows of a CSV of timed subnets and score
    it on the rest; options as `hwnas.latency.fit.fit_latency` (seed, splits, space, out)."""
    from hwnas.latency.fit import fit_latency as fit_and_score

    return FitLatencyResult.from_dict(fit_and_score(csv, target, train_size, **options))


def train(settings: Any = None, out: str | os.PathLike | None = None, *, quick: bool = False, resume: bool = False,
          overwrite: bool = False, device: str = "auto", threads: int | None = None, progress: bool = True,
          **options: Any) -> TrainResult:
    """Train a weight-sharing supernet into the checkpoint `out`: with `settings` (a TrainSettings), or
    TrainSettings built from `options` (space, epochs, data, ...), the short schedule when `quick`."""
    if out is None:
        raise InputError("name the checkpoint to write", field="out")
    from hwnas.train import TrainSettings
    from hwnas.train import train as train_supernet

    if threads:
        import torch

        torch.set_num_threads(threads)
    if settings is None:
        settings = TrainSettings.short_schedule(**options) if quick else TrainSettings(**options)
    elif options or quick:
        raise InputError("give TrainSettings or its options, not both", field="settings")
    return TrainResult.from_dict(train_supernet(settings, out, resume=resume, overwrite=overwrite, device=device,
                                                progress=progress))


def search(space: Any, *, budget_ms: float, out: str | os.PathLike, table: str | os.PathLike | None = None,
           latency_model: Any = None, supernet: str | os.PathLike | None = None,
           strategy: str | None = None, objectives: Sequence[str] | str = ("accuracy", "latency_ms"),
           estimator: str = "supernet", pop_size: int | None = None, generations: int | None = None,
           evaluations: int | None = None, max_params: float | None = None, seed: int = 0,
           strategy_options: dict | None = None, overwrite: bool = False,
           max_time: str | float | None = "10m") -> SearchRun:
    """Search `space` (a name) for the Pareto front under `budget_ms`, latency predicted by a latency
    table (`table`) or any latency model (`latency_model`: a path `load_latency_model` reads, or an
    object with `predict(archs) -> ms`), accuracy from `estimator` on `supernet`. `strategy_options`
    are the strategy's own (differentiable: relaxation, steps, sweep; it also gets the supernet, the
    table's predictor and the budget). Writes out/pareto.json, pareto.png and hypervolume.png."""
    from hwnas.latency.model import load_latency_model
    from hwnas.protocols import LatencyModel, check_protocol
    from hwnas.search import best_under_budget, get_strategy
    from hwnas.search import search as optimize
    from hwnas.search.artifact import check_output_folder, fastest_latency, write_search_outputs
    from hwnas.search.planning import default_budget, parse_duration
    from hwnas.search.result import accuracy_size_agreement, attach_stderr
    from hwnas.search.strategies import DEFAULT_STRATEGY
    from hwnas.space import get_space

    strategy = strategy or DEFAULT_STRATEGY
    max_seconds = None if max_time is None else parse_duration(max_time, field="max_time")
    if not np.isfinite(budget_ms) or budget_ms <= 0:
        raise InputError(f"must be a positive number of milliseconds, got {budget_ms}", field="budget_ms")
    for name, value in (("pop_size", pop_size), ("generations", generations), ("evaluations", evaluations)):
        if value is not None and value < 1:
            raise InputError(f"must be a positive integer, got {value}", field=name)
    objectives = parse_objectives(objectives)
    check_output_folder(out, overwrite=overwrite)  # a finished run is never replaced silently
    get_strategy(strategy)  # an unknown strategy fails before anything is loaded
    # an unknown space fails here too; a spec file's path is named by its spec's name
    space_obj = get_space(space) if isinstance(space, (str, os.PathLike)) else space
    space_name = space_obj.name
    if "accuracy" in objectives and not supernet:
        raise InputError("accuracy is an objective, so a supernet checkpoint is needed", field="supernet")
    if (table is None) == (latency_model is None):
        raise InputError("give a latency table or a latency model (one of them)", field="latency_model")
    model_path = table if table is not None else (latency_model if isinstance(latency_model, (str, os.PathLike))
                                                   else None)
    for name, path in (("table" if table is not None else "latency_model", model_path), ("supernet", supernet)):
        if path is not None and not Path(path).is_file():
            raise InputError("file not found", path=str(path), field=name)

    if model_path is not None:
        model = load_latency_model(model_path, field="table" if table is not None else "latency_model")
    else:
        model = latency_model
        check_protocol(model, LatencyModel, what="latency model", field="latency_model")
    model_space_name = getattr(model, "space_name", space_name)
    if model_space_name != space_name:
        raise InputError(f"the latency model predicts space '{model_space_name}', not '{space_name}'",
                         path=str(model_path) if model_path else None, field="space")
    space = getattr(model, "space", None) or space_obj  # a table's: with its space options
    notes = []
    if not getattr(model, "calibrated", True):
        notes.append(UNCALIBRATED_NOTE.format(table=model_path or "given"))
        print(f"note: {notes[-1]}", file=sys.stderr)

    metrics = {"latency_ms": lambda archs: np.asarray(model.predict(list(archs)), dtype=float)}
    if "params" in objectives or max_params is not None:
        metrics["params"] = lambda archs: np.array([space.params(a) / 1e6 for a in archs])  # millions
    if "flops" in objectives:
        metrics["flops"] = lambda archs: np.array([space.flops(a) / 1e6 for a in archs])  # MFLOPs

    fastest_arch, fastest_ms = fastest_latency(space, metrics["latency_ms"], seed=seed)
    if budget_ms < fastest_ms:
        raise InputError(f"budget {budget_ms:g} ms is below the fastest subnet's predicted latency "
                         f"({fastest_ms:.4g} ms on this latency model); no subnet can meet it", field="budget_ms")

    if "accuracy" in objectives:
        try:
            from hwnas.estimate import get_estimator
        except ImportError as exc:
            raise NotAvailableError(f"accuracy estimators are not available in this installation ({exc})") from exc
        accuracy = get_estimator(estimator, supernet_checkpoint=supernet, space=space)
        metrics["accuracy"] = lambda archs: np.asarray(accuracy.predict(list(archs)), dtype=float)

    constraints = {"latency_ms": float(budget_ms)}
    if max_params is not None:
        constraints["params"] = float(max_params)
    chosen = _strategy(strategy, strategy_options, supernet=supernet, model=model, budget_ms=float(budget_ms))
    # with no population, generations or evaluations given: as many evaluations as the estimator's
    # measured cost fits in the time budget (the search ends when the time is spent in any case)
    evaluations, generations, plan = default_budget(space, metrics, max_seconds, pop_size=pop_size,
                                                    generations=generations, evaluations=evaluations, seed=seed)
    if plan is not None:
        print(f"search budget: {plan.describe()}", file=sys.stderr)
    result = optimize(space, metrics, objectives, constraints, chosen, evaluations=evaluations,
                      generations=generations, pop_size=pop_size, seed=seed, max_seconds=max_seconds)
    uncertainty, agreement = {}, None
    if "accuracy" in objectives:
        if hasattr(accuracy, "stderr"):  # each estimate's standard error, which best_under_budget weighs
            attach_stderr(result, "accuracy", accuracy.stderr)
            uncertainty["accuracy"] = accuracy.uncertainty() if hasattr(accuracy, "uncertainty") else {}
        if hasattr(space, "flops"):
            agreement = accuracy_size_agreement(result, space.flops)
    resolved = str(Path(model_path).resolve()) if model_path is not None else None
    files = write_search_outputs(out, result, budget_ms=float(budget_ms), metadata={
        "space": space_name,
        "table": resolved if table is not None else None,
        "latency_model": resolved,
        "space_options": _space_options(model, space),
        "supernet": str(Path(supernet).resolve()) if supernet else None,
        "estimator": estimator if "accuracy" in objectives else None,
        "fastest_ms": fastest_ms,
        "fastest_arch": fastest_arch,
        "uncertainty": uncertainty,
        "accuracy_vs_macs": agreement,
        "notes": notes,
    })
    return SearchRun.from_dict({
        "pareto": files["pareto"],
        "budget_ms": float(budget_ms),
        "n_pareto": len(result.pareto),
        "hypervolume": result.hypervolume,
        "evaluations": result.evaluations,
        "seconds": result.seconds,
        "best_under_budget": best_under_budget(result, float(budget_ms)),
        "plots": [files["pareto_plot"], files["hypervolume_plot"]],
        "fastest_ms": fastest_ms,
        "seed": seed,
        "notes": notes,
        "strategy_ran": result.settings.get("strategy_ran"),
        "stopped_on_time": result.settings.get("stopped_on_time"),
        "seconds_per_subnet": None if plan is None else plan.seconds_per_evaluation,
        "uncertainty": uncertainty,
        "accuracy_vs_macs": agreement,
    })


def _strategy(name: str, options: dict | None, *, supernet: Any, model: Any, budget_ms: float) -> Any:
    """The strategy by name, or built with its options; the differentiable one trains on the supernet
    with the table's per-op costs as its budget penalty, so it gets those too."""
    from hwnas.search import get_strategy

    options = dict(options or {})
    for name_, value in options.items():
        if name_ in ("steps", "sweep") and (not isinstance(value, int) or value < 1):
            raise InputError(f"must be a positive integer, got {value}", field=name_)
    if name == "differentiable":
        if not supernet:
            raise InputError("differentiable search trains on the supernet; give its checkpoint", field="supernet")
        if not hasattr(model, "linear_costs"):
            raise InputError("differentiable search needs a latency table (its per-op costs are the budget "
                             "penalty), not a whole-network latency model", field="latency_model")
        return get_strategy(name, supernet=supernet, predictor=model, budget_ms=budget_ms, **options)
    return get_strategy(name, **options) if options else name


def _space_options(model: Any, space: Any) -> dict:
    """The options the searched space was built with: a table's record of them, else the space's own."""
    table = getattr(model, "table", None)
    if table is not None:
        return table.space.get("config", {})
    return space.config() if hasattr(space, "config") else {}


def parse_objectives(objectives: Sequence[str] | str) -> list[str]:
    """Objective names from a list or a comma-separated string, each one of OBJECTIVES."""
    text = objectives if isinstance(objectives, str) else ",".join(objectives)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in OBJECTIVES]
    if not names or unknown:
        raise InputError(f"unknown objective(s) {unknown or text!r}; choose from {', '.join(OBJECTIVES)}",
                         field="objectives")
    return names


def bench(benchmark: str, csv: str | os.PathLike, accuracy: str, latency: str, evaluations: int,
          **options: Any) -> BenchResult:
    """Score a search strategy on a tabular benchmark against its true Pareto front; options as
    `hwnas.search.tabular.bench` (strategy, seed, seeds, pop_size)."""
    from hwnas.search.tabular import bench as score_strategy

    return BenchResult.from_dict(score_strategy(benchmark, csv, accuracy, latency, evaluations, **options))


def export(run: str | os.PathLike | None = None, *, out: str | os.PathLike, pick: str = "best-under-budget",
           arch: dict | str | None = None, supernet: str | os.PathLike | None = None, space: str | None = None,
           table: str | os.PathLike | None = None, formats: Sequence[str] | str = ("onnx", "tvm"),
           profile: Any = None, target: str | None = None, tune_trials: int = 0, dynamic_batch: bool = False,
           untrained: bool = False, measure: bool = True) -> BundleResult:
    """Export the subnet `pick` names in a search run's pareto.json (or `arch` with its `space` or
    `supernet`) as a bundle in `out`: the `formats`, a manifest, the latency measured on `profile`."""
    from hwnas.export import export_selection, parse_arch, parse_formats, select_from_run
    from hwnas.export.source import Selection

    formats = parse_formats(formats)  # a bad format fails before anything is loaded
    if tune_trials < 0:
        raise InputError(f"expected a number of trials >= 0, got {tune_trials}", field="tune_trials")
    if run and arch:
        raise InputError("give a run's pareto.json or an arch, not both", field="arch")
    if run:
        selection = select_from_run(run, pick)
        if supernet:
            selection.supernet = supernet
        if space and space != selection.space_name:
            raise InputError(f"the run searched space '{selection.space_name}', not '{space}'", field="space")
    elif arch:
        if not space and not supernet:
            raise InputError("with an arch, name the space or give its supernet", field="space")
        space_name, space_options = space, {}
        if supernet and not space_name:
            from hwnas.train import read_checkpoint

            ckpt = read_checkpoint(supernet)
            space_name, space_options = ckpt["space"], ckpt["space_config"]
        selection = Selection(arch=parse_arch(arch) if isinstance(arch, str) else arch, space_name=space_name,
                              space_options=space_options, supernet=supernet, table=table,
                              source={"pick": "arch given", "run": None})
    else:
        raise InputError("give a search run's pareto.json, or an arch with its supernet or space", field="run")
    if selection.supernet and not Path(selection.supernet).is_file():
        raise InputError("supernet checkpoint not found", path=str(selection.supernet), field="supernet")
    result = export_selection(selection, out, formats=formats, profile=profile, tvm_target=target,
                              tune_trials=tune_trials, dynamic_batch=dynamic_batch, untrained=untrained,
                              measure_latency=measure)
    return BundleResult.from_dict(result.summary(), manifest=result.manifest)
