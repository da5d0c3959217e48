"""The search's on-disk artifact: R/pareto.json (+ R/pareto.png, R/hypervolume.png)."""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.io import atomic_write_json
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
    """The pareto.json content: every non-dominated subnet, settings, seed, provenance."""
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
        "hypervolume": result.hypervolume,
        "hypervolume_history": result.hypervolume_history,
        "hv_normalization": result.hv_normalization,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"hwnas": __version__, "pymoo": pymoo_version},
    }


def _metric_names(result: SearchResult) -> set[str]:
    return set(result.objectives) | set(result.settings.get("constraints", {}))


def write_search_outputs(out_dir: str | os.PathLike, result: SearchResult, *, budget_ms: float,
                         metadata: Mapping[str, Any]) -> dict[str, str]:
    """Write pareto.json, pareto.png and hypervolume.png into `out_dir`; on failure remove
    the files this call created (files that were there before are replaced atomically or kept)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"pareto": out / "pareto.json", "pareto_plot": out / "pareto.png",
             "hypervolume_plot": out / "hypervolume.png"}
    existed = {name: path.exists() for name, path in files.items()}
    try:
        x = "latency_ms" if "latency_ms" in _metric_names(result) else result.objectives[0]
        plot_pareto(files["pareto_plot"], result, budget_ms if x == "latency_ms" else None, x=x)
        plot_hypervolume(files["hypervolume_plot"], result.hypervolume_history,
                         label=f"{result.settings.get('strategy_ran', result.settings.get('strategy', ''))}, "
                               f"seed {result.seed}")
        atomic_write_json(files["pareto"], pareto_document(result, budget_ms=budget_ms, metadata=metadata))
    except BaseException:
        for name, path in files.items():
            if not existed[name] and path.exists():
                path.unlink()
        raise
    return {name: str(path) for name, path in files.items()}
