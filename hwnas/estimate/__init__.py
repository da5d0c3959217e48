"""Accuracy estimators for search: supernet evaluation, an accuracy predictor, zero-cost proxies.

    est = get_estimator("supernet", supernet_checkpoint="supernet.pt")     # measured, BN recalibrated
    est = get_estimator("predictor", predictor_path="acc.pt")              # fitted on the arch encoding
    est = get_estimator("zero-cost", space=space, proxy="synflow")         # training-free score
    est.predict([arch, ...])  -> np.ndarray (accuracy in %, or the proxy score)
"""

from __future__ import annotations

import os
from pathlib import Path

from hwnas.errors import InputError
from hwnas.estimate.features import arch_features
from hwnas.estimate.predictor import AccuracyPredictor
from hwnas.estimate.supernet import SupernetEstimator
from hwnas.estimate.zero_cost import ZeroCostEstimator, naswot_score, synflow_score
from hwnas.protocols import EstimatorLike, check_protocol
from hwnas.registry import ESTIMATORS


def register_estimator(name: str):
    """Decorator: register an estimator factory `factory(supernet_checkpoint, space, **options)` under `name`."""
    return ESTIMATORS.register(name)


def estimator_names() -> list[str]:
    return ESTIMATORS.names()


def get_estimator(name: str, supernet_checkpoint: str | os.PathLike | None = None, space=None, **kw):
    """An estimator by name (built-in or from a plugin), checked against `EstimatorLike`; unknown
    names and missing inputs are InputErrors."""
    factory = ESTIMATORS.get(name)
    if supernet_checkpoint is not None and space is not None:
        _check_same_space(supernet_checkpoint, space)
    estimator = factory(supernet_checkpoint, space, **kw)
    check_protocol(estimator, EstimatorLike, what=f"accuracy estimator {name!r}", field="estimator")
    return estimator


@register_estimator("supernet")
def _supernet_estimator(supernet_checkpoint, space, **kw):
    return SupernetEstimator(supernet_checkpoint, **kw)


@register_estimator("predictor")
def _predictor_estimator(supernet_checkpoint, space, **kw):
    path = kw.pop("predictor_path", None)
    if path is None and supernet_checkpoint is not None:
        path = default_predictor_path(supernet_checkpoint)  # fitted once, then reused
    if path is not None and Path(path).exists():
        return AccuracyPredictor.load(path, space=space)
    if supernet_checkpoint is None:
        raise InputError("the predictor estimator needs predictor_path (a saved predictor) or a "
                         "supernet_checkpoint to fit one on", field="predictor_path")
    predictor = fit_predictor(supernet_checkpoint, **kw)
    predictor.save(path)
    return predictor


@register_estimator("zero-cost")
def _zero_cost_estimator(supernet_checkpoint, space, **kw):
    if space is None and supernet_checkpoint is not None:
        from hwnas.train import read_checkpoint, space_from_meta

        space = space_from_meta(read_checkpoint(supernet_checkpoint), path=supernet_checkpoint)
    if space is None:
        raise InputError("the zero-cost estimator needs a space (or a supernet checkpoint)", field="space")
    return ZeroCostEstimator(space, **kw)


def default_predictor_path(supernet_checkpoint: str | os.PathLike) -> Path:
    """`C.pt` -> `C.predictor.pt`: where a predictor fitted on checkpoint C is kept."""
    p = Path(supernet_checkpoint)
    return p.with_name(p.stem + ".predictor.pt")


def _check_same_space(supernet_checkpoint: str | os.PathLike, space) -> None:
    """A supernet trained on other space options would score different networks than those searched."""
    from hwnas.train import read_checkpoint

    ckpt = read_checkpoint(supernet_checkpoint)
    config = {k: v for k, v in space.config().items() if k != "name"} if hasattr(space, "config") else None
    if ckpt["space"] != space.name or (config is not None and _normal(config) != _normal(ckpt["space_config"])):
        raise InputError(f"the supernet was trained on space '{ckpt['space']}' {ckpt['space_config']}, "
                         f"not '{space.name}' {config}; train one for this space (hwnas train)",
                         path=str(supernet_checkpoint), field="space")


def _normal(config: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()}


def default_predictor_options(space) -> dict:
    """The predictor `fit_predictor` fits: on elastic MobileNet spaces the kernel predictor (RBF +
    linear kernel ridge on the one-hot code, also per resolution, the choices as numbers and the
    closeness to the smallest and largest subnet), which ranks held-out subnets better than the
    MLP at every training-set size measured (BENCHMARKS.md); elsewhere the MLP."""
    from hwnas.estimate.features import is_elastic

    if is_elastic(space):
        return {"kind": "gp", "ordinal": True, "extreme": True, "by_resolution": True}
    return {}


def fit_predictor(supernet_checkpoint: str | os.PathLike, n_train: int = 300, seed: int = 0,
                  progress: bool = True, **estimator_kw) -> AccuracyPredictor:
    """Measure `n_train` random subnets with the supernet (validation split) and fit the
    predictor of `default_predictor_options` on them."""
    import numpy as np

    measure = SupernetEstimator(supernet_checkpoint, progress=progress, **estimator_kw)
    rng = np.random.default_rng(seed)
    archs = [measure.space.sample(rng) for _ in range(n_train)]
    return AccuracyPredictor(measure.space, seed=seed, **default_predictor_options(measure.space)).fit(
        archs, measure.predict(archs))


__all__ = [
    "AccuracyPredictor",
    "SupernetEstimator",
    "ZeroCostEstimator",
    "arch_features",
    "default_predictor_options",
    "fit_predictor",
    "estimator_names",
    "get_estimator",
    "register_estimator",
    "naswot_score",
    "synflow_score",
]
