"""The measurement protocol: how one latency number is taken, and what is recorded with it.

A backend turns a model into a `Runner` (compile once); `measure(runner, protocol)` then
times it: warm-up runs, then timed runs until the median is stable (the 95 % confidence
interval of the median, from order statistics, is narrower than `rel_ci` of it) or a cap
(`max_repeats`, `max_seconds`) is reached. An entry whose relative IQR exceeds `max_cv`
is measured again, up to `remeasure` times, and the least noisy attempt is kept.

Timing is honest for the device it runs on: on a CPU a `perf_counter_ns` pair around
a synchronous run; on a CUDA GPU device events around the launches (or around replays
of a CUDA graph that holds several runs), never a host clock around asynchronous work.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hwnas.device_profile import DeviceProfile, MeasurementProtocol
from hwnas.runtime.backends import get_backend
from hwnas.runtime.runner import Runner

# an op measured in several rounds is settled once its two lowest round medians agree this closely
ROUND_AGREEMENT = 0.05


def rounds_needed(entry: dict[str, Any] | None, rounds: int) -> int:
    """How many more profiling rounds an op key needs (0: its entry is settled).

    At least `rounds` rounds; with two or more, extra rounds (up to twice `rounds` in all) until
    the two lowest round medians agree within ROUND_AGREEMENT, so the kept median is confirmed
    by a second, independent pass rather than resting on one.
    """
    done = 0 if entry is None else int(entry.get("rounds", 1))
    if done < rounds:
        return rounds - done
    if rounds < 2 or done >= 2 * rounds:
        return 0
    lowest = sorted(entry.get("round_medians_ms", [entry["median_ms"]]))[:2]
    if len(lowest) < 2 or (lowest[1] - lowest[0]) <= ROUND_AGREEMENT * lowest[0]:
        return 0
    return 1


# the fewest timed runs a number is ever based on, even when `max_seconds` is reached first
MIN_SAMPLES = 5
# z for a two-sided 95 % interval
_Z95 = 1.959963984540054


@dataclass
class Measurement:
    """One measured latency with its dispersion and the conditions it was taken under."""

    median_ms: float
    mean_ms: float
    min_ms: float
    p10_ms: float
    p25_ms: float
    p75_ms: float
    p90_ms: float
    cv: float  # robust coefficient of variation, (p75 - p25) / median: re-measured when above max_cv
    std_over_mean: float  # classic coefficient of variation (sensitive to rare outliers such as preemption)
    ci_low_ms: float  # 95 % confidence interval of the median (order statistics)
    ci_high_ms: float
    n: int  # timed runs behind these numbers
    stop_reason: str  # "stable", "max_repeats" or "max_seconds"
    attempts: int  # 1 + re-measurements made because the entry was noisy
    seconds: float  # wall time spent, warm-up and every attempt included
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def rel_ci(self) -> float:
        """Half-width of the median's 95 % confidence interval, relative to the median."""
        return (self.ci_high_ms - self.ci_low_ms) / 2 / self.median_ms if self.median_ms > 0 else math.inf

    def entry(self) -> dict[str, Any]:
        """The record a latency table keeps for one op key."""
        return {
            "median_ms": round(self.median_ms, 6),
            "p25_ms": round(self.p25_ms, 6),
            "p75_ms": round(self.p75_ms, 6),
            "cv": round(self.cv, 5),
            "n": self.n,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def median_ci(sorted_samples: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Distribution-free 95 % confidence interval of the median from order statistics."""
    x = np.asarray(sorted_samples)
    n = len(x)
    half = _Z95 * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half) - 1)  # 1-based rank -> 0-based index
    hi = min(n - 1, math.ceil(n / 2 + half))
    return float(x[lo]), float(x[hi])


def summarize(samples: Sequence[float], *, stop_reason: str, attempts: int = 1, seconds: float = 0.0,
              settings: dict[str, Any] | None = None) -> Measurement:
    """Turn raw samples (ms) into a Measurement."""
    x = np.sort(np.asarray(samples, dtype=np.float64))
    if len(x) == 0:
        raise ValueError("no samples to summarise")
    median = float(np.median(x))
    p10, p25, p75, p90 = (float(v) for v in np.percentile(x, [10, 25, 75, 90]))
    mean = float(x.mean())
    ci_low, ci_high = median_ci(x)
    return Measurement(
        median_ms=median,
        mean_ms=mean,
        min_ms=float(x[0]),
        p10_ms=p10,
        p25_ms=p25,
        p75_ms=p75,
        p90_ms=p90,
        cv=(p75 - p25) / median if median > 0 else 0.0,
        std_over_mean=float(x.std() / mean) if mean > 0 else 0.0,
        ci_low_ms=ci_low,
        ci_high_ms=ci_high,
        n=int(len(x)),
        stop_reason=stop_reason,
        attempts=attempts,
        seconds=seconds,
        settings=dict(settings or {}),
    )


def _is_stable(samples: list[float], rel_ci: float) -> bool:
    x = np.sort(np.asarray(samples))
    median = float(np.median(x))
    lo, hi = median_ci(x)
    return median > 0 and (hi - lo) / 2 / median <= rel_ci


def measure_once(runner: Runner, protocol: MeasurementProtocol, *, warmup: bool = True) -> Measurement:
    """Warm up, then time until the median is stable or a cap is reached (no re-measurement)."""
    began = time.perf_counter()
    if warmup and protocol.warmup > 0:
        runner.warmup(protocol.warmup)
    # a first timed run tells how many runs fit in a chunk between stopping-rule checks
    samples = runner.time(1)
    deadline = time.perf_counter() + protocol.max_seconds
    while True:
        n = len(samples)
        remaining_s = deadline - time.perf_counter()
        if n >= protocol.min_repeats and _is_stable(samples, protocol.rel_ci):
            stop_reason = "stable"
            break
        if n >= protocol.max_repeats:
            stop_reason = "max_repeats"
            break
        if remaining_s <= 0 and n >= min(MIN_SAMPLES, protocol.max_repeats):
            stop_reason = "max_seconds"
            break
        per_run_s = max(float(np.median(samples)) / 1e3, 1e-6)
        # the stopping rule is checked whenever the sample count grew by half, or a tenth of the time cap passed
        chunk = int(min(protocol.max_seconds / 10, max(remaining_s, 0.0)) / per_run_s)
        chunk = min(chunk, max(1, n // 2))
        if n < protocol.min_repeats:
            chunk = min(chunk, protocol.min_repeats - n)
        if remaining_s <= 0:
            chunk = MIN_SAMPLES - n
        chunk = max(1, min(chunk, protocol.max_repeats - n))
        samples.extend(runner.time(chunk))
    settings = {**asdict(protocol), **runner.describe()}
    return summarize(samples, stop_reason=stop_reason, seconds=time.perf_counter() - began, settings=settings)


def measure(runner: Runner, protocol: MeasurementProtocol) -> Measurement:
    """The full protocol: measure, then re-measure a noisy result keeping the least noisy attempt.
    A runner that measures itself (`measure_protocol`, e.g. one bracketed by an anchor network) does so."""
    own = getattr(runner, "measure_protocol", None)
    if own is not None:
        return own(protocol)
    began = time.perf_counter()
    best = measure_once(runner, protocol)
    attempts = 1
    while best.cv > protocol.max_cv and attempts <= protocol.remeasure:
        # the runner is already warm; a short warm-up still absorbs whatever ran in between
        again = measure_once(runner, protocol)
        attempts += 1
        if again.cv < best.cv:
            best = again
    best.attempts = attempts
    best.seconds = time.perf_counter() - began
    return best


def measure_module(profile: DeviceProfile, module: Any, input_shape: Sequence[int],
                   protocol: MeasurementProtocol | None = None) -> Measurement:
    """Measure a torch module on the profile's backend; `input_shape` excludes the batch dimension."""
    backend = get_backend(profile)
    with backend.prepare(module, (profile.batch, *input_shape)) as runner:
        return measure(runner, protocol or profile.protocol)


def measure_rounds(runners: Mapping[Any, Runner], protocol: MeasurementProtocol, rounds: int | None = None, *,
                   on_measured: Callable[[], None] | None = None, min_round_interval_s: float = 0.0,
                   settle_seconds: float | None = None) -> dict[Any, tuple[Measurement, list[float]]]:
    """Time each runner in interleaved rounds; keep each one's lowest round median.

    At least `rounds` rounds (default `protocol.rounds`); a runner whose two lowest round medians
    still disagree (by more than ROUND_AGREEMENT) gets more rounds, up to twice that many, the
    same rule that settles a latency table's entries. Interference from other work on the
    machine only ever adds time and seldom hits the same runner in every round, so the lowest
    round median is the artifact's own latency: a single end-to-end measurement on a shared
    machine was seen 55 % slow. On a shared VM slow spells last from a tenth of a second to
    several seconds, and a round over a few small models takes less; `min_round_interval_s` spaces the rounds' starts
    so they do not all fall into one spell. Returns, per runner, the kept measurement and every
    round's median (ms); `on_measured` is called after each measurement (a progress bar).
    With `settle_seconds`, unsettled runners get rounds beyond twice `rounds`, until they settle or
    that many seconds have passed since the first round (a spell of host noise can last seconds).
    """
    rounds = max(1, int(rounds if rounds is not None else protocol.rounds))
    best: dict[Any, Measurement] = {}
    medians: dict[Any, list[float]] = {name: [] for name in runners}
    order = list(runners)
    due = list(order)
    rnd = 0
    began = time.perf_counter()
    while due:
        started = time.perf_counter()
        for name in (due if rnd % 2 == 0 else list(reversed(due))):
            m = measure(runners[name], protocol)
            medians[name].append(m.median_ms)
            if on_measured is not None:
                on_measured()
            if name not in best or m.median_ms < best[name].median_ms:
                best[name] = m
        rnd += 1
        due = [name for name in order if rounds_needed({"rounds": len(medians[name]), "median_ms": best[name].median_ms,
                                                        "round_medians_ms": medians[name]}, rounds) > 0]
        if not due and settle_seconds is not None and time.perf_counter() - began < settle_seconds:
            due = [name for name in order if not rounds_settled(medians[name])]
        wait = min_round_interval_s - (time.perf_counter() - started)
        if due and wait > 0:
            time.sleep(wait)
    return {name: (best[name], medians[name]) for name in runners}


def rounds_settled(medians: Sequence[float]) -> bool:
    """Whether the two lowest of these round medians agree (within ROUND_AGREEMENT); one round is."""
    lowest = sorted(medians)[:2]
    return len(lowest) < 2 or lowest[1] - lowest[0] <= ROUND_AGREEMENT * lowest[0]
