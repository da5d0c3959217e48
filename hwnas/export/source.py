"""Where the subnet to export comes from: a search run's pareto.json and a pick, or an arch given
directly with its supernet checkpoint; and the trained subnet itself (shared weights
extracted, BatchNorm statistics recalibrated for that subnet).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwnas.errors import InputError
from hwnas.io import read_json

PICK_FORMS = "'best-under-budget', an index into the run's pareto list, or an architecture as JSON"


@dataclass
class Selection:
    """The subnet chosen for export and what is known about it before export."""

    arch: dict
    space_name: str
    space_options: dict = field(default_factory=dict)
    supernet: str | None = None  # checkpoint path
    table: str | None = None  # latency table path (for the predicted latency)
    accuracy: float | None = None
    predicted_ms: float | None = None
    source: dict = field(default_factory=dict)
    estimator: str | None = None  # the accuracy estimator the search ranked with ("supernet", ...)


@dataclass
class TrainedSubnet:
    """A subnet extracted from a trained supernet, and what it was trained and estimated on."""

    module: Any
    space: Any
    meta: dict
    data: Any  # the hwnas.data.Dataset the supernet was trained on (its test split is never searched on)
    split: str  # the split the supernet estimator scores subnets on ("val", or "test" without one)
    eval_images: int
    accuracy: float | None = None  # on `split`, when asked for


def _entry_value(entry: dict, name: str) -> float | None:
    for part in ("objectives", "constraints"):
        value = (entry.get(part) or {}).get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def parse_arch(text: str, *, field_name: str = "arch") -> dict:
    try:
        arch = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc}); expected an architecture such as "
                         '{"r": 128, "d": [...], "k": [...], "e": [...]}', field=field_name) from exc
    if not isinstance(arch, dict):
        raise InputError(f"expected a JSON object (an architecture), got {type(arch).__name__}", field=field_name)
    return arch


def select_from_run(pareto_path: str | os.PathLike, pick: str) -> Selection:
    """The subnet `pick` names in a search run's pareto.json."""
    path = str(pareto_path)
    record = read_json(pareto_path, what="search run (pareto.json written by `hwnas search`)")
    if not isinstance(record, dict):
        raise InputError("expected a JSON object written by `hwnas search`", path=path)
    pareto = record.get("pareto")
    if not isinstance(pareto, list):
        raise InputError("missing or not a list; expected the run's Pareto set", path=path, field="pareto")
    space_name = record.get("space")
    if not isinstance(space_name, str):
        raise InputError("missing or not a space name", path=path, field="space")
    pick = str(pick).strip()
    if pick == "best-under-budget":
        entry = record.get("best_under_budget")
        if not isinstance(entry, dict):
            raise InputError(f"the run has no subnet under its budget ({record.get('budget_ms')} ms); pick an "
                             "index into 'pareto' instead", path=path, field="best_under_budget")
        how = "best-under-budget"
    elif pick.lstrip("-").isdigit():
        i = int(pick)
        if not 0 <= i < len(pareto):
            raise InputError(f"index {i} is outside the Pareto set of {len(pareto)} subnets (expected 0 to "
                             f"{len(pareto) - 1})", path=path, field="pick")
        entry = pareto[i]
        how = f"pareto[{i}]"
    elif pick.startswith("{"):
        arch = parse_arch(pick, field_name="pick")
        entry = next((e for e in pareto if e.get("arch") == arch), {"arch": arch})
        how = "arch given" + (" (in the Pareto set)" if "objectives" in entry else "")
    else:
        raise InputError(f"got {pick!r}; expected {PICK_FORMS}", field="pick")
    where = "best_under_budget" if how == "best-under-budget" else how.split(" ")[0].replace("arch", "--pick")
    if not isinstance(entry, dict) or not isinstance(entry.get("arch"), dict):
        raise InputError("the picked entry holds no 'arch' mapping", path=path, field=f"{where}.arch")
    options = record.get("space_options") or {}
    if not isinstance(options, dict):
        raise InputError(f"expected an object of space options, got {type(options).__name__}", path=path,
                         field="space_options")
    options = {k: v for k, v in options.items() if k != "name"}
    for name in ("supernet", "table"):
        if record.get(name) is not None and not isinstance(record.get(name), str):
            raise InputError(f"expected a file path or null, got {record.get(name)!r}", path=path, field=name)
    try:
        space = build_space(Selection(arch={}, space_name=space_name, space_options=options))
    except InputError as exc:
        raise InputError(str(exc), path=path, field="space") from exc
    except (TypeError, ValueError) as exc:
        raise InputError(f"space '{space_name}' does not take these options: {exc}", path=path,
                         field="space_options") from exc
    try:
        space.validate(entry["arch"])
    except InputError as exc:
        raise InputError(f"entry {where}: {exc}", path=path, field=f"{where}.arch") from exc
    return Selection(arch=entry["arch"], space_name=space_name, space_options=options,
                     supernet=record.get("supernet"), table=record.get("latency_model") or record.get("table"),
                     accuracy=_entry_value(entry, "accuracy"), predicted_ms=_entry_value(entry, "latency_ms"),
                     source={"run": str(Path(path).resolve()), "pick": how, "budget_ms": record.get("budget_ms"),
                             "objectives": entry.get("objectives"), "constraints": entry.get("constraints")},
                     estimator=record.get("estimator") if isinstance(record.get("estimator"), str) else None)


def build_space(selection: Selection) -> Any:
    from hwnas.space import get_space

    return get_space(selection.space_name, **selection.space_options)


def predicted_latency(table: str | os.PathLike, arch: dict) -> float:
    """The latency `table` predicts for `arch`: a latency table or a whole-network latency model."""
    from hwnas.latency.model import load_latency_model

    if not Path(table).is_file():
        raise InputError("latency table not found", path=str(table), field="table")
    return float(load_latency_model(table, field="table").predict([arch])[0])


def trained_subnet(checkpoint: str | os.PathLike, arch: dict, *, space_name: str | None = None,
                   recal_batches: int = 8, recal_batch_size: int = 128,
                   estimate_accuracy: bool = False) -> TrainedSubnet:
    """`arch` extracted from the supernet with its BatchNorm statistics recalibrated on the training data
    the supernet was trained on; its accuracy (on the held-out split, as search estimates it) only when
    asked for."""
    from hwnas.data import load_dataset
    from hwnas.estimate.supernet import SupernetEstimator
    from hwnas.supernet import recalibrate_bn
    from hwnas.train import load_checkpoint
    from hwnas.train.trainer import TrainSettings

    supernet, meta = load_checkpoint(checkpoint)
    if space_name is not None and meta.get("space") != space_name:
        raise InputError(f"the checkpoint was trained on space '{meta.get('space')}', not '{space_name}'",
                         path=str(checkpoint), field="space")
    space = supernet.space
    arch = space.validate(arch)
    split = "val" if (meta.get("settings") or {}).get("val_size", 1) else "test"
    data = load_dataset(TrainSettings.from_dict(meta.get("settings", {})).data)
    estimator = SupernetEstimator(supernet=supernet, meta=meta, split=split, recal_batches=recal_batches,
                                  recal_batch_size=recal_batch_size, data=data)
    accuracy = None
    if estimate_accuracy:
        accuracy = float(estimator.accuracy(arch))  # recalibrates the statistics for `arch` as well
    else:
        recalibrate_bn(supernet, estimator.recal, arch=arch)
    subnet = supernet.extract(arch).eval()
    return TrainedSubnet(module=subnet, space=space, meta=meta, data=data, split=split,
                         eval_images=estimator.eval_size, accuracy=accuracy)


def untrained_subnet(space: Any, arch: dict, *, batches: int = 4, batch_size: int = 16, seed: int = 0) -> Any:
    """`space.build(arch)` with initialised weights and BatchNorm statistics estimated on random-normal
    inputs, so its output depends on its input (freshly initialised statistics can wash the input out)."""
    import torch

    from hwnas.supernet import recalibrate_bn

    module = space.build(space.validate(arch))
    gen = torch.Generator().manual_seed(seed)
    shape = (batch_size, *space.input_shape(arch))
    recalibrate_bn(module, [torch.randn(shape, generator=gen) for _ in range(batches)])
    return module.eval()
