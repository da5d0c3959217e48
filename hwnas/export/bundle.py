"""The deployable bundle: D/model.onnx, D/model.so (+ D/model.tar for a cross target),
D/model.engine where TensorRT exists, and D/manifest.json.

    result = export(subnet, (3, 128, 128), "deploy/D", formats=("onnx", "tvm"), arch=arch,
                    profile=load_profile("cpu-ort-1t"), predicted_ms=3.1)

Everything is written into a temporary folder beside D and renamed into place at the end,
so a failure (an op a format cannot express, a failing compile, a missing package) leaves
no partial bundle; an existing bundle at D is replaced only by a complete new one.

The manifest holds the architecture, the space, the accuracy estimate, the predicted
latency, the latency measured on the exported artifacts with the profile's protocol (on the
profile's backend, and on ONNX Runtime and TVM as well), parity numbers, file sha256s,
library versions and the date.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from hwnas.device_profile import DeviceProfile, load_profile
from hwnas.errors import InputError, NotAvailableError
from hwnas.io import artifact_lock, atomic_write_json, temp_prefix

MANIFEST_SCHEMA_VERSION = 1
MANIFEST_KIND = "hwnas-bundle"
FORMATS = ("onnx", "tvm", "tensorrt")
DEFAULT_PROFILE = "cpu-ort-1t"
# slow spells on a shared VM last up to a second or so (1-thread ONNX Runtime on a 2-vCPU VM, sampled
# every 0.2 s: spells of 0.2-1 s at +35-85 %), and one timing round of a bundle's few artifacts takes
# a fraction of that; spacing the rounds' starts keeps them from all falling into one spell
ROUND_INTERVAL_S = 1.0
# a bundle's timing goes on while a runner's two lowest rounds disagree, for at most this long: spells
# of +50-90 % lasting several seconds were seen on a 2-vCPU VM with nothing else running in it
SETTLE_SECONDS = 30.0


class ExportError(InputError):
    """A format could not be produced for this model here: the CLI exits 2 with what failed and what to do."""


@dataclass
class ExportResult:
    out_dir: str
    files: dict[str, str]
    manifest: dict[str, Any]
    max_abs_diff: float  # the largest parity difference over every produced format
    predicted_ms: float | None
    measured_ms: float | None  # on the profile's backend
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "out": self.out_dir,
            "files": self.files,
            "max_abs_diff": self.max_abs_diff,
            "predicted_ms": self.predicted_ms,
            "measured_ms": self.measured_ms,
            "measured": {k: v["median_ms"] for k, v in self.manifest["latency"]["measured"].items()},
            "notes": self.notes,
        }


def parse_formats(spec: str | Sequence[str]) -> tuple[str, ...]:
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise InputError(f"unknown format(s) {', '.join(unknown) or '(none given)'}; expected a comma-separated "
                         f"list of {', '.join(FORMATS)}", field="--format")
    if "onnx" not in names:
        names.insert(0, "onnx")  # every other format is built from the ONNX file
    return tuple(dict.fromkeys(names))


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    from hwnas import __version__
    from hwnas.latency.backends import package_versions

    return {"hwnas": __version__, "python": platform.python_version(),
            **package_versions(("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "apache-tvm", "tensorrt",
                                "numpy"))}


def _measurement_record(m: Any, where: str) -> dict[str, Any]:
    return {"median_ms": m.median_ms, "p25_ms": m.p25_ms, "p75_ms": m.p75_ms, "cv": m.cv, "n": m.n,
            "ci_low_ms": m.ci_low_ms, "ci_high_ms": m.ci_high_ms, "stop_reason": m.stop_reason,
            "where": where, "settings": m.settings}


def _ort_profile(profile: DeviceProfile) -> DeviceProfile:
    """ONNX Runtime CPU with the profile's threads and protocol (ORT's timing of the exported ONNX)."""
    if profile.backend == "onnxruntime":
        return profile
    return replace(profile, name=f"{profile.name}-onnxruntime", backend="onnxruntime",
                   options={"threads": profile.options.get("threads", 1), "execution_provider": "CPUExecutionProvider",
                            "graph_optimization": "all", "precision": "fp32"})


def _tvm_profile(profile: DeviceProfile, target: str | dict, tune_trials: int) -> DeviceProfile:
    """The profile itself when it is a TVM profile; else TVM on this CPU with its threads and protocol."""
    if profile.backend == "tvm":
        return profile
    return replace(profile, name=f"{profile.name}-tvm", backend="tvm",
                   options={"target": target, "threads": profile.options.get("threads", 1), "opt_level": 3,
                            "rpc_host": None, "rpc_port": 9090, "rpc_key": None, "tuning_trials": tune_trials})


def _prepare_out_dir(out_dir: Path) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise InputError("exists and is not a folder; give a new folder for the bundle", path=str(out_dir),
                             field="--out")
        if any(out_dir.iterdir()) and not (out_dir / "manifest.json").is_file():
            raise InputError("is a non-empty folder that holds no bundle (no manifest.json); give a new or "
                             "empty folder, so nothing of yours is overwritten", path=str(out_dir), field="--out")


def _commit(tmp: Path, out_dir: Path) -> None:
    """Move the finished bundle into place; an older bundle there is replaced only now."""
    # mkdtemp / mkstemp create owner-only entries; a bundle is meant to be shared like any output
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    for path in tmp.iterdir():
        if path.is_file():
            os.chmod(path, (0o777 if os.access(path, os.X_OK) else 0o666) & ~umask)
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-pid{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export(module: Any, input_shape: Sequence[int], out_dir: str | os.PathLike, *,
           formats: Sequence[str] = ("onnx", "tvm"), profile: DeviceProfile | str | None = None,
           tvm_target: str | dict | None = None, tune_trials: int = 0, dynamic_batch: bool = False,
           tensorrt_precision: str | None = None, arch: dict | None = None, space: dict | None = None,
           accuracy: float | None = None, predicted_ms: float | None = None, source: dict | None = None,
           measure_latency: bool = True, progress: bool = True,
           anchor: tuple[Any, Sequence[int], float, str] | None = None) -> ExportResult:
    """Export `module` (eval mode, BN recalibrated) as a bundle in `out_dir`.

    `input_shape` excludes the batch; the profile's batch is used. `profile` (a DeviceProfile
    or a shipped profile's name; default cpu-ort-1t) gives the backend the exported artifact
    is timed on and the measurement protocol; the TVM target is `tvm_target`, else the
    profile's when it is a TVM profile, else "llvm". `anchor` (module, input shape without the batch,
    anchor_ms) of an anchored latency table: the artifact is also timed against that anchor subnet, in
    the table's units (its latency at the profiling run's machine speed), comparable with `predicted_ms`.
    """
    from hwnas.export import onnx as onnx_export

    formats = parse_formats(formats)
    if not isinstance(profile, DeviceProfile):
        profile = load_profile(profile or DEFAULT_PROFILE)
    if tune_trials < 0:
        raise InputError(f"expected a number of trials >= 0, got {tune_trials}", field="--tune-trials")
    if tvm_target is None:
        tvm_target = profile.options.get("target", "llvm") if profile.backend == "tvm" else "llvm"
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir)
    if "tensorrt" in formats:
        from hwnas.export.tensorrt import check_available

        check_available()  # before anything is compiled: a missing tensorrt / GPU fails fast
    shape = [profile.batch, *[int(d) for d in input_shape]]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = artifact_lock(out_dir, what="bundle")  # one writer per bundle; removes a killed run's partial folders
    lock.__enter__()
    try:
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out_dir, "partial-"), dir=out_dir.parent))
    except BaseException:
        lock.__exit__(None, None, None)
        raise

    def log(msg: str) -> None:
        if progress:
            print(f"export: {msg}", file=sys.stderr, flush=True)

    try:
        files: dict[str, str] = {}
        parity: dict[str, Any] = {}
        notes: list[str] = []
        formats_info: dict[str, Any] = {}

        log(f"ONNX (opset {onnx_export.ONNX_OPSET}, input {shape}{', dynamic batch' if dynamic_batch else ''})")
        onnx_info = onnx_export.export_onnx(module, shape, tmp / "model.onnx", dynamic_batch=dynamic_batch)
        files["onnx"] = "model.onnx"
        parity["onnxruntime_vs_torch"] = onnx_info.parity.to_dict()
        formats_info["onnx"] = {k: v for k, v in onnx_info.to_dict().items() if k not in ("path", "parity")}
        notes += onnx_info.notes
        onnx_data = (tmp / "model.onnx").read_bytes()
        parity_inputs = onnx_export.random_inputs(shape, 3)
        ort_outputs = onnx_export.run_ort(onnx_data, parity_inputs)

        compiled = library = None
        if "tvm" in formats:
            compiled, library, tvm_info, tvm_parity = _export_tvm(onnx_data, shape, tmp, tvm_target, tune_trials,
                                                                  profile, parity_inputs, ort_outputs, log)
            files.update({k: Path(v).name for k, v in (("tvm_so", library.so), ("tvm_tar", library.tar)) if v})
            formats_info["tvm"] = tvm_info
            notes += library.notes
            if tvm_parity is not None:
                parity["tvm_vs_onnxruntime"] = tvm_parity.to_dict()
            else:
                notes.append("TVM parity not checked: the library is for another CPU and no RPC device was given")

        if "tensorrt" in formats:
            from hwnas.export.tensorrt import export_engine

            precision = tensorrt_precision or profile.options.get("precision", "fp16")
            if precision not in ("fp16", "fp32"):
                precision = "fp16"
            static = onnx_data if not dynamic_batch else onnx_export.onnx_bytes(module, shape)
            log(f"TensorRT engine ({precision})")
            engine = _step("TensorRT engine", lambda: export_engine(
                static, shape, tmp / "model.engine", precision=precision,
                workspace_mb=int(profile.options.get("workspace_mb", 1024))))
            files["tensorrt"] = "model.engine"
            parity["tensorrt_vs_onnxruntime"] = engine.parity.to_dict()
            formats_info["tensorrt"] = {k: v for k, v in engine.to_dict().items() if k not in ("path", "parity")}

        measured: dict[str, Any] = {}
        measured_ms = None
        if measure_latency:
            measured, measured_ms = _measure(profile, module, shape, onnx_data, compiled, library, tmp, log, notes,
                                             anchor)

        max_abs_diff = max(p["max_abs_diff"] for p in parity.values())
        manifest = {
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "kind": MANIFEST_KIND,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "arch": arch,
            "space": space,
            "input_shape": shape,
            "dynamic_batch": dynamic_batch,
            "accuracy": accuracy,
            "latency": {
                "predicted_ms": predicted_ms,
                "measured_ms": measured_ms,
                # with an anchored table: the same artifact timed against the table's anchor subnet, in the
                # table's units (its machine speed), the figure the prediction is comparable with
                "measured_at_table_speed_ms": measured.get(ANCHORED, {}).get("median_ms"),
                "profile": profile.name,
                "backend": profile.backend,
                "protocol": asdict(profile.protocol),
                "measured": measured,
            },
            "files": {name: {"path": rel, "sha256": sha256(tmp / rel), "bytes": (tmp / rel).stat().st_size}
                      for name, rel in files.items()},
            "formats": formats_info,
            "parity": parity,
            "max_abs_diff": max_abs_diff,
            "versions": library_versions(),
            "device": _fingerprint(),
            "source": source or {},
            "notes": notes,
        }
        atomic_write_json(tmp / "manifest.json", manifest)
        files["manifest"] = "manifest.json"
        _commit(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        lock.__exit__(None, None, None)
    return ExportResult(out_dir=str(out_dir), files={k: str(out_dir / v) for k, v in files.items()},
                        manifest=manifest, max_abs_diff=max_abs_diff, predicted_ms=predicted_ms,
                        measured_ms=measured_ms, notes=notes)


def _fingerprint() -> dict[str, Any]:
    from hwnas.latency.fingerprint import device_fingerprint

    return device_fingerprint()


def _step(what: str, fn: Any) -> Any:
    """Run one export step; a failure becomes an ExportError naming the step and what to do."""
    try:
        return fn()
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure of a format is reported, none is hidden
        raise ExportError(f"{what} failed: {type(exc).__name__}: {exc}. Export the other formats "
                          f"(--format onnx), or fix the cause named here", field="--format") from exc


def _export_tvm(onnx_data: bytes, shape: list[int], tmp: Path, target: str | dict, tune_trials: int,
                profile: DeviceProfile, parity_inputs: list, ort_outputs: list, log: Any):
    from hwnas.export import tvm as tvm_export
    from hwnas.export.onnx import compare_outputs

    tvm_export.import_tvm()
    target_dict = tvm_export.parse_target(target)
    cross = tvm_export.is_cross_target(target_dict)
    log(f"TVM Relax compile for {target_dict}" + (f", MetaSchedule {tune_trials} trials" if tune_trials else ""))
    mod = _step("TVM import", lambda: tvm_export.import_onnx(onnx_data, shape))
    compiled = _step("TVM compile", lambda: tvm_export.compile_model(
        mod, target_dict, tune_trials=tune_trials, tune_dir=tmp / "tuning" if tune_trials else None,
        threads=profile.threads()))
    library = _step("TVM library export", lambda: tvm_export.export_library(compiled, tmp / "model"))
    if tune_trials:
        shutil.rmtree(tmp / "tuning", ignore_errors=True)  # the records are baked into the library
    tvm_parity = None
    if not cross:
        outputs = _step("TVM run", lambda: tvm_export.run_library(library.so, parity_inputs))
        tvm_parity = compare_outputs(ort_outputs, outputs, reference_name="onnxruntime", runtime="tvm")
    elif profile.backend == "tvm" and profile.options.get("rpc_host"):
        from hwnas.latency.backends import get_backend

        backend = get_backend(profile)
        outputs = []
        with backend.prepare_compiled(compiled, shape, library=library) as runner:
            for x in parity_inputs:
                runner.input.copyfrom(x)
                outputs.append(runner.outputs()[0])
        tvm_parity = compare_outputs(ort_outputs, outputs, reference_name="onnxruntime", runtime="tvm (rpc)")
    if tvm_parity is not None and not tvm_parity.passed:
        raise ExportError(f"the TVM library's output differs from ONNX Runtime's by {tvm_parity.max_abs_diff:.3g} "
                          f"(> {tvm_parity.tolerance:g}); export --format onnx only", field="--format")
    info = {"target": target_dict, "cross_compiled": cross, "library": library.to_dict(),
            "tune_trials": tune_trials, "tuning": compiled.tuning}
    info["library"] = {k: (Path(v).name if isinstance(v, str) and k in ("so", "tar") else v)
                       for k, v in info["library"].items()}
    return compiled, library, info, tvm_parity


ANCHORED = "at_table_speed"


def _measure(profile: DeviceProfile, module: Any, shape: list[int], onnx_data: bytes, compiled: Any, library: Any,
             tmp: Path, log: Any, notes: list[str],
             anchor: tuple[Any, Sequence[int], float, str] | None = None) -> tuple[dict[str, Any], float | None]:
    """Time the exported artifacts with the profile's protocol: on ONNX Runtime (this CPU), on TVM (this
    CPU or the RPC device) when a TVM library exists, and on the profile's own backend.

    All runners are prepared first, then timed in the protocol's rounds, interleaved; each keeps its
    lowest round median, the statistic the latency table and `hwnas validate` use. Rounds start at
    least ROUND_INTERVAL_S apart, and continue (up to SETTLE_SECONDS) while a runner's two lowest round
    medians disagree; a runner that never settles is flagged in the record and in `notes`. With `anchor`
    the profile's own runner is timed once more, each call against the anchor subnet (ANCHORED).
    """
    from hwnas.latency.backends import get_backend
    from hwnas.latency.measure import measure_rounds, rounds_settled
    from hwnas.latency.table import ROUND_AGREEMENT

    where: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        runners: dict[str, Any] = {}
        runners["onnxruntime"] = stack.enter_context(get_backend(_ort_profile(profile)).prepare_onnx(onnx_data, shape))
        where["onnxruntime"] = "this machine"
        if compiled is not None:
            tvm_profile = _tvm_profile(profile, compiled.target, compiled.tune_trials)
            from hwnas.export.tvm import is_cross_target

            if not is_cross_target(compiled.target) or tvm_profile.options.get("rpc_host"):
                tvm_backend = get_backend(tvm_profile)
                where["tvm"] = tvm_backend.describe()["remote"] or "this machine"
                runners["tvm"] = stack.enter_context(tvm_backend.prepare_compiled(compiled, shape, library=library))
        own = {"onnxruntime": "onnxruntime", "tvm": "tvm"}.get(profile.backend)
        if own is None:
            backend = get_backend(profile)
            if profile.backend == "tensorrt" and (tmp / "model.engine").exists():
                runner = backend.prepare_onnx(onnx_data, shape)
            else:
                runner = backend.prepare(module, shape)
            runners[profile.backend] = stack.enter_context(runner)
            where[profile.backend] = "this machine"
            own = profile.backend
        if own not in runners:
            raise NotAvailableError(f"the profile's backend {profile.backend} could not time the bundle here")
        speed = None
        if anchor is not None:
            from hwnas.latency.anchor import anchored, measure_anchor

            anchor_module, anchor_input, anchor_ms, mode = anchor
            own_backend = get_backend(profile)
            anchor_runner = stack.enter_context(own_backend.prepare(anchor_module, [profile.batch, *anchor_input]))
            # not entered in the stack: it wraps the own runner, which the stack closes
            runners[ANCHORED] = anchored(runners[own], anchor_runner, anchor_ms, mode)
            where[ANCHORED] = where[own]
            anchor_now = measure_anchor(anchor_runner, profile.protocol)
            speed = {"anchor_table_ms": anchor_ms, "anchor_now_ms": round(anchor_now, 6),
                     "speed_now_vs_profiling": round(anchor_ms / anchor_now, 4)}
        log(f"timing {', '.join(f'{name} ({where[name]})' for name in runners)}: "
            f"{profile.protocol.rounds} interleaved rounds, {profile.threads()} thread(s)")
        results = measure_rounds(runners, profile.protocol, min_round_interval_s=ROUND_INTERVAL_S,
                                 settle_seconds=SETTLE_SECONDS)
    measured = {name: {**_measurement_record(m, where[name]), "round_medians_ms": medians,
                       "settled": rounds_settled(medians)}
                for name, (m, medians) in results.items()}
    if speed is not None:
        measured[ANCHORED].update(speed, anchored_runner=own)
    for name, record in measured.items():
        if not record["settled"]:
            notes.append(f"{name} latency unsettled: its two lowest round medians "
                         f"({', '.join(f'{v:.4g}' for v in sorted(record['round_medians_ms'])[:2])} ms) differ by more "
                         f"than {ROUND_AGREEMENT:.0%}, so the machine was busy throughout; time it again on a quiet "
                         f"machine (hwnas export ... again, or hwnas validate)")
            log(notes[-1])
    return measured, measured[own]["median_ms"]


def export_selection(selection: Any, out_dir: str | os.PathLike, *, formats: Sequence[str] = ("onnx", "tvm"),
                     profile: DeviceProfile | str | None = None, tvm_target: str | dict | None = None,
                     tune_trials: int = 0, dynamic_batch: bool = False, untrained: bool = False,
                     measure_latency: bool = True, progress: bool = True) -> ExportResult:
    """Export the subnet a `hwnas.export.source.Selection` names: its trained weights extracted from
    the supernet checkpoint with BatchNorm recalibrated (or, with `untrained`, freshly initialised
    weights when the run has no checkpoint: the latency is the same, the outputs are not meaningful)."""
    from hwnas.export.source import build_space, predicted_latency, trained_subnet, untrained_subnet

    formats = parse_formats(formats)
    if not isinstance(profile, DeviceProfile):
        profile = load_profile(profile or DEFAULT_PROFILE)
    space = build_space(selection)
    arch = space.validate(selection.arch)
    if selection.supernet:
        if progress:
            print("export: extracting the subnet and recalibrating its BatchNorm", file=sys.stderr, flush=True)
        subnet, space, meta, accuracy = trained_subnet(selection.supernet, arch, space_name=selection.space_name,
                                                       estimate_accuracy=selection.accuracy is None)
        if selection.accuracy is None:
            selection.accuracy = accuracy
            selection.source["accuracy_from"] = "supernet evaluation of the subnet, BN recalibrated"
        weights = {"supernet": str(Path(selection.supernet).resolve()), "supernet_sha256": sha256(selection.supernet),
                   "trained": True, "epoch": meta.get("epoch"), "bn_recalibrated": True}
    elif untrained:
        subnet = untrained_subnet(space, arch)
        weights = {"supernet": None, "trained": False, "bn_recalibrated": "on random-normal inputs"}
    else:
        raise InputError("no supernet checkpoint: the run records none and none was given; pass --supernet C.pt "
                         "(or --untrained to export initialised weights, for latency only)", field="--supernet")
    predicted = selection.predicted_ms
    if predicted is None and selection.table:
        predicted = predicted_latency(selection.table, arch)
    source = {**selection.source, "weights": weights, "table": selection.table}
    anchor = None
    if selection.table and measure_latency:
        from hwnas.latency.anchor import table_anchor
        from hwnas.latency.table import LatencyTable

        # the table's anchor times the artifact in the table's units when the bundle is timed as the table was
        if LatencyTable.load(selection.table).profile_name == profile.name:
            anchor = table_anchor(selection.table)
    return export(subnet, space.input_shape(arch), out_dir, formats=formats, profile=profile,
                  tvm_target=tvm_target, tune_trials=tune_trials, dynamic_batch=dynamic_batch, arch=arch,
                  space=space.config(), accuracy=selection.accuracy, predicted_ms=predicted, source=source,
                  measure_latency=measure_latency, progress=progress, anchor=anchor)
