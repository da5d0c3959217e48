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

With `protocol.anchor: bracket` the two networks do not alternate call by call: each whole
measurement is divided by the anchor's measurements just before and after it (BracketedRunner).
"""

from __future__ import annotations

import time
from typing import Any

from hwnas.runtime.runner import Runner

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


# the pause between a bracket's measurements, so that one session's spinning intra-op threads have stopped
# before the next session runs. A guard, not a measured fix: on the Xeon VM, tables profiled with and without
# it had their ops' rounds disagree alike (34 % and 39 % at the 90th percentile; BENCHMARKS.md, "Bracketed anchor")
BRACKET_GAP_S = 0.02


class AnchorBracket:
    """The anchor runner of a "bracket"-anchored run and its latest measurement, shared by every
    BracketedRunner of the run: one anchor measurement closes the bracket of one entry and opens the
    next one's, so a run of N entries takes N + 1 anchor measurements, not 2 N."""

    # an anchor measurement older than this opens no bracket (something else may have run since)
    FRESH_S = 2.0

    def __init__(self, anchor: Runner, anchor_ms: float):
        if not anchor_ms > 0:
            raise ValueError(f"anchor_ms must be positive, got {anchor_ms!r}")
        self.anchor, self.anchor_ms = anchor, float(anchor_ms)
        self._last: tuple[float, float] | None = None  # (median ms, perf_counter when it ended)

    def measure_anchor(self, protocol: Any, reuse: bool) -> float:
        from hwnas.runtime.measure import measure

        if reuse and self._last is not None and time.perf_counter() - self._last[1] < self.FRESH_S:
            return self._last[0]
        median = measure(self.anchor, protocol).median_ms
        self._last = (median, time.perf_counter())
        return median


class BracketedRunner(Runner):
    """A runner measured between two measurements of the anchor; the measurement in anchor units.

    Each measurement (the whole protocol: warm-up, timed runs until the median is stable, re-measures)
    is scaled by anchor_ms / (mean of the anchor's medians measured right before and right after it).
    Unlike AnchoredRunner, the two networks never alternate call by call: a backend with a team of
    intra-op threads (onnxruntime with threads > 1) keeps its pool spinning after each call, and two
    sessions' pools alternating on two vCPUs slow each other. On the 2-vCPU Xeon VM, 40 subnets timed
    twice with 2 threads agreed at tau 0.53 anchored per call, 0.87 plain and 0.97 bracketed
    (BENCHMARKS.md, "Bracketed anchor").
    """

    def __init__(self, runner: Runner, bracket: AnchorBracket):
        self.runner, self.bracket = runner, bracket
        self.timing = runner.timing

    def run(self) -> None:
        self.runner.run()

    def warmup(self, n: int) -> None:
        self.runner.warmup(n)

    def time(self, n: int) -> list[float]:  # plain samples; `measure` uses measure_protocol instead
        return self.runner.time(n)

    def measure_protocol(self, protocol: Any) -> Any:
        """The protocol's measurement of the wrapped runner, in anchor units (called by `measure`)."""
        from hwnas.runtime.measure import measure

        before = self.bracket.measure_anchor(protocol, reuse=True)
        time.sleep(BRACKET_GAP_S)  # the anchor's thread pool stops spinning before the next session runs
        own = measure(self.runner, protocol)
        time.sleep(BRACKET_GAP_S)
        after = self.bracket.measure_anchor(protocol, reuse=False)
        return scale_measurement(own, self.bracket.anchor_ms / ((before + after) / 2),
                                 anchor_before_ms=round(before, 6), anchor_after_ms=round(after, 6))

    def close(self) -> None:
        self.runner.close()

    def describe(self) -> dict[str, Any]:
        return {**self.runner.describe(), "anchor_ms": self.bracket.anchor_ms, "anchor": "bracket"}


def scale_measurement(m: Any, factor: float, **settings: Any) -> Any:
    """A copy of Measurement `m` with every latency multiplied by `factor` (dispersion ratios unchanged)."""
    import dataclasses

    scaled = {f.name: getattr(m, f.name) * factor for f in dataclasses.fields(m) if f.name.endswith("_ms")}
    return dataclasses.replace(m, **scaled, settings={**m.settings, **settings})


def anchor_mode(value: Any) -> str | None:
    """A protocol's anchor setting as a mode: None (not anchored), "per-call" (true) or "bracket"."""
    from hwnas.device_profile import ANCHOR_MODES

    if value is True:
        return "per-call"
    return value if value in ANCHOR_MODES else None


def anchored(runner: Runner, anchor: Runner, anchor_ms: float, mode: Any,
             bracket: AnchorBracket | None = None) -> Runner:
    """`runner` timed against `anchor` in the protocol's anchor `mode` (true, "per-call" or "bracket").
    Runners of one run share one `bracket` (made here when not given)."""
    if anchor_mode(mode) == "bracket":
        return BracketedRunner(runner, bracket if bracket is not None else AnchorBracket(anchor, anchor_ms))
    return AnchoredRunner(runner, anchor, anchor_ms)


# the anchor subnet's weights: the same in every run, so every run compiles the same network (and a
# compiled-library cache serves it)
ANCHOR_WEIGHT_SEED = 0


def anchor_network(space: Any, arch: dict) -> Any:
    """The anchor subnet as a module, its weights drawn from ANCHOR_WEIGHT_SEED."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ANCHOR_WEIGHT_SEED)
        return space.build(arch).eval()


def prepare_anchor(backend: Any, space: Any, arch: dict, batch: int) -> Runner:
    """The anchor subnet compiled by `backend` for `batch` (the caller closes it)."""
    arch = space.validate(arch)
    return backend.prepare(anchor_network(space, arch), (batch, *space.input_shape(arch)))


# the anchor's own latency is the lowest median of this many rounds, started this far apart: slow spells
# of a shared host last from a tenth of a second to several seconds, so ~4 s of rounds find a quiet one
ANCHOR_ROUNDS = 8
ANCHOR_ROUND_INTERVAL_S = 0.5


def measure_anchor(anchor: Runner, protocol: Any) -> float:
    """The anchor's own latency (ms): the lowest of ANCHOR_ROUNDS round medians under `protocol`."""
    from hwnas.runtime.measure import measure_rounds

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


def table_anchor(table_path: Any) -> tuple[Any, tuple[int, ...], float, str] | None:
    """(anchor subnet module, its input shape without the batch, anchor_ms, anchor mode) of an anchored
    latency table; None for a table timed without an anchor."""
    from hwnas.latency.predictor import LatencyPredictor

    predictor = LatencyPredictor.load(table_path)
    space = predictor.space
    anchor = read_anchor(predictor.table.protocol, space, str(table_path))
    if anchor is None:
        return None
    arch, anchor_ms = anchor
    return (anchor_network(space, arch), tuple(space.input_shape(arch)), anchor_ms,
            anchor_mode(predictor.table.protocol["anchor"]))
