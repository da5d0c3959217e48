"""Latency of a whole subnet from a latency table, calibrated on end-to-end measurements.

The raw prediction is the once-for-all sum of the table's per-op medians. Ops measured
alone differ from ops inside a network: each isolated measurement pays the runtime's
per-call overhead, and a multi-threaded runtime or a GPU overlaps or fuses work across
ops. `LatencyPredictor.fit(archs, measured_ms)` learns a small linear correction from a
few subnets measured end to end on the same device; several candidate corrections are
fitted and the one with the least leave-one-out relative error is kept:

- ``raw``: the sum itself (nothing learned)
- ``scale``: c * sum
- ``affine``: a + c * sum (a fixed per-network cost, a global speed-up)
- ``overhead``: a + c * sum + b * n_ops (b < 0 removes the per-call overhead in each entry)
- ``per-type``: a + sum over op types t of c_t * sum_t + b * n_ops
- ``op-attributes``: ``per-type`` plus an in-context cost d_j for every attribute j of an op
  key and every pair of them (``mbconv:k7``, ``mbconv:i48x4x4&k7``, ``mbconv:e6&se1``), times
  how often the subnet has it. The d_j are a ridge (penalty by leave-one-out error), so it
  works with fewer timings than attributes; with two intra-op threads on a 2-vCPU VM it ranked
  held-out subnets at tau 0.92-0.95 where ``per-type`` reached 0.84-0.87 (BENCHMARKS.md).

The calibration is stored next to the table (``T.calibration.json``) with its provenance;
`LatencyPredictor.load(T)` picks it up (and falls back to the raw sum without one).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import InputError
from hwnas.io import json_bytes, read_json, write_or_rescue
from hwnas.latency.fit import measured_latencies
from hwnas.latency.table import LatencyTable
from hwnas.stats import latency_metrics, relative_least_squares, relative_ridge, trimmed_rms

CALIBRATION_SCHEMA_VERSION = 1
CALIBRATION_KIND = "hwnas-latency-calibration"
METHODS = ("raw", "scale", "affine", "overhead", "per-type", "op-attributes")
# ridge penalties tried by "op-attributes" (rows in units of relative error, columns op counts)
# a candidate must beat a simpler one by this much (relative LOO error) to be chosen: fewer parameters win ties
_SIMPLER_MARGIN = 0.02
_OPS_CACHE_LIMIT = 200_000


def calibration_path(table_path: str | os.PathLike) -> Path:
    """Where the calibration of a table lives: beside it, `<table stem>.calibration.json`."""
    p = Path(table_path)
    return p.with_name(p.stem + ".calibration.json")


def table_digest(table: LatencyTable) -> str:
    """SHA-256 of the table's entries: a calibration is only valid for the numbers it was fitted on."""
    canon = json.dumps({k: table.entries[k]["median_ms"] for k in sorted(table.entries)}, sort_keys=True)
    return hashlib.sha256(canon.encode()).hexdigest()


@dataclass
class Calibration:
    """A fitted correction of the table sum: y = features(arch) @ coef, features by `method`."""

    method: str
    coef: list[float]
    feature_names: list[str]
    loo_rel_rmse: dict[str, float] = field(default_factory=dict)  # every candidate's leave-one-out error
    provenance: dict[str, Any] = field(default_factory=dict)
    source: str | None = field(default=None, compare=False)  # the file it was read from

    def to_dict(self) -> dict[str, Any]:
        record = {k: v for k, v in asdict(self).items() if k != "source"}
        return {"schema_version": CALIBRATION_SCHEMA_VERSION, "kind": CALIBRATION_KIND, **record}

    @classmethod
    def from_dict(cls, raw: Any, source: str = "<calibration>") -> Calibration:
        if not isinstance(raw, dict) or raw.get("kind") != CALIBRATION_KIND:
            raise InputError(f"not an hwnas latency calibration (expected kind {CALIBRATION_KIND!r})",
                             path=source, field="kind")
        if raw.get("schema_version") != CALIBRATION_SCHEMA_VERSION:
            raise InputError(f"unsupported schema_version {raw.get('schema_version')!r}; expected "
                             f"{CALIBRATION_SCHEMA_VERSION} (run `hwnas validate` again)", path=source,
                             field="schema_version")
        method = raw.get("method")
        if method not in METHODS:
            raise InputError(f"unknown method {method!r}; expected one of {list(METHODS)}", path=source,
                             field="method")
        coef, names = raw.get("coef"), raw.get("feature_names")
        if (not isinstance(coef, list) or not isinstance(names, list) or len(coef) != len(names)
                or not all(isinstance(c, (int, float)) and np.isfinite(c) for c in coef)):
            raise InputError("expected equally long lists 'coef' (finite numbers) and 'feature_names'",
                             path=source, field="coef")
        for name in ("loo_rel_rmse", "provenance"):
            if not isinstance(raw.get(name, {}), dict):
                raise InputError(f"expected an object, got {type(raw[name]).__name__}", path=source, field=name)
        if not all(isinstance(n, str) for n in names):
            raise InputError("expected a list of feature names (strings)", path=source, field="feature_names")
        return cls(method=method, coef=[float(c) for c in coef], feature_names=list(names),
                   loo_rel_rmse=dict(raw.get("loo_rel_rmse", {})), provenance=dict(raw.get("provenance", {})),
                   source=source)


class LatencyPredictor:
    """Predicted end-to-end latency (ms) of subnets: table sum plus an optional calibration.

    >>> pred = LatencyPredictor.load("latency_tables/cpu-ort-1t_mbv3-small-input.json")  # doctest: +SKIP
    >>> pred.predict(archs)                                                               # doctest: +SKIP
    """

    def __init__(self, table: LatencyTable, space: Any = None, calibration: Calibration | None = None):
        self.table = table
        self._space = space
        self.calibration = calibration
        self._index: dict[str, int] | None = None
        self._ops_cache: dict[tuple, np.ndarray] = {}

    # --- construction ------------------------------------------------------------------
    @classmethod
    def load(cls, table_path: str | os.PathLike, calibration: str | os.PathLike | None = None) -> LatencyPredictor:
        """The table, and its calibration when one exists beside it (or at `calibration`)."""
        table = LatencyTable.load(table_path)
        pred = cls(table)
        cal_path = Path(calibration) if calibration is not None else calibration_path(table_path)
        if cal_path.is_file():
            cal = Calibration.from_dict(read_json(cal_path, what="latency calibration"), source=str(cal_path))
            fitted_on = cal.provenance.get("table_sha256")
            if fitted_on and fitted_on != table_digest(table) and not pred._same_sums(cal):
                # the table was measured again after calibrating: the fitted correction no longer applies
                print(f"warning: {cal_path} was fitted on other table entries; using the raw table sum",
                      file=sys.stderr)
            else:
                pred.calibration = cal
        elif calibration is not None:
            raise InputError("calibration file not found", path=str(cal_path))
        return pred

    def _same_sums(self, cal: Calibration, tolerance: float = 0.02) -> bool:
        """Whether this table still gives the sums the calibration was fitted on (within `tolerance`).

        Entries re-measured after calibrating (a resumed profile, confirmation rounds) leave the
        correction valid as long as the calibration subnets' table sums barely move.
        """
        fitted = cal.provenance.get("measurements", {}).get("calibration", [])
        if not fitted or any("raw_ms" not in m for m in fitted):
            return False
        try:
            now = self.predict_raw([m["arch"] for m in fitted])
        except InputError:
            return False
        before = np.array([m["raw_ms"] for m in fitted], dtype=float)
        return bool(np.max(np.abs(now / before - 1)) <= tolerance)

    @property
    def space_name(self) -> str:
        return self.table.space_name

    @property
    def calibrated(self) -> bool:
        """Whether a calibration fitted on whole-subnet measurements corrects the table's sums."""
        return self.calibration is not None

    @property
    def space(self) -> Any:
        if self._space is None:
            from hwnas.space import get_space

            config = {k: v for k, v in self.table.space.get("config", {}).items() if k != "name"}
            try:
                self._space = get_space(self.table.space_name, **config)
            except InputError as exc:
                raise InputError(str(exc), path=self.table.path, field="space.name") from exc
            except (TypeError, ValueError) as exc:
                raise InputError(f"the space options do not fit space '{self.table.space_name}': {exc}",
                                 path=self.table.path, field="space.config") from exc
        return self._space

    # --- features ------------------------------------------------------------------------
    def _key_index(self) -> dict[str, int]:
        if self._index is None:
            keys = list(self.table.entries)
            self._index = {k: i for i, k in enumerate(keys)}
            self._median = np.array([self.table.entries[k]["median_ms"] for k in keys], dtype=float)
            self.op_types = sorted({k.split("|", 1)[0] for k in keys})
            type_of = {t: i for i, t in enumerate(self.op_types)}
            self._type_id = np.array([type_of[k.split("|", 1)[0]] for k in keys], dtype=np.int64)
            self.attribute_names, self._key_attributes = _attribute_matrix(keys)
        return self._index

    def _op_indices(self, arch: dict) -> np.ndarray:
        cache_key = tuple((k, _hashable(v)) for k, v in sorted(arch.items()))
        hit = self._ops_cache.get(cache_key)
        if hit is not None:
            return hit
        index = self._key_index()
        ops = self.space.ops(arch)
        try:
            idx = np.fromiter((index[k] for k in ops), dtype=np.int64, count=len(ops))
        except KeyError as exc:
            raise InputError(
                f"op key {exc.args[0]!r} of this subnet is not in the latency table ({len(index)} entries); "
                "complete the table with `hwnas profile ... --resume`", path=self.table.path, field="entries",
            ) from None
        if len(self._ops_cache) >= _OPS_CACHE_LIMIT:
            self._ops_cache.clear()
        self._ops_cache[cache_key] = idx
        return idx

    def _flat_ops(self, archs: Sequence[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every op of every arch as (row of its arch, its table entry), and each arch's number of ops."""
        self._key_index()
        idx = [self._op_indices(a) for a in archs]
        n_ops = np.array([len(i) for i in idx], dtype=np.int64)
        flat = np.concatenate(idx) if idx else np.zeros(0, dtype=np.int64)
        return np.repeat(np.arange(len(archs)), n_ops), flat, n_ops

    def op_counts(self, archs: Sequence[dict]) -> np.ndarray:
        """Per arch, how many times each table entry occurs in it (n, n_entries)."""
        row, flat, _ = self._flat_ops(archs)
        counts = np.zeros((len(archs), len(self._median)))
        np.add.at(counts, (row, flat), 1.0)
        return counts

    def op_sums(self, archs: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
        """Per arch: table sum per op type (n, n_types) and number of ops (n,)."""
        row, flat, n_ops = self._flat_ops(archs)
        sums = np.zeros((len(archs), len(self.op_types)))
        np.add.at(sums, (row, self._type_id[flat]), self._median[flat])
        return sums, n_ops.astype(float)

    def features(self, archs: Sequence[dict], method: str) -> tuple[np.ndarray, list[str]]:
        """Design matrix of one calibration method (columns named)."""
        return self._design(archs, *self.op_sums(archs), method)

    def _design(self, archs: Sequence[dict], sums: np.ndarray, n_ops: np.ndarray,
                method: str) -> tuple[np.ndarray, list[str]]:
        total = sums.sum(axis=1)
        one = np.ones(len(archs))
        if method == "raw" or method == "scale":
            return total[:, None], ["sum_ms"]
        if method == "affine":
            return np.c_[one, total], ["intercept_ms", "sum_ms"]
        if method == "overhead":
            return np.c_[one, total, n_ops], ["intercept_ms", "sum_ms", "n_ops"]
        if method in ("per-type", "op-attributes"):
            X, names = np.c_[one, sums, n_ops], ["intercept_ms", *[f"sum_ms[{t}]" for t in self.op_types], "n_ops"]
            if method == "per-type":
                return X, names
            attrs = self.op_counts(archs) @ self._key_attributes
            return np.c_[X, attrs], [*names, *self._attribute_columns()]
        raise InputError(f"unknown calibration method {method!r}; expected one of {list(METHODS)}", field="method")

    def _attribute_columns(self) -> list[str]:
        self._key_index()
        return [f"count[{a}]" for a in self.attribute_names]

    # --- estimator -----------------------------------------------------------------------
    def predict_raw(self, archs: Sequence[dict]) -> np.ndarray:
        """The once-for-all prediction: the sum of the table's per-op medians."""
        return self.op_sums(archs)[0].sum(axis=1)

    def predict(self, archs: Sequence[dict]) -> np.ndarray:
        """Calibrated latency (ms) of each arch; the raw sum when there is no calibration."""
        if len(archs) == 0:
            return np.zeros(0)
        cal = self.calibration
        sums, n_ops = self.op_sums(archs)
        raw = sums.sum(axis=1)
        if cal is None or cal.method == "raw":
            return raw
        by_attributes = cal.method == "op-attributes"
        # "op-attributes": the attribute part is folded into one cost per table entry (attribute matrix @
        # its coefficients), so a search population costs about what its raw sum costs
        X, names = self._design(archs, sums, n_ops, "per-type" if by_attributes else cal.method)
        if by_attributes:
            names = names + self._attribute_columns()
        if names != cal.feature_names:
            raise InputError(f"calibration features {cal.feature_names} do not match this table's {names}",
                             path=cal.source or self.table.path, field="feature_names")
        coef = np.asarray(cal.coef)
        out = X @ coef[: X.shape[1]]
        if by_attributes:
            row, flat, _ = self._flat_ops(archs)
            per_entry = self._key_attributes @ coef[X.shape[1]:]
            out += np.bincount(row, weights=per_entry[flat], minlength=len(archs))
        # a correction can never make a subnet faster than a tenth of its table sum
        return np.maximum(out, 0.1 * raw)

    def linear_costs(self) -> tuple[float, dict[str, float]]:
        """(intercept, cost of each table entry): the calibrated prediction of a subnet is the intercept
        plus the costs of its ops, exactly (every calibration is linear in the op counts), before the
        floor `predict` applies (a tenth of the raw sum). What a differentiable search needs: the
        expected latency under a distribution over ops is the intercept plus expected costs."""
        self._key_index()
        cal = self.calibration
        keys = list(self.table.entries)
        median = self._median
        if cal is None or cal.method == "raw":
            return 0.0, dict(zip(keys, median.tolist(), strict=True))
        coef = np.asarray(cal.coef, dtype=float)
        names = list(cal.feature_names)
        col = {n: i for i, n in enumerate(names)}
        intercept = float(coef[col["intercept_ms"]]) if "intercept_ms" in col else 0.0
        per_op = np.full(len(keys), float(coef[col["n_ops"]]) if "n_ops" in col else 0.0)
        if "sum_ms" in col:
            per_op += float(coef[col["sum_ms"]]) * median
        else:  # per-type sums (and, for op-attributes, the attribute counts)
            type_scale = np.array([coef[col[f"sum_ms[{t}]"]] for t in self.op_types])
            per_op += type_scale[self._type_id] * median
            if cal.method == "op-attributes":
                start = len(self.op_types) + 2
                per_op += self._key_attributes @ coef[start:]
        return intercept, dict(zip(keys, per_op.tolist(), strict=True))

    def fit(self, archs: Sequence[dict], measured_ms: Iterable[float], *, methods: Sequence[str] = METHODS,
            provenance: dict[str, Any] | None = None) -> LatencyPredictor:
        """Choose and fit the calibration with the least leave-one-out relative error."""
        y = measured_latencies(archs, measured_ms, minimum=3, field="measured_ms", count_field="calib_n")
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise InputError(f"methods must be a non-empty subset of {list(METHODS)}, got {list(methods)}",
                             field="methods")
        fits: dict[str, tuple[np.ndarray, list[str], float]] = {}
        ridge_alpha = None
        for method in methods:
            X, names = self.features(archs, method)
            if method == "raw":
                coef = np.ones(1)
                err = trimmed_rms(np.abs(X[:, 0] / y - 1))
            elif method == "op-attributes":
                free = len(self.op_types) + 2  # the per-type columns; the attribute counts are penalised
                if free >= y.size - 1:
                    continue
                coef, err, alpha = relative_ridge(X[:, :free], X[:, free:], y)
                ridge_alpha = alpha
            elif X.shape[1] >= y.size - 1:
                continue  # too few measurements for this many parameters
            else:
                coef, err = relative_least_squares(X, y)
            fits[method] = (coef, names, err)
        chosen = min(fits, key=lambda m: fits[m][2])
        for method in fits:  # prefer the simplest candidate that is about as good
            if fits[method][2] <= fits[chosen][2] * (1 + _SIMPLER_MARGIN) + 1e-9:
                chosen = method
                break
        coef, names, _ = fits[chosen]
        self.calibration = Calibration(
            method=chosen, coef=[float(c) for c in coef], feature_names=names,
            loo_rel_rmse={m: round(f[2], 6) for m, f in fits.items()},
            provenance={
                "n_measured": int(y.size),
                "fitted": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
                "table": Path(self.table.path).name if self.table.path else None,
                "table_sha256": table_digest(self.table),
                "table_profile": self.table.profile_name,
                "table_space": self.table.space,
                "selection": "least leave-one-out relative RMSE (worst tenth left out) of a robust fit; "
                             f"a simpler candidate within {int(_SIMPLER_MARGIN * 100)} % of the best is preferred",
                **({"ridge_alpha": ridge_alpha} if chosen == "op-attributes" else {}),
                **(provenance or {}),
            },
        )
        return self

    def score(self, archs: Sequence[dict], measured_ms: Iterable[float]) -> float:
        """Share of `archs` predicted within +-10 % of the measured latency."""
        return latency_metrics(self.predict(archs), measured_ms)["within_10pct"]

    # --- persistence -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the calibration (JSON) beside the table, or at `path`."""
        if self.calibration is None:
            raise RuntimeError("nothing to save: this predictor has no calibration; call fit() first")
        if path is None:
            if not self.table.path:
                raise ValueError("the table has no path; pass the calibration path explicitly")
            path = calibration_path(self.table.path)
        write_or_rescue(path, json_bytes(self.calibration.to_dict()),
                        what="latency calibration")
        return Path(path)


def op_attributes(key: str) -> list[str]:
    """What an op key says of its op, as features: its type, each field, and each pair of fields.

    `mbconv|i8x14x14|o16x7x7|k5|e6|s2|se1|relu|res0` gives `mbconv`, `mbconv:k5`, `mbconv:i8x14x14`, ...,
    and `mbconv:k5&e6`, `mbconv:i8x14x14&k5`, ...: a kernel size at one input shape, an expansion with
    squeeze-excitation, and so on.
    """
    op_type, *fields = key.split("|")
    out = [op_type, *(f"{op_type}:{f}" for f in fields)]
    out += [f"{op_type}:{a}&{b}" for i, a in enumerate(fields) for b in fields[i + 1:]]
    return out


def _attribute_matrix(keys: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The attribute vocabulary of a table's keys and each key's 0/1 row over it."""
    per_key = [op_attributes(k) for k in keys]
    names = sorted({a for attrs in per_key for a in attrs})
    col = {a: j for j, a in enumerate(names)}
    M = np.zeros((len(keys), len(names)))
    for i, attrs in enumerate(per_key):
        M[i, [col[a] for a in attrs]] = 1.0
    return names, M


def _hashable(value: Any) -> Any:
    """An arch field as a cache key: lists (nested too, as a cell's edge ops per stage) become tuples."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(_hashable(v) for v in value)
    return value
