"""Few-shot latency prediction from whole-network measurements only.

For a device where per-op profiling is impossible (no access to its runtime, only
end-to-end timings of a few subnets), `WholeNetworkLatencyRegressor` learns latency
from the architecture of the once-for-all MobileNetV3 subnet: per-stage depth,
whole-network MACs and activation volume, and per-stage MACs and activation volume,
in three groups whose ridge penalties are chosen separately by leave-one-out error
(so a launch-bound batch-1 device keeps the depths and drops the MACs, a
compute-bound one keeps both), fitted for relative error with robust reweighting.

`fit_latency(csv, target, train_size)` fits it on `train_size` random rows of a CSV of
measured subnets and scores it on all the other rows.
"""

from __future__ import annotations

import csv
import datetime as _dt
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import InputError
from hwnas.io import check_writable, json_bytes, read_json, write_or_rescue
from hwnas.space import get_space
from hwnas.space.layers import conv_out_size, make_divisible
from hwnas.stats import RidgeFit, grouped_ridge_loo, latency_metrics, tukey_weights, weighted_ridge_loo


def measured_latencies(archs: Sequence[dict], values: Iterable[float], *, minimum: int, field: str,
                       count_field: str) -> np.ndarray:
    """Latencies (ms) paired with `archs`, checked: one per arch, at least `minimum`, positive and finite."""
    y = np.asarray(list(values), dtype=float)
    if len(archs) != y.size:
        raise InputError(f"got {len(archs)} architectures but {y.size} latencies", field=field)
    if y.size < minimum:
        raise InputError(f"need at least {minimum} measured subnets, got {y.size}", field=count_field)
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise InputError("latencies must be positive finite numbers (ms)", field=field)
    return y

SCHEMA_VERSION = 1

# the OFA MobileNetV3-Large subnets (width 1.0) a whole-network CSV describes: the `mbv3` space's geometry
_MBV3 = None


def mbv3_space() -> Any:
    """The `mbv3` space at its defaults, whose stages, widths, strides and choices the features follow."""
    global _MBV3
    if _MBV3 is None:
        _MBV3 = get_space("mbv3")
    return _MBV3


@dataclass(frozen=True)
class BlockCost:
    """Cost of one active inverted-residual block of a subnet."""

    stage: int
    kernel: int
    expand: int
    h_in: int
    h_out: int
    c_in: int
    c_mid: int
    c_out: int
    se: bool

    @property
    def pw_macs(self) -> float:
        return float(self.h_in**2 * self.c_in * self.c_mid + self.h_out**2 * self.c_mid * self.c_out)

    @property
    def dw_macs(self) -> float:
        return float(self.h_out**2 * self.c_mid * self.kernel**2)

    @property
    def se_macs(self) -> float:
        return float(2 * self.c_mid * make_divisible(self.c_mid // 4)) if self.se else 0.0

    @property
    def activation_volume(self) -> float:
        """Elements written by the block's layers (the memory traffic a GPU kernel pays)."""
        return float(self.h_in**2 * self.c_mid + 2 * self.h_out**2 * self.c_mid + self.h_out**2 * self.c_out)


def check_mbv3_arch(arch: dict, *, where: str = "architecture") -> None:
    """Raise InputError unless `arch` is an OFA MobileNetV3 dict {"r", "d"[5], "k"[20], "e"[20]}
    whose choices the `mbv3` space allows (any resolution >= 32)."""
    space = mbv3_space()
    if not isinstance(arch, dict):
        raise InputError(f"expected a dict with keys r, d, k, e, got {type(arch).__name__}", path=where)
    for key, length in (("d", space.n_stages), ("k", space.n_slots), ("e", space.n_slots)):
        value = arch.get(key)
        if not isinstance(value, (list, tuple)) or len(value) != length:
            raise InputError(f"expected a list of {length} integers, got {value!r}", path=where, field=key)
    r = arch.get("r")
    if not isinstance(r, (int, np.integer)) or r < 32:
        raise InputError(f"expected an integer resolution >= 32, got {r!r}", path=where, field="r")
    for key, what, allowed in (("d", "depth", space.depths), ("k", "kernel", space.kernels),
                               ("e", "expand ratio", space.expands)):
        if any(int(v) not in allowed for v in arch[key]):
            raise InputError(f"each {what} must be one of {', '.join(map(str, allowed))}, got {arch[key]!r}",
                             path=where, field=key)


def mbv3_blocks(arch: dict) -> list[BlockCost]:
    """The active inverted-residual blocks of an OFA MobileNetV3 subnet, with their shapes."""
    space = mbv3_space()
    max_depth = max(space.depths)
    h = conv_out_size(int(arch["r"]), space.layout.stem_stride)
    c_in = space.first_block_width  # the first block keeps the stem's size and width
    blocks = []
    for stage, (layout, width) in enumerate(zip(space.layout.stages, space.stage_widths, strict=True)):
        for j in range(int(arch["d"][stage])):
            slot = stage * max_depth + j
            h_out = conv_out_size(h, layout.stride) if j == 0 else h
            c_mid = make_divisible(c_in * int(arch["e"][slot]))
            blocks.append(
                BlockCost(stage, int(arch["k"][slot]), int(arch["e"][slot]), h, h_out, c_in, c_mid, width, layout.se)
            )
            h, c_in = h_out, width
    return blocks


REFERENCE_FEATURES = ("pw_macs", "dw_macs", "se_macs", "activation_volume", "n_blocks", "r2", "total_macs")


def mbv3_reference_features(arch: dict) -> np.ndarray:
    """Seven whole-network FLOP-like numbers: the baseline a finer model has to beat."""
    blocks = mbv3_blocks(arch)
    r = int(arch["r"])
    pw = sum(b.pw_macs for b in blocks)
    dw = sum(b.dw_macs for b in blocks)
    se = sum(b.se_macs for b in blocks)
    act = sum(b.activation_volume for b in blocks)
    return np.array([pw, dw, se, act, len(blocks), r * r, pw + dw + se], dtype=float)


def mbv3_stage_feature_names() -> list[str]:
    names = ["r2", "r"]
    for s in range(mbv3_space().n_stages):
        names += [f"s{s}_depth", f"s{s}_pw_macs", f"s{s}_dw_macs", f"s{s}_act", f"s{s}_mid_channels"]
    return names


def mbv3_stage_features(arch: dict) -> np.ndarray:
    """Per-stage depth, MACs and activation volume of one subnet, plus the resolution."""
    r = int(arch["r"])
    feats = [float(r * r), float(r)]
    per_stage: list[list[BlockCost]] = [[] for _ in range(mbv3_space().n_stages)]
    for b in mbv3_blocks(arch):
        per_stage[b.stage].append(b)
    for blocks in per_stage:
        feats += [
            float(len(blocks)),
            sum(b.pw_macs for b in blocks),
            sum(b.dw_macs for b in blocks),
            sum(b.activation_volume for b in blocks),
            float(sum(b.c_mid for b in blocks)),
        ]
    return np.array(feats, dtype=float)


def mbv3_reference_depth_features(arch: dict) -> np.ndarray:
    """The seven whole-network numbers plus the depth of each stage (kernel launches at batch 1)."""
    return np.concatenate([mbv3_reference_features(arch), np.asarray(arch["d"], dtype=float)])


def mbv3_grouped_feature_names() -> list[str]:
    names = [f"s{s}_depth" for s in range(mbv3_space().n_stages)]
    names += ["pw_macs", "dw_macs", "se_macs", "activation_volume", "total_macs", "r2", "r"]
    for s in range(mbv3_space().n_stages):
        names += [f"s{s}_pw_macs", f"s{s}_dw_macs", f"s{s}_act", f"s{s}_mid_channels"]
    return names


def mbv3_grouped_features(arch: dict) -> np.ndarray:
    """Per-stage depth, whole-network MACs / activation volume / resolution, per-stage MACs."""
    ref = mbv3_reference_features(arch)
    stage = mbv3_stage_features(arch).reshape(-1)
    per_stage = stage[2:].reshape(mbv3_space().n_stages, 5)[:, 1:]  # drop each stage's depth (in group 0)
    return np.concatenate([np.asarray(arch["d"], dtype=float), ref[[0, 1, 2, 3, 6, 5]], [float(arch["r"])],
                           per_stage.reshape(-1)])


# group of each mbv3-grouped feature: 0 depth (kernel launches), 1 whole network, 2 per stage
def mbv3_grouped_groups() -> np.ndarray:
    n = mbv3_space().n_stages
    return np.array([0] * n + [1] * 7 + [2] * (4 * n))

# name -> (features of one arch, feature names)
FEATURE_SETS = {
    "mbv3-reference": (mbv3_reference_features, lambda: list(REFERENCE_FEATURES)),
    "mbv3-reference-depth": (
        mbv3_reference_depth_features,
        lambda: list(REFERENCE_FEATURES) + [f"s{s}_depth" for s in range(mbv3_space().n_stages)],
    ),
    "mbv3-stage": (mbv3_stage_features, mbv3_stage_feature_names),
    "mbv3-grouped": (mbv3_grouped_features, mbv3_grouped_feature_names),
}
# feature sets whose columns fall into groups with a penalty each (the others: one penalty)
FEATURE_GROUPS = {"mbv3-grouped": mbv3_grouped_groups}
DEFAULT_FEATURE_SETS = ("mbv3-grouped",)


def feature_matrix(archs: Sequence[dict], feature_set: str) -> np.ndarray:
    """(n, p) features of `archs` for one named feature set."""
    if feature_set not in FEATURE_SETS:
        raise InputError(f"unknown feature set {feature_set!r}; expected one of {sorted(FEATURE_SETS)}",
                         field="feature_set")
    fn = FEATURE_SETS[feature_set][0]
    return np.array([fn(a) for a in archs], dtype=float).reshape(len(archs), -1)


# --- the estimator ---------------------------------------------------------------------------
_LOG_LO, _LOG_HI = math.log(0.9), math.log(1.1)


def _robust_relative_ridge(X: np.ndarray, y: np.ndarray, feature_set: str, tukey_c: float,
                           iterations: int = 10) -> tuple[RidgeFit, np.ndarray]:
    """Ridge on latency weighted for relative error, refitted with Tukey weights on log residuals.

    Returns the fit and the leave-one-out log residuals log(y) - log(yhat_(-i)).
    """
    base = 1.0 / y**2  # squared relative error, so fast and slow subnets count alike
    w = base.copy()
    for _ in range(iterations):
        if feature_set in FEATURE_GROUPS:
            fit, loo = grouped_ridge_loo(X, y, w, FEATURE_GROUPS[feature_set](), feature_set=feature_set)
        else:
            fit, loo = weighted_ridge_loo(X, y, w, feature_set=feature_set)
        log_res = np.log(y) - np.log(np.maximum(fit.predict(X), 1e-9))
        # timings far off the bulk (a slow GPU clock state, a noisy run) stop pulling the fit
        w = base * tukey_weights(log_res, tukey_c, centred=True, min_spread=0.01, floor=1e-3)
    loo_log = np.log(y) - np.log(np.maximum(y - loo, 1e-9))
    return fit, loo_log


def window_offset(log_residuals: np.ndarray, bandwidth: float = 0.008) -> float:
    """Log-offset that puts the most residuals inside the +-10 % window (smoothed count).

    A prediction p is within +-10 % of y when log y - log p lies in [-log 1.1, -log 0.9];
    with bimodal timings (two clock states) the best point is not the mean but the place
    whose window covers the most mass. The window's edges are smoothed over `bandwidth`
    (log units): wider smoothing blurs the sharp fast-timing peak and pulls the offset
    below the one that counts most rows.
    """
    from scipy.special import expit

    r = np.asarray(log_residuals, float)
    grid = np.linspace(r.min() - 0.2, r.max() + 0.2, 801)
    cover = np.array([np.sum(expit((r - (c - _LOG_HI)) / bandwidth) * expit(((c - _LOG_LO) - r) / bandwidth))
                      for c in grid])
    best = grid[cover >= cover.max() - 1e-9]
    return float(0.5 * (best.min() + best.max()))


class WholeNetworkLatencyRegressor:
    """Latency (ms) of a whole subnet from its architecture, learned from end-to-end timings.

    By default one ridge regression on three feature groups (per-stage depth; whole-network
    MACs, activation volume and resolution; per-stage MACs and activation volume), each
    group with its own penalty, the combination of least leave-one-out error; fitted for
    relative error with robust (Tukey) reweighting, so the slow timing cluster of a
    batch-1 GPU does not pull the fit. With several `feature_sets`, one ridge per set and
    their log predictions averaged.

    With `bags` > 1 that fit is repeated on `bags` random subsamples (`subsample` of the
    rows each) and the log predictions averaged: the per-group penalty is a discrete
    choice that a few rows make noisily, and averaging over subsamples smooths it. The
    prediction is then shifted by the offset that maximises the share within +-10 % of
    the out-of-sample residuals (out-of-bag with bags, leave-one-out without).

    >>> model = WholeNetworkLatencyRegressor().fit(archs, latency_ms)   # doctest: +SKIP
    >>> model.predict(other_archs)                                      # doctest: +SKIP
    """

    def __init__(self, feature_sets: Sequence[str] = DEFAULT_FEATURE_SETS, tukey_c: float = 2.5,
                 window_offset: bool = True, bags: int = 8, subsample: float = 0.8, seed: int = 0):
        self.feature_sets = tuple(feature_sets)
        self.tukey_c = tukey_c
        self.window_offset = window_offset
        self.bags = bags
        self.subsample = subsample
        self.seed = seed
        self.members_: list[RidgeFit] = []
        self.offset_: float = 0.0
        self.provenance: dict[str, Any] = {}

    # the latency-model interface (hwnas.latency.model): the space predicted, fitted on whole subnets
    space_name = "mbv3"
    calibrated = True

    @property
    def space(self) -> Any:
        return mbv3_space()

    def _check_params(self) -> None:
        unknown = [f for f in self.feature_sets if f not in FEATURE_SETS]
        if not self.feature_sets or unknown:
            raise InputError(f"feature_sets must be a non-empty list of {sorted(FEATURE_SETS)}, got "
                             f"{list(self.feature_sets)!r}", field="feature_sets")
        if not (isinstance(self.tukey_c, (int, float)) and self.tukey_c > 0):
            raise InputError(f"tukey_c must be a positive number, got {self.tukey_c!r}", field="tukey_c")
        if not (isinstance(self.bags, (int, np.integer)) and self.bags >= 1):
            raise InputError(f"bags must be a positive integer, got {self.bags!r}", field="bags")
        if not (isinstance(self.subsample, (int, float)) and 0 < self.subsample < 1):
            raise InputError(f"subsample must be a fraction in (0, 1), got {self.subsample!r}", field="subsample")

    def _fit_members(self, features: dict[str, np.ndarray], y: np.ndarray,
                     iterations: int) -> tuple[list[RidgeFit], np.ndarray]:
        """One robust ridge per feature set on rows `y`; their mean leave-one-out log residuals."""
        members, loo_logs = [], []
        for fs, X in features.items():
            fit, loo_log = _robust_relative_ridge(X, y, fs, self.tukey_c, iterations=iterations)
            members.append(fit)
            loo_logs.append(loo_log)
        return members, np.mean(loo_logs, axis=0)

    def fit(self, archs: Sequence[dict], latency_ms: Iterable[float]) -> WholeNetworkLatencyRegressor:
        self._check_params()
        y = measured_latencies(archs, latency_ms, minimum=8, field="latency_ms", count_field="train_size")
        for i, a in enumerate(archs):
            check_mbv3_arch(a, where=f"architecture #{i}")
        features = {fs: feature_matrix(archs, fs) for fs in self.feature_sets}
        n = y.size
        if self.bags == 1:
            self.members_, residuals = self._fit_members(features, y, iterations=10)
        else:
            rng = np.random.default_rng(self.seed)
            size = min(n - 1, max(2, int(round(self.subsample * n))))
            members: list[RidgeFit] = []
            oob_sum, oob_count = np.zeros(n), np.zeros(n)
            for _ in range(self.bags):
                rows = np.sort(rng.choice(n, size, replace=False))
                out = np.setdiff1d(np.arange(n), rows)
                # 5 reweighting rounds: the weights settle by then, and there are `bags` fits to pay for
                bag, _ = self._fit_members({fs: X[rows] for fs, X in features.items()}, y[rows], iterations=5)
                members += bag
                oob_sum[out] += np.mean([np.log(np.maximum(m.predict(features[m.feature_set][out]), 1e-9))
                                         for m in bag], axis=0)
                oob_count[out] += 1
            self.members_ = members
            seen = oob_count > 0
            residuals = np.log(y[seen]) - oob_sum[seen] / oob_count[seen]
        self.offset_ = window_offset(residuals) if self.window_offset else 0.0
        self.provenance = {"n_train": int(n), "fitted": _now_iso(),
                           "method": "ridge per feature set (one penalty per feature group), relative-error "
                                     "weights, Tukey reweighting, leave-one-out penalties, averaged over "
                                     "subsamples, +-10 % window offset on out-of-sample residuals"}
        return self

    def _require_fitted(self) -> None:
        if not self.members_:
            raise RuntimeError("this WholeNetworkLatencyRegressor is not fitted yet; call fit(archs, latency_ms)")

    def predict(self, archs: Sequence[dict]) -> np.ndarray:
        self._require_fitted()
        if len(archs) == 0:
            return np.zeros(0)
        features: dict[Any, np.ndarray] = {}  # the bagged members share feature sets: build each matrix once
        logs = []
        for m in self.members_:
            if m.feature_set not in features:
                features[m.feature_set] = feature_matrix(archs, m.feature_set)
            logs.append(np.log(np.maximum(m.predict(features[m.feature_set]), 1e-9)))
        return np.exp(np.mean(logs, axis=0) + self.offset_)

    def score(self, archs: Sequence[dict], latency_ms: Iterable[float]) -> float:
        """Share of `archs` predicted within +-10 % of the measured latency."""
        return latency_metrics(self.predict(archs), latency_ms)["within_10pct"]

    # --- persistence (JSON, no pickle) ---------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        self._require_fitted()
        return {"schema_version": SCHEMA_VERSION, "kind": "hwnas-whole-network-latency-model", "space": "mbv3",
                "params": {"feature_sets": list(self.feature_sets), "tukey_c": self.tukey_c,
                           "window_offset": self.window_offset, "bags": self.bags, "subsample": self.subsample,
                           "seed": self.seed},
                "members": [m.to_dict() for m in self.members_], "offset": self.offset_,
                "provenance": self.provenance}

    @classmethod
    def from_dict(cls, d: Any, source: str = "<model>") -> WholeNetworkLatencyRegressor:
        if not isinstance(d, dict) or d.get("kind") != "hwnas-whole-network-latency-model":
            raise InputError("not an hwnas whole-network latency model (written by `hwnas fit-latency --out`)",
                             path=source, field="kind")
        if d.get("schema_version") != SCHEMA_VERSION:
            raise InputError(f"unsupported schema_version {d.get('schema_version')!r}; expected {SCHEMA_VERSION}",
                             path=source, field="schema_version")
        try:
            model = cls(**d["params"])
            model.members_ = [RidgeFit.from_dict(m) for m in d["members"]]
            model.offset_ = float(d["offset"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"malformed model ({type(exc).__name__}: {exc})", path=source) from exc
        model.provenance = dict(d.get("provenance", {}))
        return model

    def save(self, path: str | os.PathLike) -> None:
        write_or_rescue(path, json_bytes(self.to_dict()), what="latency model")

    @classmethod
    def load(cls, path: str | os.PathLike) -> WholeNetworkLatencyRegressor:
        return cls.from_dict(read_json(path, what="whole-network latency model"), source=str(path))


def reference_flops_fit(train_archs: Sequence[dict], train_ms: np.ndarray, test_archs: Sequence[dict]) -> np.ndarray:
    """Baseline: ordinary least squares on the seven FLOP-like features (with an intercept)."""
    A = np.c_[np.ones(len(train_archs)), feature_matrix(train_archs, "mbv3-reference")]
    coef, *_ = np.linalg.lstsq(A, np.asarray(train_ms, float), rcond=None)
    return np.c_[np.ones(len(test_archs)), feature_matrix(test_archs, "mbv3-reference")] @ coef


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# --- CSV of measured subnets ------------------------------------------------------------------
ARCH_COLUMNS = ("r", "d", "ks", "e")


def read_arch_latency_csv(path: str | os.PathLike, target: str) -> tuple[list[dict], np.ndarray]:
    """Architectures (columns r, d, ks, e; dash-separated lists) and the latency column `target`."""
    path = Path(path)
    if not path.is_file():
        raise InputError("CSV file not found", path=str(path))
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in ARCH_COLUMNS if c not in header]
            if missing:
                raise InputError(f"missing architecture column(s) {missing}; expected columns r, d, ks, e "
                                 f"(found {header})", path=str(path), field=missing[0])
            if target not in header:
                latency_cols = [c for c in header if c not in ARCH_COLUMNS and c != "idx"]
                raise InputError(f"no such column; available latency columns: {latency_cols}",
                                 path=str(path), field=target)
            archs, values = [], []
            for line, row in enumerate(reader, start=2):
                archs.append(_parse_arch_row(row, path, line))
                values.append(_parse_latency(row.get(target), path, line, target))
    except UnicodeDecodeError as exc:
        raise InputError(f"not a text CSV file ({exc})", path=str(path)) from exc
    except csv.Error as exc:
        raise InputError(f"malformed CSV ({exc})", path=str(path)) from exc
    if not archs:
        raise InputError("the CSV has a header but no rows", path=str(path))
    return archs, np.asarray(values, dtype=float)


def _parse_arch_row(row: dict, path: Path, line: int) -> dict:
    where = f"{path}, line {line}"

    def ints(col: str) -> list[int]:
        text = row.get(col)
        try:
            return [int(x) for x in str(text).strip().split("-")]
        except ValueError:
            raise InputError(f"expected dash-separated integers, got {text!r}", path=where, field=col) from None

    try:
        r = int(str(row.get("r")).strip())
    except ValueError:
        raise InputError(f"expected an integer resolution, got {row.get('r')!r}", path=where, field="r") from None
    arch = {"r": r, "d": ints("d"), "k": ints("ks"), "e": ints("e")}
    check_mbv3_arch(arch, where=where)
    return arch


def _parse_latency(text: Any, path: Path, line: int, col: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"expected a positive latency in ms, got {text!r}", path=f"{path}, line {line}", field=col)
    return value


# --- the verb ---------------------------------------------------------------------------------
def fit_latency(csv_path: str | os.PathLike, target: str, train_size: int, *, seed: int = 0, splits: int = 3,
                space: str = "mbv3", out: str | os.PathLike | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Fit on `train_size` random rows, score on all other rows; repeat over `splits` random splits.

    Returns the mean metrics over splits (mape, within_10pct, kendall_tau), the per-split
    figures, and the same for the FLOPs least-squares reference. With `out`, the model of
    the first split is saved as JSON with its provenance (an existing file only with `overwrite`).
    """
    if out is not None:
        if Path(out).exists() and not overwrite:
            raise InputError("a file exists here; pass --overwrite to replace it", path=str(out), field="--out")
        check_writable(out, field="--out")
    if space != "mbv3":
        raise InputError(f"unsupported space {space!r}; fit-latency reads OFA MobileNetV3 subnets: expected 'mbv3'",
                         field="space")
    if not isinstance(splits, int) or splits < 1:
        raise InputError(f"expected a positive number of splits, got {splits!r}", field="splits")
    archs, y = read_arch_latency_csv(csv_path, target)
    if not isinstance(train_size, int) or not 8 <= train_size <= len(archs) - 1:
        raise InputError(f"expected 8 <= train-size <= {len(archs) - 1} (the CSV has {len(archs)} rows), "
                         f"got {train_size!r}", field="train_size")
    per_split, per_split_ref = [], []
    for split in range(splits):
        order = np.random.default_rng([seed, split]).permutation(len(archs))
        train, test = order[:train_size], order[train_size:]
        train_archs, test_archs = [archs[i] for i in train], [archs[i] for i in test]
        model = WholeNetworkLatencyRegressor().fit(train_archs, y[train])
        per_split.append(latency_metrics(model.predict(test_archs), y[test]))
        per_split_ref.append(latency_metrics(reference_flops_fit(train_archs, y[train], test_archs), y[test]))
        if split == 0 and out is not None:
            model.provenance.update({"csv": str(csv_path), "target": target, "seed": seed,
                                     "train_rows": [int(i) for i in train]})
            model.save(out)
    keys = ("mape", "within_10pct", "kendall_tau")
    result: dict[str, Any] = {"csv": str(csv_path), "target": target, "train": train_size,
                              "test": len(archs) - train_size, "splits": splits, "seed": seed}
    result.update({k: float(np.mean([m[k] for m in per_split])) for k in keys})
    result["reference"] = {k: float(np.mean([m[k] for m in per_split_ref])) for k in keys}
    result["reference"]["method"] = "least squares on 7 FLOP-like features"
    result["per_split"] = [{k: m[k] for k in keys} for m in per_split]
    result["reference_per_split"] = [{k: m[k] for k in keys} for m in per_split_ref]
    if out is not None:
        result["model"] = str(out)
    return result
