"""Anchored timing: every timed call paired with a call of a fixed reference network.

On a shared machine (a cloud VM) the CPU's speed changes over seconds, by half and more, as
other tenants load the host: one network timed for 20 s on a 2-vCPU EPYC guest had 1-second
medians 1.5x apart, and its thread CPU time moved with its wall time (correlation 0.98), so the
guest was slowed, not descheduled. Two timings of the same 40 subnets a minute apart then agreed
at Kendall tau 0.40; the ratio of each call to a call of a fixed network made right after it
agreed at tau 0.95 (BENCHMARKS.md, "Anchored timing").

With `protocol.anchor: true` each sample is therefore (time of the call) / (time of the next
call of the anchor network) x `anchor_ms`, where `anchor_ms` is the anchor's own latency, measured
once when the table is profiled and stored in it. Every number of such a table, and every
end-to-end measurement `hwnas validate` compares with it, is the latency at the machine speed of
the profiling run; the anchor's latency now against `anchor_ms` says how fast the machine is at
present. The slowdown must be common to both calls for the ratio to hold: with one thread it is;
a team of threads over vCPUs slowed independently is not rescued by it.
"""

from __future__ import annotations

from typing import Any

from hwnas.latency.measure import Runner

# the anchor is this draw of the table's own search space: a network made of the same kinds of ops is
# slowed like them (a fixed MobileNet-like stack of other ops, tried first, agreed with itself at tau 0.69
# where a subnet of the space reached 0.92-0.95)
ANCHOR_SEED = 12345  # not 0: validate and search draw their subnets from seed 0 by default


def anchor_arch(space: Any) -> dict:
    """The anchor subnet of `space`: its first random draw from seed ANCHOR_SEED (recorded in the table)."""
    import numpy as np

    return space.sample(np.random.default_rng(ANCHOR_SEED))


class AnchoredRunner(Runner):
    """A runner whose every timed call is followed by a call of the anchor; samples in anchor units.

    `anchor` is a prepared runner of the anchor subnet on the same backend; `anchor_ms` converts the
    ratio to milliseconds. The anchor runner belongs to the caller (one serves many runners); closing
    this runner closes only the wrapped one.
    """

    def __init__(self, runner: Runner, anchor: Runner, anchor_ms: float):
        if not anchor_ms > 0:
            raise ValueError(f"anchor_ms must be positive, got {anchor_ms!r}")
        self.runner, self.anchor, self.anchor_ms = runner, anchor, float(anchor_ms)
        self.timing = runner.timing

    def run(self) -> None:
        self.runner.run()

    def warmup(self, n: int) -> None:
        for _ in range(n):
            self.runner.run()
            self.anchor.run()

    def time(self, n: int) -> list[float]:
        samples = []
        for _ in range(n):
            own = self.runner.time(1)[0]
            ref = self.anchor.time(1)[0]
            samples.append(own / ref * self.anchor_ms)
        return samples

    def close(self) -> None:
        self.runner.close()

    def describe(self) -> dict[str, Any]:
        return {**self.runner.describe(), "anchor_ms": self.anchor_ms}


def prepare_anchor(backend: Any, space: Any, arch: dict, batch: int) -> Runner:
    """The anchor subnet compiled by `backend` for `batch` (the caller closes it)."""
    arch = space.validate(arch)
    return backend.prepare(space.build(arch), (batch, *space.input_shape(arch)))


# the anchor's own latency is the lowest median of this many rounds, started this far apart: slow spells
# of a shared host last from a tenth of a second to several seconds, so ~4 s of rounds find a quiet one
ANCHOR_ROUNDS = 8
ANCHOR_ROUND_INTERVAL_S = 0.5


def measure_anchor(anchor: Runner, protocol: Any) -> float:
    """The anchor's own latency (ms): the lowest of ANCHOR_ROUNDS round medians under `protocol`."""
    from hwnas.latency.measure import measure_rounds

    results = measure_rounds({"anchor": anchor}, protocol, ANCHOR_ROUNDS, min_round_interval_s=ANCHOR_ROUND_INTERVAL_S)
    return float(results["anchor"][0].median_ms)


def read_anchor(protocol: dict, space: Any, source: str) -> tuple[dict, float] | None:
    """(anchor arch, anchor_ms) of a table's protocol record; None for a table timed without an anchor.
    A record that is anchored but lacks either is an InputError naming the field."""
    from hwnas.errors import InputError

    if not protocol.get("anchor"):
        return None
    anchor_ms = protocol.get("anchor_ms")
    if isinstance(anchor_ms, bool) or not isinstance(anchor_ms, (int, float)) or not anchor_ms > 0:
        raise InputError(f"an anchored table needs the anchor's latency, a positive number of ms; got {anchor_ms!r}",
                         path=source, field="protocol.anchor_ms")
    try:
        arch = space.validate(protocol.get("anchor_arch"))
    except (InputError, TypeError, KeyError, ValueError) as exc:
        raise InputError(f"an anchored table needs its anchor subnet, an architecture of its space: {exc}",
                         path=source, field="protocol.anchor_arch") from exc
    return arch, float(anchor_ms)


def table_anchor(table_path: Any) -> tuple[Any, tuple[int, ...], float] | None:
    """(anchor subnet module, its input shape without the batch, anchor_ms) of an anchored latency table;
    None for a table timed without an anchor."""
    from hwnas.latency.predictor import LatencyPredictor

    predictor = LatencyPredictor.load(table_path)
    space = predictor.space
    anchor = read_anchor(predictor.table.protocol, space, str(table_path))
    if anchor is None:
        return None
    arch, anchor_ms = anchor
    return space.build(arch), tuple(space.input_shape(arch)), anchor_ms
