"""Figures of a search: the Pareto front under the budget, and hypervolume per generation."""

from __future__ import annotations

import os
from collections.abc import Sequence

from hwnas.search.result import SearchResult, stderr_of


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> None:
    import io

    from hwnas.io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot_pareto(path: str | os.PathLike, result: SearchResult, budget: float | None = None, *,
                x: str = "latency_ms", y: str | None = None, best: dict | None = None) -> None:
    """Scatter every evaluated architecture, the Pareto front as a step line, the budget as
    a vertical line, `best` (the pick under the budget) circled. `x`/`y` name objectives or
    constraints (y: the first other objective). Where the entries carry standard errors of `y`
    (`attach_stderr`), each point has its error bar."""
    plt = _pyplot()
    names = result.objectives
    if y is None:
        y = next((n for n in names if n != x), names[0])

    def value(entry: dict, name: str) -> float:
        return entry["objectives"].get(name, entry["constraints"].get(name))

    def errors(entries: list[dict]) -> list[float] | None:
        """The standard errors of `y` (entry["stderr"]); None when some entry has none."""
        se = [stderr_of(e, y) for e in entries]
        return None if not se or any(v is None for v in se) else se

    fig, ax = plt.subplots(figsize=(6, 4.2))
    ok = [e for e in result.evaluated if e["feasible"]]
    bad = [e for e in result.evaluated if not e["feasible"]]
    if bad:
        ax.errorbar([value(e, x) for e in bad], [value(e, y) for e in bad], yerr=errors(bad), fmt="o", ms=2,
                    c="0.8", elinewidth=0.5, label=f"infeasible ({len(bad)})")
    ax.errorbar([value(e, x) for e in ok], [value(e, y) for e in ok], yerr=errors(ok), fmt="o", ms=2,
                c="tab:blue", alpha=0.5, elinewidth=0.5, label=f"evaluated ({len(ok)})")
    front = sorted(result.pareto, key=lambda e: value(e, x))
    ax.step([value(e, x) for e in front], [value(e, y) for e in front], where="post", c="tab:red",
            marker="o", ms=3, label=f"Pareto front ({len(front)})")
    front_se = errors(front)
    if front_se is not None:
        ax.errorbar([value(e, x) for e in front], [value(e, y) for e in front], yerr=front_se, fmt="none",
                    c="tab:red", capsize=2, elinewidth=0.8, label=f"± 1 standard error of {y}")
    if best is not None:
        ax.scatter([value(best, x)], [value(best, y)], s=60, facecolors="none", edgecolors="k", zorder=5,
                   label="best under the budget" + (" (picked among ties)" if
                                                     (best.get("selection") or {}).get("tied", 1) > 1 else ""))
    if budget is not None:
        ax.axvline(budget, c="k", ls="--", lw=1, label=f"budget {budget:g}")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    strategy = result.settings.get("strategy_ran", result.settings.get("strategy", ""))
    ax.set_title(f"{result.settings.get('space', '')} {strategy}, "
                 f"{result.evaluations} evaluations, seed {result.seed}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)


def plot_hypervolume(path: str | os.PathLike, history: Sequence[float], *, label: str = "") -> None:
    """Hypervolume (normalised objectives) against generation."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(history) + 1), list(history), marker=".", label=label or None)
    ax.set_xlabel("generation")
    ax.set_ylabel("hypervolume (normalised)")
    ax.grid(alpha=0.3)
    if label:
        ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
