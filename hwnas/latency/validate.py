"""`validate`: a latency table's predictions against end-to-end measurements on its device.

Random subnets of the table's space are built whole and measured on the table's backend
with the table's own protocol. `calib_n` of them fit the calibration
(`LatencyPredictor.fit`); the other `n` are held out and score the raw table sum and the
calibrated prediction: MAPE, share within +-10 %, Kendall tau. The calibration is written
beside the table with its provenance, and a predicted-vs-measured scatter plot is drawn.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.device_profile import MeasurementProtocol, profile_from_dict
from hwnas.errors import InputError, OutputError
from hwnas.io import check_writable
from hwnas.latency.anchor import AnchorBracket, anchor_mode, anchored, measure_anchor, prepare_anchor, read_anchor
from hwnas.latency.fingerprint import device_differences, device_fingerprint
from hwnas.latency.predictor import LatencyPredictor, calibration_path
from hwnas.latency.table import LatencyTable
from hwnas.runtime.backends import get_backend
from hwnas.runtime.measure import measure_rounds
from hwnas.stats import latency_metrics


def table_protocol(table: LatencyTable) -> MeasurementProtocol:
    """The measurement protocol the table was taken with (so subnets are timed the same way)."""
    names = {f.name for f in dataclasses.fields(MeasurementProtocol)}
    return MeasurementProtocol(**{k: v for k, v in table.protocol.items() if k in names})


def sample_distinct(space: Any, n: int, rng: np.random.Generator, *, max_tries: int = 100) -> list[dict]:
    """`n` random subnets with pairwise different op lists (InputError when the space is too small)."""
    seen: set[tuple] = set()
    archs: list[dict] = []
    tries = 0
    while len(archs) < n:
        arch = space.sample(rng)
        key = tuple(space.ops(arch))
        tries += 1
        if key in seen:
            if tries > max_tries * n:
                raise InputError(f"the space has fewer than {n} distinct subnets", field="n")
            continue
        seen.add(key)
        archs.append(arch)
    return archs


def validate(
    table_path: str | os.PathLike,
    n: int = 50,
    *,
    calib_n: int | None = None,
    plot: str | os.PathLike | None = None,
    seed: int = 0,
    calibration_out: str | os.PathLike | None = None,
    rounds: int = 2,
    retest: bool = False,
    progress: bool = True,
    passes: int = 1,
) -> dict[str, Any]:
    """Measure `calib_n` + `n` random subnets end to end; fit on the first, score on the others.

    The held-out subnets are timed in `passes` independent passes (sessions compiled afresh for each,
    the first shared with the calibration subnets); their latency is the geometric mean of the
    passes. Part of a pass's error stays with its sessions and its minutes whatever the rounds, so
    on a noisy machine more passes make a steadier ground truth; with two or more, how well the
    first two agree is reported (`pass_agreement`). `retest` measures the held-out subnets again
    the same way (another `passes` passes) and scores the first measurement against the second like
    a predictor: a bound on what any predictor can reach on this device.
    """
    began = time.perf_counter()
    calib_n = n if calib_n is None else calib_n
    for name, value, low in (("n", n, 2), ("calib-n", calib_n, 3), ("rounds", rounds, 1), ("passes", passes, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"expected an integer >= {low}, got {value!r}", field=name)
    table_path = Path(table_path)
    # validate measures afresh: an earlier calibration plays no part (and a broken one is replaced)
    predictor = LatencyPredictor(LatencyTable.load(table_path))
    table = predictor.table
    if not table.complete and len(table) < (table.expected_entries or 0):
        raise InputError(f"the table is incomplete ({len(table)} of {table.expected_entries} op keys); "
                         "finish it with `hwnas profile ... --resume` first", path=str(table_path), field="entries")
    if not table.complete:
        # every op has a number, but some still await the protocol's confirmation rounds
        print(f"warning: {table_path}: some entries still await confirmation rounds; validating the table as it is "
              "(`hwnas profile ... --resume` completes them)", file=sys.stderr)
    here = device_fingerprint()
    differing = device_differences(table.device, here)
    if differing:
        # end-to-end timings from this machine say nothing about the table's device
        details = ", ".join(f"{f}: table {table.device.get(f)!r} vs here {here.get(f)!r}" for f in differing)
        raise InputError(f"this table was measured on another device ({details}); run validate on the device "
                         "the table describes", path=str(table_path), field="device")
    profile = profile_from_dict(table.profile, source=str(table_path))
    protocol = table_protocol(table)
    space = predictor.space
    absent = table.missing(space.all_ops())
    if absent:
        # checked before measuring anything: the space's definition changed since profiling
        raise InputError(f"{len(absent)} op keys of space {table.space_name!r} as defined now are not in the "
                         f"table (first: {absent[0]!r}); profile the space again", path=str(table_path),
                         field="entries")

    if not callable(getattr(space, "build", None)) or not callable(getattr(space, "input_shape", None)):
        # a tabular space (nb201) has op keys but no networks to build and time end to end
        raise InputError(f"space {table.space_name!r} cannot build whole subnets, so they cannot be measured end "
                         "to end; validate needs a table of a buildable space (e.g. mbv3-small-input)",
                         path=str(table_path), field="space.name")
    cal_target = Path(calibration_out) if calibration_out is not None else calibration_path(table_path)
    check_writable(cal_target, field="--calibration-out")  # before the minutes of measuring
    if plot is not None:
        check_writable(plot, field="--plot")
    anchor = read_anchor(table.protocol, space, str(table_path))
    anchor_ms = anchor[1] if anchor is not None else None

    rng = np.random.default_rng(seed)
    archs = sample_distinct(space, calib_n + n, rng)
    measured, anchor_now = measure_subnets(profile, protocol, space, archs, rounds=rounds, progress=progress,
                                           desc=f"validate {table.profile_name}", anchor=anchor, table=table)
    calib, held_out = archs[:calib_n], archs[calib_n:]
    y_calib, y_test = measured[:calib_n], measured[calib_n:]

    def held_out_pass(desc: str) -> np.ndarray:  # the held-out subnets compiled afresh and timed
        return measure_subnets(profile, protocol, space, held_out, rounds=rounds, progress=progress,
                               desc=f"{desc} {table.profile_name}", anchor=anchor, table=table)[0]

    pass_ms = [y_test, *(held_out_pass(f"pass {p + 1}") for p in range(1, passes))]
    y_test = _geometric_mean(pass_ms)
    pass_agreement = _rounded(latency_metrics(pass_ms[1], pass_ms[0])) if passes > 1 else None

    raw_test = predictor.predict_raw(held_out)
    predictor.fit(calib, y_calib, provenance={
        "device": here,
        "protocol": dataclasses.asdict(protocol),
        "seed": seed,
        "table_complete": table.complete,
        "measured": "whole subnet built by space.build(arch), timed on the table's backend with its protocol; "
                    f"{rounds} rounds over all subnets (alternating order), "
                    + ("the median of the rounds kept" if anchor_mode(table.protocol.get("anchor")) == "bracket"
                       else "the lowest median kept")
                    + ("; every call timed against the table's anchor network, in units of its anchor_ms"
                       if anchor_ms is not None else ""),
        "rounds": rounds,
        "held_out_passes": passes,
        **({"anchor": {"table_ms": anchor_ms, "now_ms": anchor_now}} if anchor_ms is not None else {}),
    })
    calibrated_test = predictor.predict(held_out)
    repeat = None
    if retest:
        # compiled afresh and timed again: how well the measurement agrees with itself
        y_again = _geometric_mean([held_out_pass("retest") for _ in range(passes)])
        repeat = _rounded(latency_metrics(y_again, y_test))
        predictor.calibration.provenance["retest"] = {
            **repeat, "ms": [round(float(v), 6) for v in y_again]}
    raw = _rounded(latency_metrics(raw_test, y_test))
    calibrated = _rounded(latency_metrics(calibrated_test, y_test))
    predictor.calibration.provenance["held_out"] = {"n": n, "raw": raw, "calibrated": calibrated}
    # the timings themselves, so the calibration can be refitted or audited without measuring again
    predictor.calibration.provenance["measurements"] = {
        "calibration": [{"arch": a, "ms": round(float(v), 6), "raw_ms": round(float(r), 6)}
                        for a, v, r in zip(calib, y_calib, predictor.predict_raw(calib), strict=True)],
        "held_out": [{"arch": a, "ms": round(float(v), 6),
                      **({"pass_ms": [round(float(m[i]), 6) for m in pass_ms]} if passes > 1 else {})}
                     for i, (a, v) in enumerate(zip(held_out, y_test, strict=True))],
    }
    if pass_agreement is not None:
        predictor.calibration.provenance["held_out"]["pass_agreement"] = pass_agreement
    cal_path = predictor.save(cal_target)  # an OutputError says where the calibration went if its place failed

    if plot is not None:
        try:
            scatter_plot(plot, y_test, raw_test, calibrated_test,
                         title=f"{table.profile_name} / {table.space_name}: {n} held-out subnets")
        except OSError as exc:
            raise OutputError(f"cannot write the plot ({exc.strerror or exc}); the calibration, with every "
                              f"measurement, is written at {cal_path}", path=str(plot)) from exc
    return {
        "table": str(table_path),
        "table_complete": table.complete,
        "n": n,
        "calib_n": calib_n,
        "mape": calibrated["mape"],
        "within_10pct": calibrated["within_10pct"],
        "kendall_tau": calibrated["kendall_tau"],
        "calibrated": calibrated,
        "raw": raw,
        "method": predictor.calibration.method,
        # the per-attribute terms of "op-attributes" stay in the calibration file; here only how many there are
        "coef": {k: v for k, v in zip(predictor.calibration.feature_names, predictor.calibration.coef, strict=True)
                 if not k.startswith("count[")},
        **({"attribute_terms": sum(k.startswith("count[") for k in predictor.calibration.feature_names)}
           if predictor.calibration.method == "op-attributes" else {}),
        "calibration": str(cal_path),
        "plot": str(plot) if plot is not None else None,
        "measured_ms": {"min": float(y_test.min()), "median": float(np.median(y_test)), "max": float(y_test.max())},
        "seed": seed,
        "rounds": rounds,
        "passes": passes,
        # the second pass of the held-out subnets scored against the first: what one pass repeats to
        "pass_agreement": pass_agreement,
        "retest": repeat,
        # the anchor network's latency now against the table's: how fast the machine runs at present
        "anchor": ({"table_ms": anchor_ms, "now_ms": anchor_now,
                    "speed_now_vs_profiling": round(anchor_ms / anchor_now, 4)} if anchor_ms is not None else None),
        "seconds": round(time.perf_counter() - began, 2),
    }


def _geometric_mean(values: list[np.ndarray]) -> np.ndarray:
    return np.exp(np.mean(np.log(np.vstack(values)), axis=0))


def measure_subnets(profile: Any, protocol: MeasurementProtocol, space: Any, archs: list[dict], *,
                    rounds: int = 2, progress: bool = False, desc: str = "measure",
                    anchor: tuple[dict, float] | None = None, table: LatencyTable | None = None
                    ) -> tuple[np.ndarray, float | None]:
    """End-to-end median latency (ms) of each subnet on the profile's backend (compiled as `table`'s
    entries were, e.g. with its tuning records, when a table is given).

    Every subnet is compiled once, then timed in `rounds` passes over all of them (the
    order alternating) and the lowest median is kept: interference from other work on
    the machine only ever adds time, and it rarely hits the same subnet twice.
    With `anchor` (an anchored table's anchor subnet and its anchor_ms), every call is timed against
    the anchor subnet (hwnas.latency.anchor) and the anchor's own latency now is returned as well.
    In "bracket" mode the median of the rounds is kept instead: a round is the subnet's median over
    the anchor's around it, and a spell that slows either side moves that ratio either way, so the
    lowest round is no longer the undisturbed one (200 subnets timed in three passes on a 2-vCPU VM:
    the mean of two passes agreed with the third at tau 0.903, the lower of the two at 0.893).
    """
    medians, anchor_now = time_subnet_rounds(profile, protocol, space, archs, rounds=rounds, progress=progress,
                                             desc=desc, anchor=anchor, table=table)
    keep = np.median if anchor is not None and anchor_mode(protocol.anchor) == "bracket" else min
    return np.array([float(keep(m)) for m in medians]), anchor_now


def time_subnet_rounds(profile: Any, protocol: MeasurementProtocol, space: Any, archs: list[dict], *,
                       rounds: int = 2, progress: bool = False, desc: str = "measure",
                       anchor: tuple[dict, float] | None = None, table: LatencyTable | None = None
                       ) -> tuple[list[list[float]], float | None]:
    """Every round's median (ms) of each subnet, timed as `measure_subnets` times them (at least
    `rounds` rounds; a subnet whose rounds disagree gets more), and the anchor's latency now."""
    backend = get_backend(profile, table)
    runners: dict[int, Any] = {}
    anchor_runner, anchor_now = None, None
    bar = _progress(rounds * len(archs), enabled=progress, desc=desc)
    try:
        if anchor is not None:
            anchor_runner = prepare_anchor(backend, space, anchor[0], profile.batch)
            anchor_now = round(measure_anchor(anchor_runner, protocol), 6)
            bracket = AnchorBracket(anchor_runner, anchor[1])  # shared by the run's runners in "bracket" mode
        for i, arch in enumerate(archs):
            runner = backend.prepare(space.build(arch), (profile.batch, *space.input_shape(arch)))
            runners[i] = runner if anchor_runner is None else anchored(runner, anchor_runner, anchor[1],
                                                                        protocol.anchor, bracket)
        results = measure_rounds(runners, protocol, rounds, on_measured=bar.update if bar is not None else None)
    finally:
        for runner in runners.values():
            runner.close()
        if anchor_runner is not None:
            anchor_runner.close()
        if bar is not None:
            bar.close()
    return [list(results[i][1]) for i in range(len(archs))], anchor_now


def scatter_plot(path: str | os.PathLike, measured: np.ndarray, raw: np.ndarray, calibrated: np.ndarray,
                 *, title: str = "") -> None:
    """Predicted vs measured latency, with the identity line and the +-10 % band (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hwnas.io import atomic_write_bytes

    lo = float(min(measured.min(), raw.min(), calibrated.min())) * 0.9
    hi = float(max(measured.max(), raw.max(), calibrated.max())) * 1.1
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
    line = np.array([lo, hi])
    ax.fill_between(line, line * 0.9, line * 1.1, color="0.9", label="±10 %")
    ax.plot(line, line, color="0.5", lw=1)
    r, c = latency_metrics(raw, measured), latency_metrics(calibrated, measured)
    ax.scatter(measured, raw, s=14, marker="x", color="tab:orange",
               label=f"table sum: {100 * r['within_10pct']:.0f} % in ±10 %, τ {r['kendall_tau']:.2f}")
    ax.scatter(measured, calibrated, s=14, color="tab:blue",
               label=f"calibrated: {100 * c['within_10pct']:.0f} % in ±10 %, τ {c['kendall_tau']:.2f}")
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="measured end to end (ms)", ylabel="predicted (ms)", title=title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in metrics.items()}


def _progress(total: int, *, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False)
