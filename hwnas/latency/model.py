"""One latency-model interface: `predict(archs) -> ms`, from a latency table or a whole-network model.

- `LatencyPredictor`: a per-op latency table summed over a subnet's ops, with its calibration
  (fitted by `hwnas validate` on whole-subnet measurements) where one exists.
- `WholeNetworkLatencyRegressor`: learned from end-to-end timings only (`hwnas fit-latency --out`),
  for a device that can be timed whole but not profiled op by op.

`load_latency_model(path)` reads either file; both satisfy `hwnas.protocols.LatencyModel` and say
which space they predict (`space_name`, `space`) and whether they are fitted to whole-subnet
measurements (`calibrated`).
"""

from __future__ import annotations

import os
from typing import Any

from hwnas.errors import InputError
from hwnas.io import read_json
from hwnas.protocols import LatencyModel, check_protocol

TABLE_KIND = "hwnas-latency-table"
WHOLE_NETWORK_KIND = "hwnas-whole-network-latency-model"


def load_latency_model(path: str | os.PathLike, *, field: str = "latency_model") -> Any:
    """The latency model a file holds: a latency table (with its calibration beside it, if any)
    or a saved whole-network model; anything else is an InputError naming the file."""
    try:
        doc = read_json(path, what="latency table or latency model")
    except InputError as exc:  # a missing or malformed file: say which input it was given as
        raise InputError(exc.message, path=exc.path, field=field) from exc
    kind = doc.get("kind") if isinstance(doc, dict) else None
    if kind == WHOLE_NETWORK_KIND:
        from hwnas.latency.fit import WholeNetworkLatencyRegressor

        model = WholeNetworkLatencyRegressor.from_dict(doc, source=str(path))
    elif kind == TABLE_KIND:
        from hwnas.latency.predictor import LatencyPredictor

        model = LatencyPredictor.load(path)
    else:
        raise InputError(f"kind {kind!r}: expected a latency table ({TABLE_KIND!r}, written by `hwnas profile`) "
                         f"or a latency model ({WHOLE_NETWORK_KIND!r}, written by `hwnas fit-latency --out`)",
                         path=str(path), field=field)
    check_protocol(model, LatencyModel, what="latency model", field=field, path=str(path))
    return model
