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
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.device_profile import DeviceProfile, load_profile
from hwnas.errors import InputError, NotAvailableError
from hwnas.export.formats import ExportContext
from hwnas.export.preprocess import InputContract, OutputContract, RawImageModel
from hwnas.io import artifact_lock, atomic_write_json, file_sha256, temp_prefix
from hwnas.registry import EXPORTERS

# 2: the input / output contract, accuracy figures with split and size, predict.py
MANIFEST_SCHEMA_VERSION = 2
MANIFEST_KIND = "hwnas-bundle"
DEFAULT_PROFILE = "cpu-ort-1t"
# slow spells on a shared VM last up to a second or so (1-thread ONNX Runtime on a 2-vCPU VM, sampled
# every 0.2 s: spells of 0.2-1 s at +35-85 %), and one timing round of a bundle's few artifacts takes
# a fraction of that; spacing the rounds' starts keeps them from all falling into one spell
ROUND_INTERVAL_S = 1.0
# a bundle's timing goes on while a runner's two lowest rounds disagree, for at most this long: spells
# of +50-90 % lasting several seconds were seen on a 2-vCPU VM with nothing else running in it
SETTLE_SECONDS = 30.0
# the exported model's test accuracy is measured on at most this many held-out images
TEST_LIMIT = 10_000
PREDICT_SCRIPT = Path(__file__).with_name("predict.py")


@dataclass
class AccuracyFigure:
    """An accuracy (%) with the split and number of images it was measured on, and its standard error."""

    percent: float
    split: str  # "val" (held out of training, used by search), "test" (never seen by search), ...
    images: int | None
    how: str
    dataset: str | None = None

    @property
    def stderr(self) -> float | None:
        """The binomial standard error in percentage points (None when the number of images is unknown)."""
        from hwnas.stats import binomial_stderr

        return binomial_stderr(self.percent, self.images)

    def to_dict(self) -> dict[str, Any]:
        return {"percent": round(self.percent, 4), "stderr": None if self.stderr is None else round(self.stderr, 4),
                "split": self.split, "images": self.images, "dataset": self.dataset, "how": self.how}


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
            "accuracy": self.manifest["accuracy"],
            "notes": self.notes,
        }


def parse_formats(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Export format names (a list or a comma-separated string), each a registered exporter; onnx first."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    known = EXPORTERS.names()
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise InputError(f"unknown format(s) {', '.join(unknown) or '(none given)'}; expected a comma-separated "
                         f"list of {', '.join(known)}", field="formats")
    # every other format is built from the ONNX file, so it is always made, first
    return tuple(dict.fromkeys(["onnx", *names]))


def library_versions() -> dict[str, str]:
    from hwnas import __version__
    from hwnas.runtime.backends import package_versions

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
                             field="out")
        if any(out_dir.iterdir()) and not (out_dir / "manifest.json").is_file():
            raise InputError("is a non-empty folder that holds no bundle (no manifest.json); give a new or "
                             "empty folder, so nothing of yours is overwritten", path=str(out_dir), field="out")


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
           accuracy: float | AccuracyFigure | None = None, predicted_ms: float | None = None,
           source: dict | None = None, measure_latency: bool = True, progress: bool = True,
           anchor: tuple[Any, Sequence[int], float, str] | None = None, contract: InputContract | None = None,
           classes: Sequence[str] | None = None, test_images: tuple[Any, Any] | None = None,
           test_limit: int = TEST_LIMIT, table: Any = None) -> ExportResult:
    """Export `module` (eval mode, BN recalibrated) as a bundle in `out_dir`.

    `input_shape` (C, r, r) is the network's input without the batch; the profile's batch is used.
    The exported graphs take raw uint8 images and carry the preprocessing of `contract` (the
    training data's size, mean and std; without one: images at the network's resolution, scaled to
    [0, 1] only). `classes` names the outputs. `test_images` (uint8 images N x C x H x W, labels):
    held-out images on which the exported ONNX model's accuracy is measured (at most `test_limit`).
    `accuracy` is the search's estimate (an AccuracyFigure says its split and size).

    `profile` (a DeviceProfile or a shipped profile's name; default cpu-ort-1t) gives the backend the
    exported artifact is timed on and the measurement protocol; the TVM target is `tvm_target`, else the
    profile's when it is a TVM profile, else "llvm". `anchor` (module, input shape without the batch,
    anchor_ms) of an anchored latency table: the artifact is also timed against that anchor subnet, in
    the table's units (its latency at the profiling run's machine speed), comparable with `predicted_ms`.
    """
    from hwnas.export import onnx as onnx_export

    formats = parse_formats(formats)
    if not isinstance(profile, DeviceProfile):
        profile = load_profile(profile or DEFAULT_PROFILE)
    if tune_trials < 0:
        raise InputError(f"expected a number of trials >= 0, got {tune_trials}", field="tune_trials")
    tvm_database = None
    if table is not None and table.tuning and "tvm" in formats:
        from hwnas.runtime.tvm_tuning import TuningDatabase

        if tune_trials:
            raise InputError("the table's TVM tuning records are applied at export; tuning again is not needed "
                             "(drop --tune-trials)", field="tune_trials")
        tvm_database = TuningDatabase.load_verified(table.tuning_file(), table.tuning["sha256"])
        if tvm_target is None:
            tvm_target = tvm_database.target
    if tvm_target is None:
        tvm_target = profile.options.get("target", "llvm") if profile.backend == "tvm" else "llvm"
    net_shape = [int(d) for d in input_shape]
    if contract is None:
        contract = InputContract.unnormalised(net_shape[0], net_shape[-1])
    if [contract.channels, contract.resolution, contract.resolution] != net_shape:
        raise InputError(f"the input contract ({contract.channels} channels at {contract.resolution} px) does not "
                         f"fit the network's input {net_shape}", field="contract")
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir)
    exporters = [EXPORTERS.create(name) for name in formats]
    for exporter in exporters:  # before anything is compiled: a missing package or device fails fast
        if hasattr(exporter, "check_available"):
            exporter.check_available()
    model = RawImageModel(module, contract).eval()
    shape = [profile.batch, *contract.shape()[1:]]
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
        # random images and, when the data is at hand, real ones: every runtime against the torch model
        parity_inputs = onnx_export.random_inputs(shape, 3, dtype="uint8") + _real_images(test_images, shape)
        ctx = ExportContext(model=model, shape=shape, tmp=tmp, profile=profile, parity_inputs=parity_inputs,
                            torch_outputs=onnx_export.run_torch(model, parity_inputs), log=log, tvm_target=tvm_target,
                            tune_trials=tune_trials, dynamic_batch=dynamic_batch,
                            tensorrt_precision=tensorrt_precision, tvm_database=tvm_database)
        for exporter in exporters:  # onnx first: the others are built from it
            exporter.export(ctx)
        files, parity, notes, formats_info = ctx.files, ctx.parity, ctx.notes, ctx.formats_info
        onnx_data = ctx.onnx_data
        compiled, library = ctx.artifacts.get("tvm_compiled"), ctx.artifacts.get("tvm_library")

        shutil.copyfile(PREDICT_SCRIPT, tmp / "predict.py")
        files["predict"] = "predict.py"

        accuracy_record: dict[str, Any] = {"estimate": None, "test": None}
        if accuracy is not None:
            figure = accuracy if isinstance(accuracy, AccuracyFigure) else AccuracyFigure(
                float(accuracy), split="unknown", images=None, how="given to export")
            accuracy_record["estimate"] = figure.to_dict()
        if test_images is not None:
            log(f"test accuracy of model.onnx on {min(test_limit, len(test_images[1]))} held-out test images")
            accuracy_record["test"] = _test_accuracy(onnx_data, test_images, shape, dynamic_batch, test_limit,
                                                     dataset=contract.dataset).to_dict()

        measured: dict[str, Any] = {}
        measured_ms = None
        if measure_latency:
            measured, measured_ms = _measure(profile, module, [profile.batch, *net_shape], shape, onnx_data,
                                             compiled, library, tmp, log, notes, anchor, table)
        # with an anchored table the figure at the table's machine speed is the one the prediction is comparable with
        miss = prediction_miss(predicted_ms, measured.get(ANCHORED, {}).get("median_ms", measured_ms))
        if miss is not None:
            notes.append(miss)

        max_abs_diff = max(p["max_abs_diff"] for p in parity.values())
        manifest = {
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "kind": MANIFEST_KIND,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "arch": arch,
            "space": space,
            "input": contract.to_dict(batch=profile.batch, dynamic_batch=dynamic_batch),
            "output": OutputContract(class_names_for(classes, ctx.torch_outputs)).to_dict(
                batch=profile.batch, dynamic_batch=dynamic_batch),
            "input_shape": shape,
            "network_input_shape": [profile.batch, *net_shape],
            "dynamic_batch": dynamic_batch,
            "accuracy": accuracy_record,
            "latency": {
                "predicted_ms": predicted_ms,
                "measured_ms": measured_ms,
                # with an anchored table: the same artifact timed against the table's anchor subnet, in the
                # table's units (its machine speed), the figure the prediction is comparable with
                "measured_at_table_speed_ms": measured.get(ANCHORED, {}).get("median_ms"),
                # measured_ms: the network alone, as the table predicts it; measured["onnxruntime"] / ["tvm"]:
                # the bundle's artifacts as a deployment runs them, input preprocessing included
                "measured_ms_covers": "the input preprocessing too (TVM library)" if profile.backend == "tvm"
                else "the network alone, as the latency table predicts it",
                "artifact_ms": {k: v["median_ms"] for k, v in measured.items() if k in ("onnxruntime", "tvm")},
                "profile": profile.name,
                "backend": profile.backend,
                "protocol": asdict(profile.protocol),
                "measured": measured,
            },
            "files": {name: {"path": rel, "sha256": file_sha256(tmp / rel), "bytes": (tmp / rel).stat().st_size}
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


# a prediction further than this from the exported artifact's measured latency is reported in the bundle
PREDICTION_TOLERANCE = 0.10


def prediction_miss(predicted_ms: float | None, measured_ms: float | None,
                    tolerance: float = PREDICTION_TOLERANCE) -> str | None:
    """A note when the measured latency is more than `tolerance` from the predicted one, else None."""
    if not predicted_ms or not measured_ms:
        return None
    off = measured_ms / predicted_ms - 1.0
    if abs(off) <= tolerance:
        return None
    return (f"the measured latency ({measured_ms:.4g} ms) is {100 * off:+.0f} % from the predicted "
            f"{predicted_ms:.4g} ms (more than {100 * tolerance:.0f} %): the latency model does not hold for this "
            f"artifact here; calibrate the table on this device (hwnas validate) or profile it again")


def class_names_for(classes: Sequence[str] | None, outputs: list) -> list[str]:
    """The given class names, or "class i" for each of the model's outputs."""
    k = int(np.asarray(outputs[0]).shape[-1])
    if classes is not None and len(classes) == k:
        return [str(c) for c in classes]
    return [f"class {i}" for i in range(k)]


def _real_images(test_images: tuple[Any, Any] | None, shape: list[int], n: int = 4) -> list[np.ndarray]:
    """Up to `n` batches of real test images of `shape` (none without test images or of another size)."""
    if test_images is None:
        return []
    x = np.asarray(test_images[0])
    batch = shape[0]
    if x.ndim != 4 or list(x.shape[1:]) != shape[1:] or len(x) < batch:
        return []
    return [np.ascontiguousarray(x[i * batch:(i + 1) * batch], dtype=np.uint8) for i in range(min(n, len(x) // batch))]


def _test_accuracy(onnx_data: bytes, test_images: tuple[Any, Any], shape: list[int], dynamic_batch: bool,
                   limit: int, *, dataset: str | None) -> AccuracyFigure:
    """Top-1 accuracy of the exported ONNX model (ONNX Runtime, this CPU) on held-out test images."""
    from hwnas.export.onnx import ort_session

    x = np.asarray(test_images[0])[:limit]
    y = np.asarray(test_images[1])[:limit]
    if x.ndim != 4 or list(x.shape[1:]) != shape[1:]:
        raise InputError(f"test images of shape {list(x.shape[1:])} do not fit the model's input {shape[1:]}",
                         field="test_images")
    session = ort_session(onnx_data, threads=max(1, (os.cpu_count() or 1)))
    name = session.get_inputs()[0].name
    batch = 256 if dynamic_batch else shape[0]
    predictions = []
    for start in range(0, len(x), batch):
        chunk = np.ascontiguousarray(x[start:start + batch], dtype=np.uint8)
        real = len(chunk)
        if real < batch:  # a fixed-batch model: pad the last batch with copies of its first image
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch - real, axis=0)])
        predictions.append(session.run(None, {name: chunk})[0][:real].argmax(axis=-1))
    correct = int((np.concatenate(predictions) == y).sum()) if len(y) else 0
    return AccuracyFigure(100.0 * correct / max(1, len(y)), split="test", images=int(len(y)),
                          how="model.onnx of this bundle on ONNX Runtime, raw test images through its input "
                              "contract; images never used by training or search", dataset=dataset)


def _fingerprint() -> dict[str, Any]:
    from hwnas.latency.fingerprint import device_fingerprint

    return device_fingerprint()


ANCHORED = "at_table_speed"


def _measure(profile: DeviceProfile, network: Any, network_shape: list[int], shape: list[int], onnx_data: bytes,
             compiled: Any, library: Any, tmp: Path, log: Any, notes: list[str],
             anchor: tuple[Any, Sequence[int], float, str] | None = None, table: Any = None
             ) -> tuple[dict[str, Any], float | None]:
    """Time the exported artifacts with the profile's protocol: the bundle's model.onnx (raw images in,
    preprocessing inside) on ONNX Runtime, the TVM library (this CPU or the RPC device) when there is
    one, and the network alone (what the latency table predicts) on the profile's own backend.

    All runners are prepared first, then timed in the protocol's rounds, interleaved; each keeps its
    lowest round median, the statistic the latency table and `hwnas validate` use. Rounds start at
    least ROUND_INTERVAL_S apart, and continue (up to SETTLE_SECONDS) while a runner's two lowest round
    medians disagree; a runner that never settles is flagged in the record and in `notes`. With `anchor`
    the network's runner is timed once more, each call against the anchor subnet (ANCHORED). Returns the
    records and the network's latency on the profile's backend (compiled as `table`'s entries were).
    """
    from hwnas.runtime.backends import get_backend
    from hwnas.runtime.measure import ROUND_AGREEMENT, measure_rounds, rounds_settled

    where: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        runners: dict[str, Any] = {}
        ort_backend = get_backend(_ort_profile(profile))
        runners["onnxruntime"] = stack.enter_context(ort_backend.prepare_onnx(onnx_data, shape))
        where["onnxruntime"] = "this machine"
        if compiled is not None:
            tvm_profile = _tvm_profile(profile, compiled.target, compiled.tune_trials)
            from hwnas.runtime.tvm import is_cross_target

            if not is_cross_target(compiled.target) or tvm_profile.options.get("rpc_host"):
                tvm_backend = get_backend(tvm_profile)
                where["tvm"] = tvm_backend.describe()["remote"] or "this machine"
                runners["tvm"] = stack.enter_context(tvm_backend.prepare_compiled(compiled, shape, library=library))
        own = f"{profile.backend}_network"
        backend = get_backend(profile, table)
        if profile.backend == "tensorrt" and (tmp / "model.engine").exists():
            from hwnas.export.onnx import onnx_bytes

            runner = backend.prepare_onnx(onnx_bytes(network, network_shape), network_shape)
        else:
            runner = backend.prepare(network, network_shape)
        runners[own] = stack.enter_context(runner)
        where[own] = backend.describe().get("remote") or "this machine"
        if own not in runners:
            raise NotAvailableError(f"the profile's backend {profile.backend} could not time the bundle here")
        speed = None
        if anchor is not None:
            from hwnas.latency.anchor import anchored, measure_anchor

            anchor_module, anchor_input, anchor_ms, mode = anchor
            own_backend = get_backend(profile, table)
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
    contract = classes = test_images = None
    estimate = None
    if selection.supernet:
        if progress:
            print("export: extracting the subnet and recalibrating its BatchNorm", file=sys.stderr, flush=True)
        trained = trained_subnet(selection.supernet, arch, space_name=selection.space_name,
                                 estimate_accuracy=selection.accuracy is None)
        subnet, space, meta, data = trained.module, trained.space, trained.meta, trained.data
        if selection.accuracy is None:
            estimate = AccuracyFigure(float(trained.accuracy), split=trained.split, images=trained.eval_images,
                                      how="supernet weights shared, BatchNorm recalibrated (evaluated by export)",
                                      dataset=data.name)
        elif selection.estimator in (None, "supernet"):
            estimate = AccuracyFigure(selection.accuracy, split=trained.split, images=trained.eval_images,
                                      how="supernet weights shared, BatchNorm recalibrated: the search's estimate",
                                      dataset=data.name)
        else:
            estimate = AccuracyFigure(selection.accuracy, split="none (predicted)", images=None,
                                      how=f"the search's '{selection.estimator}' estimator", dataset=data.name)
        contract = InputContract.from_dataset(data, arch["r"] if "r" in arch else space.input_shape(arch)[-1],
                                              stats=meta.get("data"))
        classes = list(data.classes)
        test_images = (data.test_x.numpy(), data.test_y.numpy())
        weights = {"supernet": str(Path(selection.supernet).resolve()),
                   "supernet_sha256": file_sha256(selection.supernet),
                   "trained": True, "epoch": meta.get("epoch"), "bn_recalibrated": True}
    elif untrained:
        subnet = untrained_subnet(space, arch)
        weights = {"supernet": None, "trained": False, "bn_recalibrated": "on random-normal inputs"}
        if selection.accuracy is not None:
            estimate = AccuracyFigure(selection.accuracy, split="unknown", images=None,
                                      how="the search run's estimate; these weights are untrained")
    else:
        raise InputError("no supernet checkpoint: the run records none and none was given; give one (CLI: --supernet "
                         "C.pt), or export initialised weights, for latency only (untrained; CLI: --untrained)",
                         field="supernet")
    predicted = selection.predicted_ms
    if predicted is None and selection.table:
        predicted = predicted_latency(selection.table, arch)
    source = {**selection.source, "weights": weights, "table": selection.table}
    anchor = table = None
    if selection.table:
        from hwnas.latency.anchor import table_anchor
        from hwnas.latency.table import LatencyTable

        table = LatencyTable.load(selection.table)  # refused here when its tuning database is missing or altered
        # the table's anchor times the artifact in the table's units when the bundle is timed as the table was
        if measure_latency and table.profile_name == profile.name:
            anchor = table_anchor(selection.table)
    return export(subnet, space.input_shape(arch), out_dir, formats=formats, profile=profile,
                  tvm_target=tvm_target, tune_trials=tune_trials, dynamic_batch=dynamic_batch, arch=arch,
                  space=space.config(), accuracy=estimate, predicted_ms=predicted, source=source,
                  measure_latency=measure_latency, progress=progress, anchor=anchor, contract=contract, table=table,
                  classes=classes, test_images=test_images)
