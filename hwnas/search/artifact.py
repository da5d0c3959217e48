"""The search's on-disk artifact: R/pareto.json (+ R/pareto.png, R/hypervolume.png)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import InputError, OutputError
from hwnas.io import check_writable, json_bytes, write_or_rescue
from hwnas.search.optimize import search
from hwnas.search.plot import plot_hypervolume, plot_pareto
from hwnas.search.result import SearchResult, best_under_budget
from hwnas.space.base import Arch, SearchSpace

PARETO_SCHEMA_VERSION = 1
PARETO_KIND = "hwnas.pareto"


def fastest_latency(space: SearchSpace, latency_ms: Callable[[list[Arch]], np.ndarray], *, seed: int = 0,
                    pop_size: int = 40, generations: int = 15) -> tuple[Arch, float]:
    """The fastest subnet found: the space's smallest one (when it names one) or a short
    latency-only search, whichever predicts lower."""
    candidates: list[Arch] = []
    if hasattr(space, "smallest"):
        candidates.append(space.smallest())
    quick = search(space, {"latency_ms": latency_ms}, ("latency_ms",), None, "nsga2", maximize=(),
                   generations=generations, pop_size=pop_size, seed=seed, progress=False)
    candidates.extend(e["arch"] for e in quick.pareto)
    values = np.asarray(latency_ms(candidates), dtype=float)
    i = int(np.argmin(values))
    return candidates[i], float(values[i])


def pareto_document(result: SearchResult, *, budget_ms: float, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The pareto.json content: every non-dominated subnet and every evaluated one, settings, seed,
    provenance."""
    from hwnas import __version__

    try:
        import pymoo

        pymoo_version = pymoo.__version__
    except (ImportError, AttributeError):
        pymoo_version = None
    best = best_under_budget(result, budget_ms) if "latency_ms" in _metric_names(result) else None
    return {
        "schema_version": PARETO_SCHEMA_VERSION,
        "kind": PARETO_KIND,
        **dict(metadata),
        "budget_ms": budget_ms,
        "objectives": result.objectives,
        "maximize": result.settings.get("maximize", []),
        "constraints": result.settings.get("constraints", {}),
        "settings": result.settings,
        "strategy_ran": result.settings.get("strategy_ran", result.settings.get("strategy")),
        "seed": result.seed,
        "evaluations": result.evaluations,
        "seconds": result.seconds,
        "n_pareto": len(result.pareto),
        "pareto": result.pareto,
        "best_under_budget": best,
        # every subnet the search evaluated, in order, each estimate with its standard error where the
        # estimator gives one: what the front was chosen from, for a user to check or rescore
        "evaluated": result.evaluated,
        "hypervolume": result.hypervolume,
        "hypervolume_history": result.hypervolume_history,
        "hv_normalization": result.hv_normalization,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"hwnas": __version__, "pymoo": pymoo_version},
    }


def _metric_names(result: SearchResult) -> set[str]:
    return set(result.objectives) | set(result.settings.get("constraints", {}))


OUTPUT_FILES = ("pareto.json", "pareto.png", "hypervolume.png")


def check_output_folder(out_dir: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Before searching: InputError when `out_dir` cannot be written, or already holds a run's files
    and `overwrite` is not given (a finished search is never replaced silently)."""
    out = Path(out_dir)
    check_writable(out, field="--out", folder=True)
    present = [name for name in OUTPUT_FILES if (out / name).exists()]
    if present and not overwrite:
        raise InputError(f"holds a search run ({', '.join(present)}); pass --overwrite to replace it, or give "
                         "another --out", path=str(out), field="--out")


def write_search_outputs(out_dir: str | os.PathLike, result: SearchResult, *, budget_ms: float,
                         metadata: Mapping[str, Any]) -> dict[str, str]:
    """Write pareto.json, then pareto.png and hypervolume.png, into `out_dir`.

    The Pareto set is the result: when its folder cannot be written it is saved in the rescue folder
    (`hwnas.io.rescue_dir`) and the OutputError says where; a plot that fails leaves pareto.json in place.
    """
    out = Path(out_dir)
    with contextlib.suppress(OSError):  # a folder that cannot be made fails below, and the result is rescued
        out.mkdir(parents=True, exist_ok=True)
    files = {"pareto": out / "pareto.json", "pareto_plot": out / "pareto.png",
             "hypervolume_plot": out / "hypervolume.png"}
    write_or_rescue(files["pareto"], json_bytes(pareto_document(result, budget_ms=budget_ms, metadata=metadata)),
                    what="Pareto set")
    try:
        x = "latency_ms" if "latency_ms" in _metric_names(result) else result.objectives[0]
        best = best_under_budget(result, budget_ms) if x == "latency_ms" else None
        plot_pareto(files["pareto_plot"], result, budget_ms if x == "latency_ms" else None, x=x, best=best)
        plot_hypervolume(files["hypervolume_plot"], result.hypervolume_history,
                         label=f"{result.settings.get('strategy_ran', result.settings.get('strategy', ''))}, "
                               f"seed {result.seed}")
    except OSError as exc:
        raise OutputError(f"cannot write the plots ({exc.strerror or exc}); the Pareto set is written at "
                          f"{files['pareto']}", path=str(exc.filename or out)) from exc
    return {name: str(path) for name, path in files.items()}
