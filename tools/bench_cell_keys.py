"""A cell space's latency table with the cell keys as they are against naive cell keys, on the same timings.

    flock /work/timing.lock hwnas profile cpu-ort-1t --space nb201-supernet --quick --out T.json
    flock /work/timing.lock hwnas validate T.json --n 30 --calib-n 30
    python tools/bench_cell_keys.py T.json

Naive keys: one key per edge that computes (not 'none' or 'skip'), whether or not its node reaches the
cell's output, and nothing for the nodes' sums. The keys as they are (`hwnas.space.spec_space.cell_keys`)
are what the exported graph computes: no dead edges, a `cellsum` key per node's additions, merged
computations once. Both are fitted (`LatencyPredictor.fit`, every calibration method, the best by
leave-one-out error) on the calibration subnets `hwnas validate` timed and scored on its held-out ones,
so the timings are the same and only the keys differ. Prints one JSON line per key set.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the hwnas beside this script

import numpy as np  # noqa: E402


class NaiveCellKeys:
    """A spec space whose cells are keyed per computing edge, dead or not, without their sums."""

    def __init__(self, space):
        self.space = space

    def __getattr__(self, name):
        return getattr(self.space, name)

    def ops(self, arch):
        from hwnas.space.layers import OpSpec
        from hwnas.space.spec_space import UNTIMED_CELL_OPS

        keys, blocks = [], self.space.blocks(arch)
        for stage in blocks:
            for b in stage:
                if b.kind == "cell":
                    shape = (b.cin, b.size, b.size)
                    keys += [OpSpec("cellop", shape, shape, op=op).key for op in b.ops if op not in UNTIMED_CELL_OPS]
                else:
                    keys += b.keys(self.space.stages[b.stage])
        return keys + self.space._head_keys(*self.space._final_shape(blocks))


def main() -> None:
    from hwnas.latency.predictor import LatencyPredictor, calibration_path
    from hwnas.latency.table import LatencyTable
    from hwnas.stats import latency_metrics

    table_path = Path(sys.argv[1])
    measured = json.loads(calibration_path(table_path).read_text())["provenance"]["measurements"]
    calib = [m["arch"] for m in measured["calibration"]]
    y_calib = np.array([m["ms"] for m in measured["calibration"]])
    held = [m["arch"] for m in measured["held_out"]]
    y_held = np.array([m["ms"] for m in measured["held_out"]])
    table = LatencyTable.load(table_path)
    space = LatencyPredictor(table).space
    for name, keyed in (("cell keys (live edges, node sums)", space), ("naive cell keys", NaiveCellKeys(space))):
        pred = LatencyPredictor(table, space=keyed)
        raw = latency_metrics(pred.predict_raw(held), y_held)
        pred.fit(calib, y_calib)
        cal = latency_metrics(pred.predict(held), y_held)
        print(json.dumps({"keys": name, "n_held_out": len(held), "method": pred.calibration.method,
                          "raw_sum_over_measured": round(float(np.median(pred.predict_raw(held) / y_held)), 3),
                          "raw": {k: round(float(v), 3) for k, v in raw.items()},
                          "calibrated": {k: round(float(v), 3) for k, v in cal.items()}}))


if __name__ == "__main__":
    main()
