"""`profile`: measure every op key of a search space on a device profile into a latency table.

Each op key is built as a small torch module with its real input shape, compiled once by
the profile's backend and timed with the measurement protocol, in `protocol.rounds` passes
over all ops, plus confirmation passes for ops whose best rounds disagree (an op keeps its
least-disturbed pass). The table is saved
atomically after every op, so an interrupted run (even `kill -9`) loses at most the op in
flight; `resume=True` continues it without re-measuring what it holds, and refuses a table
made with another profile, space, device or library versions.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from hwnas.device_profile import DeviceProfile, MeasurementProtocol, load_profile
from hwnas.errors import InputError
from hwnas.io import artifact_lock, check_writable
from hwnas.latency.anchor import AnchorBracket, anchor_arch, anchor_mode, anchored, measure_anchor, prepare_anchor
from hwnas.latency.fingerprint import device_differences, device_fingerprint
from hwnas.latency.table import ENTRY_FIELDS, LatencyTable, now_iso
from hwnas.runtime.backends import Backend, get_backend, package_versions
from hwnas.runtime.measure import ROUND_AGREEMENT, Measurement, measure, rounds_needed
from hwnas.space import get_space

DEFAULT_TABLE_DIR = Path("latency_tables")
# recorded for every table whatever the backend: the exporter, the runtime of the default backend, numpy
BASE_PACKAGES = ("hwnas", "torch", "onnx", "numpy")
INPUT_DESCRIPTION = "float32 standard normal of the op's real input shape (batch included), seed 0"


def quick_protocol(protocol: MeasurementProtocol) -> MeasurementProtocol:
    """The reduced protocol of `--quick` (smoke tests, the demo).

    It changes: one round, warm-up 3 runs, 10 to 100 timed runs, at most 0.1 s per op, stop once
    the median's 95 % CI half-width is within 5 %, at most one re-measurement. The statistic
    (median), the noise criterion and the timing method are unchanged.
    """
    return replace(
        protocol,
        warmup=min(protocol.warmup, 3),
        min_repeats=min(protocol.min_repeats, 10),
        max_repeats=min(protocol.max_repeats, 100),
        max_seconds=min(protocol.max_seconds, 0.1),
        rel_ci=max(protocol.rel_ci, 0.05),
        remeasure=min(protocol.remeasure, 1),
        rounds=1,
    )


def default_table_path(profile_name: str, space_name: str) -> Path:
    return DEFAULT_TABLE_DIR / f"{profile_name}_{space_name}.json"


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def _profile_record(prof: DeviceProfile) -> dict[str, Any]:
    return json.loads(_canonical(prof.to_dict()))


def _build_space(space: str, prof: DeviceProfile, space_options: dict[str, Any] | None):
    options = dict(space_options or {})
    if prof.resolutions is not None:
        options.setdefault("resolutions", list(prof.resolutions))
    try:
        return get_space(space, **options)
    except TypeError as exc:
        raise InputError(f"search space {space!r} does not take options {sorted(options)}: {exc}",
                         field="space") from exc


def _space_record(space_obj: Any, name: str) -> dict[str, Any]:
    config = space_obj.config() if hasattr(space_obj, "config") else {}
    return {"name": name, "config": json.loads(_canonical(config))}


# protocol record entries that describe the method in words, or only steer the confirmation rounds:
# entries measured under the same settings stay comparable when these change
# (anchor_ms is measured by each profiling run; a resumed run keeps the one on disk)
_PROTOCOL_PROSE = ("statistic", "stopping", "input", "rounds_rule", "round_agreement", "anchored", "anchor_ms")


def _protocol_settings(record: dict[str, Any]) -> str:
    return _canonical({k: v for k, v in record.items() if k not in _PROTOCOL_PROSE})


def _check_resumable(table: LatencyTable, expected: LatencyTable, path: Path) -> None:
    """Refuse to mix measurements: the table on disk must come from the same setup."""
    problems = []
    if _canonical(table.space) != _canonical(expected.space):
        problems.append(f"space {_canonical(table.space)} != {_canonical(expected.space)}")
    ours = {k: v for k, v in expected.profile.items() if k != "description"}
    theirs = {k: v for k, v in table.profile.items() if k != "description"}
    if _canonical(theirs) != _canonical(ours):
        problems.append(f"profile {_canonical(theirs)} != {_canonical(ours)}")
    differing = device_differences(table.device, expected.device)
    if differing:
        problems.append("device " + ", ".join(
            f"{f}: {table.device.get(f)!r} != {expected.device.get(f)!r}" for f in differing))
    if _canonical(table.versions) != _canonical(expected.versions):
        problems.append(f"library versions {table.versions} != {expected.versions}")
    theirs, ours = _protocol_settings(table.protocol), _protocol_settings(expected.protocol)
    if theirs != ours:
        problems.append(f"protocol {theirs} != {ours}")
    if problems:
        raise InputError(
            "cannot resume: this table was measured under other conditions (" + "; ".join(problems)
            + "); write to another --out, or pass --overwrite to measure afresh",
            path=str(path),
        )


ANCHORED_PROSE = {
    "per-call": "each sample = time of one call / time of the anchor subnet's call right after it x anchor_ms (the "
                "anchor's lowest round median when profiling began): latencies at the machine speed of that moment",
    "bracket": "each measurement = its median / mean of the anchor subnet's medians measured right before and "
               "right after it x anchor_ms (the anchor's lowest round median when profiling began): latencies at "
               "the machine speed of that moment",
}


def new_table(prof: DeviceProfile, backend: Backend, space_obj: Any, space_name: str,
              protocol: MeasurementProtocol, *, quick: bool, expected_entries: int) -> LatencyTable:
    """An empty table carrying the provenance of this profiling run."""
    return LatencyTable(
        space=_space_record(space_obj, space_name),
        profile=_profile_record(prof),
        device=device_fingerprint(),
        versions={**package_versions(BASE_PACKAGES), **backend.versions()},
        protocol=json.loads(_canonical({
            **asdict(protocol),
            "quick": quick,
            "statistic": "median of timed runs; p25/p75 and cv (IQR/median) over the same runs; of the "
                         "op's rounds the lowest one confirmed by another within round_agreement is kept (the lowest "
                         "when none is)",
            "round_agreement": ROUND_AGREEMENT,
            "rounds_rule": "at least `rounds` passes over all ops; then, up to 2 x rounds, more passes for "
                           "ops whose two lowest round medians differ by more than round_agreement",
            "stopping": "95 % CI of the median (order statistics) within rel_ci, or max_repeats, or max_seconds",
            "input": INPUT_DESCRIPTION,
            "batch": prof.batch,
            **({"anchor_arch": anchor_arch(space_obj),
                "anchored": ANCHORED_PROSE[anchor_mode(protocol.anchor)]} if protocol.anchor else {}),
            **backend.describe(),
        })),
        expected_entries=expected_entries,
    )


def profile(
    device_profile: str | os.PathLike | DeviceProfile,
    space: str,
    out: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    quick: bool = False,
    space_options: dict[str, Any] | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure every op key of `space` on `device_profile` into a latency table at `out`.

    `limit` measures only the first `limit` op keys (a partial table that `resume` completes).
    Returns {"table", "entries", "measured", "reused", "seconds", "expected", "complete", ...}.
    """
    began = time.perf_counter()
    prof = device_profile if isinstance(device_profile, DeviceProfile) else load_profile(device_profile)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"expected a positive integer, got {limit!r}", field="limit")
    space_obj = _build_space(space, prof, space_options)
    space = getattr(space_obj, "name", None) or space  # a spec file's path -> the spec's name
    backend = get_backend(prof)
    protocol = quick_protocol(prof.protocol) if quick else prof.protocol
    all_keys = list(dict.fromkeys(space_obj.all_ops()))  # ordered, without duplicates
    path = Path(out) if out is not None else default_table_path(prof.name, space)
    check_writable(path, field="--out")
    with artifact_lock(path, what="latency table"):
        created = not path.exists()
        try:
            return _profile_locked(prof, backend, space_obj, space, protocol, all_keys, path, resume=resume,
                                   overwrite=overwrite, quick=quick, limit=limit, progress=progress, began=began)
        except BaseException:
            # a run that failed before its first measurement leaves no table (nothing to resume)
            if created and path.exists():
                with contextlib.suppress(InputError, OSError):
                    if len(LatencyTable.load(path, check_files=False)) == 0:
                        path.unlink()
            raise


def _profile_locked(prof: DeviceProfile, backend: Backend, space_obj: Any, space: str, protocol: MeasurementProtocol,
                    all_keys: list[str], path: Path, *, resume: bool, overwrite: bool, quick: bool,
                    limit: int | None, progress: bool, began: float) -> dict[str, Any]:
    table = fresh = new_table(prof, backend, space_obj, space, protocol, quick=quick, expected_entries=len(all_keys))
    if path.exists() and not overwrite:
        if not resume:
            raise InputError("a latency table exists here; pass --resume to continue it or --overwrite "
                             "to measure it afresh", path=str(path))
        on_disk = LatencyTable.load(path, check_files=False)
        _check_resumable(on_disk, table, path)
        on_disk.expected_entries = len(all_keys)
        kept_anchor = {"anchor_ms": on_disk.protocol["anchor_ms"]} if "anchor_ms" in on_disk.protocol else {}
        # same settings; the record now describes this version's method
        on_disk.protocol = {**table.protocol, **kept_anchor}
        table = on_disk
    table.path = str(path)
    if hasattr(backend, "attach_table"):  # e.g. the TVM backend's tuning database beside the table
        backend.attach_table(table, profiling=True)

    wanted = all_keys if limit is None else all_keys[:limit]
    rounds = protocol.rounds
    if table is not fresh and all(rounds_needed(table.entries.get(k), rounds) == 0 for k in wanted):
        # a resumed run with nothing left to measure leaves the file as it is
        print(f"hwnas profile: {path} already holds every op key asked for ({len(wanted)}), with their rounds; "
              "nothing to do, the table is unchanged", file=sys.stderr)
        return {**_summary(path, table, prof, space, quick=quick, measured=0, reused=len(wanted), measurements=0,
                           rounds=rounds, expected=len(all_keys), began=began), "finished": True}
    # foreign load on the machine is the main threat to these numbers: record it with them
    table.conditions.setdefault("runs", []).append({"started": now_iso(), "loadavg_start": _loadavg()})
    reused = sum(1 for k in wanted if rounds_needed(table.entries.get(k), rounds) == 0)
    table.save(path)  # the provenance is on disk before the first measurement

    measured_keys: set[str] = set()
    measurements = 0
    anchor = None
    if protocol.anchor:
        anchor = prepare_anchor(backend, space_obj, table.protocol["anchor_arch"], prof.batch)
        speed_now = round(measure_anchor(anchor, protocol), 6)
        # a resumed table keeps its unit; this run's anchor latency is recorded with the run
        table.protocol.setdefault("anchor_ms", speed_now)
        table.conditions["runs"][-1]["anchor_ms_start"] = speed_now
        table.save(path)
        bracket = AnchorBracket(anchor, table.protocol["anchor_ms"])  # shared by the ops in "bracket" mode
    bar = _progress_bar(len(wanted) * rounds, enabled=progress, desc=f"profile {prof.name} {space}")
    if bar is not None:
        bar.update(sum(min(rounds_done(table, k), rounds) for k in wanted))
    try:
        # whole passes over the ops: the rounds of one op lie far apart in time, so a burst of
        # foreign load disturbs one of them, and the op keeps the least-disturbed one
        for round_index in range(1, 2 * rounds + 1):
            due = [k for k in wanted if rounds_needed(table.entries.get(k), rounds) > 0
                   and rounds_done(table, k) < round_index]
            if not due:
                break
            if bar is not None and round_index > rounds:
                bar.total += len(due)  # confirmation rounds for ops whose rounds disagree
                bar.refresh()
            for key in due:
                if bar is not None:
                    label = key if len(key) <= 48 else key[:45] + "..."
                    bar.set_postfix_str(f"round {round_index} {label}", refresh=False)
                module, input_shape = space_obj.build_op(key)
                shape = (prof.batch, *input_shape)
                runner = backend.prepare_op(key, module, shape) if hasattr(backend, "prepare_op") else \
                    backend.prepare(module, shape)
                if anchor is not None:
                    runner = anchored(runner, anchor, table.protocol["anchor_ms"], protocol.anchor, bracket)
                with runner:
                    result = measure(runner, protocol)
                table.entries[key] = merge_round(table.entries.get(key), result)
                _record_backend_files(backend, table)
                table.save(path)
                measured_keys.add(key)
                measurements += 1
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if anchor is not None:
            # the anchor's latency again: how far the machine's speed moved while the ops were timed
            table.conditions["runs"][-1]["anchor_ms_end"] = round(measure_anchor(anchor, protocol), 6)
            anchor.close()
    table.conditions["runs"][-1].update({"finished": now_iso(), "loadavg_end": _loadavg(),
                                         "measurements": measurements})
    table.save(path)
    return _summary(path, table, prof, space, quick=quick, measured=len(measured_keys), reused=reused,
                    measurements=measurements, rounds=rounds, expected=len(all_keys), began=began)


def _record_backend_files(backend: Backend, table: LatencyTable) -> None:
    """Save what the backend keeps beside the table (TVM: the tuning database), before the table
    that names it with its sha256."""
    record = backend.table_record() if hasattr(backend, "table_record") else None
    if record:
        table.tuning = record


def _summary(path: Path, table: LatencyTable, prof: DeviceProfile, space: str, *, quick: bool, measured: int,
             reused: int, measurements: int, rounds: int, expected: int, began: float) -> dict[str, Any]:
    """What `hwnas profile --json` prints."""
    return {
        "table": str(path),
        "entries": len(table.entries),
        "measured": measured,
        "reused": reused,
        "seconds": round(time.perf_counter() - began, 3),
        "measurements": measurements,
        "rounds": rounds,
        "expected": expected,
        "complete": table.complete,
        "space": space,
        "profile": prof.name,
        "backend": prof.backend,
        "quick": quick,
        **({"tuning": {k: v for k, v in table.tuning.items() if k != "sha256"}} if table.tuning else {}),
    }


def rounds_done(table: LatencyTable, key: str) -> int:
    entry = table.entries.get(key)
    return 0 if entry is None else int(entry.get("rounds", 1))


def merge_round(entry: dict[str, Any] | None, result: Measurement) -> dict[str, Any]:
    """Add one round's measurement to an op's entry, keeping the lowest confirmed round.

    Interference only adds time, so the lowest round median is the op's own latency, once a second
    round confirms it (within ROUND_AGREEMENT). A single round far below all others is not kept: with
    2 intra-op threads on a 2-vCPU VM, small ops ran in about half their usual time in one round of
    six (0.0126 ms against 0.0229-0.0238 ms), and keeping such rounds cost the calibrated predictor
    0.04-0.06 Kendall tau on four validation draws (BENCHMARKS.md, "Bracketed anchor"). Without a
    confirmed round the lowest is kept. The kept round's median, quartiles, cv and sample count
    describe the entry (of the kept and the new round, the one nearest the rule's choice, which is
    within ROUND_AGREEMENT of it: a round that changes the choice is the chosen one or confirms it); every
    round's median is listed in `round_medians_ms`, so the spread between rounds stays visible.
    """
    new = result.entry()
    previous = [] if entry is None else list(entry.get("round_medians_ms", [entry["median_ms"]]))
    medians = previous + [new["median_ms"]]
    if entry is None:
        kept = new
    else:
        target = lowest_confirmed(medians)
        old = {k: entry[k] for k in ENTRY_FIELDS}
        kept = new if abs(new["median_ms"] - target) < abs(old["median_ms"] - target) else old
    return {**kept, "rounds": len(medians), "round_medians_ms": medians}


def lowest_confirmed(medians: list[float]) -> float:
    """The lowest round median that another round agrees with (within ROUND_AGREEMENT); else the lowest."""
    ordered = sorted(medians)
    for i, m in enumerate(ordered):
        if any(abs(other - m) <= ROUND_AGREEMENT * m for j, other in enumerate(ordered) if j != i):
            return m
    return ordered[0]


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _progress_bar(total: int, *, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="op", file=sys.stderr, dynamic_ncols=True,
                smoothing=0.1)
