"""Scoring search strategies on a tabular benchmark whose true Pareto front is known.

The strategy learns an architecture's accuracy and latency only by querying the table
through a `TableOracle`, which counts distinct architectures. Score, with both objectives
scaled to [0, 1] by the table's min and max and the table's median architecture (median
accuracy, median latency) as the reference point:

- hv_ratio: hypervolume of everything queried / hypervolume of the table's Pareto front
- front_recall: share of the table's Pareto-front architectures that were queried
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwnas.errors import InputError
from hwnas.search.indicators import hypervolume, pareto_front
from hwnas.search.optimize import search
from hwnas.search.problem import ArchEvaluator, ArchKey, arch_key
from hwnas.search.strategies.base import DEFAULT_STRATEGY, get_strategy
from hwnas.space import Arch, SearchSpace, get_space

BENCHMARKS = ("nb201",)
# latency budgets a single-objective strategy sweeps to trace a front (evenly from the
# table's fastest to its median latency: the region the score measures)
N_SWEEP_BUDGETS = 5


@dataclass
class TabularBenchmark:
    """Accuracy and latency of every architecture of a space, read from a CSV."""

    space: SearchSpace
    path: str
    accuracy_column: str
    latency_column: str
    keys: list[ArchKey]
    accuracy: np.ndarray
    latency: np.ndarray
    row_of: dict[ArchKey, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.row_of = {k: i for i, k in enumerate(self.keys)}

    def rows(self, archs: list[Arch]) -> np.ndarray:
        try:
            return np.array([self.row_of[arch_key(self.space, a)] for a in archs], dtype=np.int64)
        except KeyError as exc:
            raise InputError(f"architecture not in the table: {exc}", path=self.path) from exc

    def minimised(self) -> np.ndarray:
        """(n, 2) objectives scaled to [0, 1] by the table's range: (1 - accuracy, latency)."""
        acc = (self.accuracy - self.accuracy.min()) / _span(self.accuracy)
        lat = (self.latency - self.latency.min()) / _span(self.latency)
        return np.stack([1.0 - acc, lat], axis=1)

    def reference(self) -> np.ndarray:
        """The median architecture, in the scaled objectives."""
        acc = (np.median(self.accuracy) - self.accuracy.min()) / _span(self.accuracy)
        lat = (np.median(self.latency) - self.latency.min()) / _span(self.latency)
        return np.array([1.0 - acc, lat])


def _span(values: np.ndarray) -> float:
    span = float(values.max() - values.min())
    return span if span > 0 else 1.0


def load_table(benchmark: str, csv_path: str | Path, accuracy: str, latency: str) -> TabularBenchmark:
    """Read `accuracy` and `latency` columns of a benchmark CSV (nb201: keyed by `arch_str`)."""
    if benchmark not in BENCHMARKS:
        raise InputError(f"unknown benchmark '{benchmark}'; known: {', '.join(BENCHMARKS)}", field="benchmark")
    path = Path(csv_path)
    if not path.is_file():
        raise InputError("CSV file not found", path=str(path))
    from hwnas.space.nb201 import from_arch_str

    space = get_space("nb201")
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            for name, what in (("arch_str", "architecture"), (accuracy, "accuracy"), (latency, "latency")):
                if name not in columns:
                    raise InputError(f"no {what} column '{name}'; available columns: {', '.join(columns)}",
                                     path=str(path), field=name)
            keys, accs, lats = [], [], []
            for line, row in enumerate(reader, start=2):
                keys.append(arch_key(space, _parse(from_arch_str, row["arch_str"], path, line)))
                accs.append(_number(row[accuracy], path, accuracy, line))
                lats.append(_number(row[latency], path, latency, line))
    except UnicodeDecodeError as exc:
        raise InputError(f"not a text CSV ({exc})", path=str(path)) from exc
    if not keys:
        raise InputError("the CSV has no data rows", path=str(path))
    if len(set(keys)) != len(keys):
        raise InputError("an architecture appears on more than one row", path=str(path), field="arch_str")
    return TabularBenchmark(space, str(path), accuracy, latency, keys, np.array(accs), np.array(lats))


def _parse(from_arch_str, text: str, path: Path, line: int) -> Arch:
    try:
        return from_arch_str(text)
    except InputError as exc:
        raise InputError(f"line {line}: {exc}", path=str(path), field="arch_str") from exc


def _number(text: str | None, path: Path, column: str, line: int) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise InputError(f"line {line}: expected a finite number, got {text!r}", path=str(path), field=column)
    return value


class TableOracle:
    """The only way a strategy learns a table's numbers: queries, counted per distinct arch."""

    def __init__(self, table: TabularBenchmark):
        self.table = table
        self.queried: set[int] = set()

    @property
    def n_queries(self) -> int:
        return len(self.queried)

    def accuracy(self, archs: list[Arch]) -> np.ndarray:
        rows = self.table.rows(archs)
        self.queried.update(rows.tolist())
        return self.table.accuracy[rows]

    def latency_ms(self, archs: list[Arch]) -> np.ndarray:
        rows = self.table.rows(archs)
        self.queried.update(rows.tolist())
        return self.table.latency[rows]

    def metrics(self) -> dict:
        return {"accuracy": self.accuracy, "latency_ms": self.latency_ms}


@dataclass
class TabularScore:
    hv_ratio: float
    front_recall: float
    evaluations: int
    seconds: float


def score_queried(table: TabularBenchmark, queried_rows: set[int] | np.ndarray) -> tuple[float, float]:
    """(hv_ratio, front_recall) of a set of queried table rows."""
    F, ref = table.minimised(), table.reference()
    true_front = pareto_front(F)
    rows = np.fromiter(queried_rows, dtype=np.int64)
    hv_true = hypervolume(F[true_front], ref)
    hv_ratio = hypervolume(F[rows], ref) / hv_true if hv_true > 0 else 0.0
    recall = float(np.isin(true_front, rows).mean())
    return float(hv_ratio), recall


def run_on_table(table: TabularBenchmark, strategy: str, evaluations: int, seed: int,
                 pop_size: int | None = None, progress: bool = False) -> TabularScore:
    """One search on the table within `evaluations` queries, scored against the true front.

    Multi-objective strategies search accuracy x latency directly; single-objective ones
    (maximise accuracy under a latency limit) sweep `N_SWEEP_BUDGETS` limits spread from the
    table's fastest to its median latency, splitting the queries evenly, with one shared
    query cache.
    """
    oracle = TableOracle(table)
    evaluator = ArchEvaluator(table.space, oracle.metrics())
    t0 = time.perf_counter()
    if get_strategy(strategy).multi_objective:
        search(table.space, evaluator.metrics, ("accuracy", "latency_ms"), None, strategy,
               evaluations=evaluations, pop_size=pop_size, seed=seed, evaluator=evaluator, progress=progress)
    else:
        lo, median = float(table.latency.min()), float(np.median(table.latency))
        budgets = [lo + (median - lo) * (i + 1) / N_SWEEP_BUDGETS for i in range(N_SWEEP_BUDGETS)]
        for i, budget in enumerate(budgets):
            share = (evaluations - evaluator.n_evaluations) // (N_SWEEP_BUDGETS - i)
            if share < 1:
                continue
            search(table.space, evaluator.metrics, ("accuracy",), {"latency_ms": budget}, strategy,
                   evaluations=share, pop_size=pop_size, seed=seed * N_SWEEP_BUDGETS + i,
                   evaluator=evaluator, progress=progress)
    seconds = time.perf_counter() - t0
    hv_ratio, recall = score_queried(table, oracle.queried)
    return TabularScore(hv_ratio, recall, oracle.n_queries, seconds)


def bench(benchmark: str, csv_path: str | Path, accuracy: str, latency: str, evaluations: int,
          strategy: str = DEFAULT_STRATEGY, seed: int = 0, seeds: int = 1, pop_size: int | None = None,
          progress: bool = True) -> dict:
    """Score `strategy` on a tabular benchmark over seeds seed, seed+1, ..., seed+seeds-1."""
    if not isinstance(evaluations, int) or evaluations < 1:
        raise InputError(f"must be a positive integer, got {evaluations!r}", field="evals")
    if not isinstance(seeds, int) or seeds < 1:
        raise InputError(f"must be a positive integer, got {seeds!r}", field="seeds")
    get_strategy(strategy)  # an unknown name fails before the table is read
    table = load_table(benchmark, csv_path, accuracy, latency)
    scores = []
    for s in range(seed, seed + seeds):
        scores.append(run_on_table(table, strategy, evaluations, s, pop_size, progress=progress))
    out: dict = {
        "benchmark": benchmark, "csv": str(csv_path), "accuracy": accuracy, "latency": latency,
        "algo": strategy, "evals": evaluations, "seed": seed, "seeds": seeds,
        "table_size": len(table.keys), "true_front_size": int(len(pareto_front(table.minimised()))),
    }
    for key in ("hv_ratio", "front_recall", "evaluations", "seconds"):
        values = np.array([getattr(sc, key) for sc in scores], dtype=float)
        out[key] = float(values.mean()) if seeds > 1 else (int(values[0]) if key == "evaluations"
                                                            else float(values[0]))
        if seeds > 1:
            out[f"{key}_std"] = float(values.std(ddof=1))
            out[f"{key}_per_seed"] = [int(v) if key == "evaluations" else float(v) for v in values]
    return out


def surrogate_fit(table: TabularBenchmark, n_train: int = 300, draws: int = 4, views: bool = True) -> dict:
    """How well the default's GP surrogate (`hwnas.search.gp`, on mid-ranks, with the space's surrogate
    genes) ranks cells it was not fit to, where a search needs it: fit on `n_train` cells, half drawn
    at random and half from the scored region (cells that beat the median in both objectives), then
    the Spearman correlation of its predictions with the truth on the region's other cells, per
    objective, mean over `draws` draws; with `views`, also how often each objective chose each of the
    space's `surrogate_views` (0: all columns)."""
    from scipy.stats import spearmanr

    from hwnas.search.gp import HammingGP, extended, mid_ranks, surrogate_views

    X = extended(table.space, np.array([np.frombuffer(k, dtype=np.int64) for k in table.keys]))
    Y = np.stack([table.accuracy, table.latency], axis=1)
    region = np.flatnonzero(np.all(table.minimised() < table.reference(), axis=1))
    if not 2 <= n_train <= len(X) - 2 or len(region) < n_train // 2 + 2:
        raise InputError(f"needs 2 <= n_train <= {len(region) * 2 - 4} for this table, got {n_train}",
                         field="n_train")
    rho: list[list[float]] = [[], []]
    chosen: list[list[int]] = [[], []]
    for draw in range(draws):
        rng = np.random.default_rng(draw)
        train = np.unique(np.r_[rng.choice(len(X), n_train - n_train // 2, replace=False),
                                rng.choice(region, n_train // 2, replace=False)])
        test = np.setdiff1d(region, train)
        gp = HammingGP(X[train], X[test], surrogate_views(table.space, X) if views else None)
        mean, _ = gp.posterior(mid_ranks(Y[train]))
        for k in range(2):
            rho[k].append(float(spearmanr(mean[:, k], Y[test, k]).statistic))
            chosen[k].append(int(gp.chosen[k][0]))
    return {name: {"spearman": float(np.mean(rho[k])), "spearman_per_draw": rho[k], "view_per_draw": chosen[k]}
            for k, name in enumerate(("accuracy", "latency"))}


# synthetic latency columns made from a shipped one (`--synthetic`), each a way runtimes differ
SYNTHETIC = ("wholems", "stairs", "interaction")


def synthetic_csv(src: str | Path, columns: list[str], kinds: list[str], out: str | Path) -> list[str]:
    """Write `src` with, for each latency column and kind, a transformed copy `COLUMN_KIND`:

    - wholems: rounded to whole milliseconds (a timer of 1 ms resolution: many ties);
    - stairs: cells whose output does not depend on the input (no input->output path of
      non-'none' edges) cost 0.1 % of their latency, as on runtimes that prune them (a long
      stair of near-zero-latency cells, accuracy 10 % / 1 %);
    - interaction: plus a pseudo-random term for every pair of edges and their two ops (a
      fixed draw per (edge, op, edge, op), seed 0), scaled to a fifth of the column's standard
      deviation: latency that is not a smooth function of the cell.

    Returns the new columns' names."""
    from hwnas.space.nb201 import N_EDGES, OPS, from_arch_str, live_mask

    src, out = Path(src), Path(out)
    if not src.is_file():
        raise InputError("CSV file not found", path=str(src))
    if out.exists():
        raise InputError("already exists; give a new path (nothing is replaced)", path=str(out))
    with src.open(newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = list(reader.fieldnames or []), list(reader)
    for name in ["arch_str", *columns]:
        if name not in fields:
            raise InputError(f"no column '{name}'; available columns: {', '.join(fields)}", path=str(src), field=name)
    unknown = sorted(set(kinds) - set(SYNTHETIC))
    if unknown:
        raise InputError(f"unknown kind(s) {', '.join(unknown)}; expected {', '.join(SYNTHETIC)}", field="kinds")
    X = np.array([[OPS.index(op) for op in from_arch_str(r["arch_str"])["edges"]] for r in rows])
    dead = ~live_mask(X).any(axis=1)
    pairs = [(i, j) for i in range(N_EDGES) for j in range(i + 1, N_EDGES)]
    draws = np.random.default_rng(0).random((len(pairs), len(OPS), len(OPS)))
    interaction = sum(draws[k, X[:, i], X[:, j]] for k, (i, j) in enumerate(pairs))
    interaction = (interaction - interaction.mean()) / interaction.std()
    added = []
    for column in columns:
        lat = np.array([float(r[column]) for r in rows])
        for kind in kinds:
            if kind == "wholems":
                new = np.round(lat)
            elif kind == "stairs":
                new = np.where(dead, lat * 1e-3, lat)
            else:
                new = np.clip(lat + 0.2 * lat.std() * interaction, lat.min(), None)
            name = f"{column}_{kind}"
            for r, v in zip(rows, new, strict=True):
                r[name] = f"{v:.6g}"
            added.append(name)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields + added)
        writer.writeheader()
        writer.writerows(rows)
    return added
