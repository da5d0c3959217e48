"""hwnas: hardware-aware neural architecture search.

Profile a device into a latency table, search a once-for-all supernet for the
Pareto-optimal subnets under a latency budget, export the chosen subnet.

    import hwnas
    table = hwnas.profile("cpu-ort-1t", "mbv3-small-input", "table.json")
    run = hwnas.search("mbv3-small-input", table=table.table, budget_ms=2.0, out="run")
    bundle = hwnas.export(run.pareto, out="bundle")

The verbs (`profile`, `validate`, `fit_latency`, `train`, `search`, `bench`, `export`, `demo`)
return dataclasses whose `to_dict()` is what the CLI's `--json` prints (`hwnas.pipeline`).
Everything is imported on first use, so `import hwnas` is cheap.

Layers, each importing only from those below it (tests/test_layers.py holds this order and
enforces it, with no import cycles):

    commands, demo, cli    argument parsing + one library call each
    pipeline               the verbs: latency model, estimator, search and export joined
    export, estimate, train, search
    latency, supernet
    runtime                backends, runners, the measurement protocol, the TVM adapter
    space, data, device_profile, stats, registry, protocols, resources, io, errors
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> the module that defines it (imported when the name is first used)
_EXPORTS = {
    "profile": "hwnas.pipeline",
    "validate": "hwnas.pipeline",
    "fit_latency": "hwnas.pipeline",
    "bench": "hwnas.pipeline",
    "ProfileResult": "hwnas.pipeline",
    "ValidateResult": "hwnas.pipeline",
    "FitLatencyResult": "hwnas.pipeline",
    "TrainResult": "hwnas.pipeline",
    "SearchRun": "hwnas.pipeline",
    "BenchResult": "hwnas.pipeline",
    "BundleResult": "hwnas.pipeline",
    "get_space": "hwnas.space",
    "space_names": "hwnas.space",
    "load_profile": "hwnas.device_profile",
    "DeviceProfile": "hwnas.device_profile",
    "LatencyTable": "hwnas.latency.table",
    "LatencyPredictor": "hwnas.latency.predictor",
    "WholeNetworkLatencyRegressor": "hwnas.latency.fit",
    "load_latency_model": "hwnas.latency.model",
    "get_strategy": "hwnas.search.strategies",
    "get_estimator": "hwnas.estimate",
    "InputError": "hwnas.errors",
    "NotAvailableError": "hwnas.errors",
}
# packages that are also verbs: calling `hwnas.search(...)` runs `hwnas.pipeline.search` (hwnas.verb_module)
_VERB_PACKAGES = ("search", "export", "train", "demo")

__all__ = ["__version__", *_EXPORTS, *_VERB_PACKAGES]


def __getattr__(name: str) -> Any:
    if name in _VERB_PACKAGES:
        return importlib.import_module(f"hwnas.{name}")
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hwnas' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
