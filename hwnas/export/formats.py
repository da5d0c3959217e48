"""Export formats, looked up by name (`hwnas.registry.EXPORTERS`): onnx, tvm, tensorrt, or a plugin's.

An exporter writes its files into the bundle being built and records what it wrote in the
`ExportContext` it is handed: the exported module and its input shape, the temporary bundle folder,
the device profile, random and real parity inputs with the torch model's outputs on them, and the
files, parity checks, notes and per-format records of the formats before it. ONNX comes first:
every other format is built from `context.onnx_data`. A new format is a class here (or in a plugin
package, entry-point group `hwnas.exporters`) with a `name`, `export(context)` and, optionally,
`check_available(context)`, which runs before anything is compiled.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwnas.device_profile import DeviceProfile
from hwnas.errors import InputError
from hwnas.registry import EXPORTERS


class ExportError(InputError):
    """A format could not be produced for this model here: the CLI exits 2 with what failed and what to do."""


@dataclass
class ExportContext:
    """What every exporter reads (the model, shape, folder, profile, parity data) and adds to."""

    model: Any  # the torch module exported (raw uint8 images in, preprocessing inside)
    shape: list[int]  # its input shape with the profile's batch
    tmp: Path  # the bundle being built
    profile: DeviceProfile
    parity_inputs: list  # numpy inputs every runtime is checked on
    torch_outputs: list  # the torch model's outputs on them
    log: Any
    tvm_target: str | dict = "llvm"
    tune_trials: int = 0
    tvm_database: Any = None  # a TuningDatabase (the latency table's) the TVM library is compiled with
    dynamic_batch: bool = False
    tensorrt_precision: str | None = None
    onnx_data: bytes | None = None  # written by the onnx exporter
    files: dict[str, str] = field(default_factory=dict)  # name -> path inside the bundle
    parity: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    formats_info: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)  # in-memory results the latency measurement times


def register_exporter(name: str):
    """Decorator: register an exporter class under `name` (it gets `cls.name = name`)."""
    return EXPORTERS.register(name)


def export_step(what: str, fn: Any) -> Any:
    """Run one export step; a failure becomes an ExportError naming the step and what to do."""
    try:
        return fn()
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure of a format is reported, none is hidden
        raise ExportError(f"{what} failed: {type(exc).__name__}: {exc}. Export the other formats "
                          f"(formats onnx only), or fix the cause named here", field="formats") from exc


def checked(parity: Any) -> Any:
    if not parity.passed:
        raise ExportError(f"{parity.runtime}'s output differs from {parity.reference}'s by {parity.max_abs_diff:.3g} "
                          f"(> {parity.tolerance:g}) on the parity images", field="formats")
    return parity


@register_exporter("onnx")
class OnnxExporter:
    """model.onnx (opset 17, BN folded), checked against torch with ONNX Runtime."""

    def export(self, ctx: ExportContext) -> None:
        from hwnas.export import onnx as onnx_export

        ctx.log(f"ONNX (opset {onnx_export.ONNX_OPSET}, uint8 input {ctx.shape}"
                f"{', dynamic batch' if ctx.dynamic_batch else ''}, preprocessing inside)")
        info = export_step("ONNX export", lambda: onnx_export.export_onnx(ctx.model, ctx.shape, ctx.tmp / "model.onnx",
                                                                          dynamic_batch=ctx.dynamic_batch))
        ctx.files["onnx"] = "model.onnx"
        ctx.formats_info["onnx"] = {k: v for k, v in info.to_dict().items() if k not in ("path", "parity")}
        ctx.notes += info.notes
        ctx.onnx_data = (ctx.tmp / "model.onnx").read_bytes()
        ort_outputs = onnx_export.run_ort(ctx.onnx_data, ctx.parity_inputs)
        ctx.parity["onnxruntime_vs_torch"] = checked(onnx_export.compare_outputs(
            ctx.torch_outputs, ort_outputs, reference_name="torch", runtime="onnxruntime")).to_dict()


@register_exporter("tvm")
class TvmExporter:
    """model.so (TVM Relax library for the target; model.tar too for a cross target), checked against torch."""

    def export(self, ctx: ExportContext) -> None:
        from hwnas.export.onnx import compare_outputs
        from hwnas.runtime import tvm as tvm_export

        tvm_export.import_tvm()
        target_dict = tvm_export.parse_target(ctx.tvm_target)
        cross = tvm_export.is_cross_target(target_dict)
        tune_trials, tmp, profile = ctx.tune_trials, ctx.tmp, ctx.profile
        database = ctx.tvm_database
        target_dict = tvm_export.host_target(target_dict, threads=profile.threads())
        ctx.log(f"TVM Relax compile for {tvm_export.target_string(target_dict)}"
                + (f", MetaSchedule {tune_trials} trials" if tune_trials else "")
                + (f", the table's tuning records ({len(database)} workloads)" if database is not None else ""))
        mod = export_step("TVM import", lambda: tvm_export.import_onnx(ctx.onnx_data, ctx.shape))
        compiled = export_step("TVM compile", lambda: tvm_export.compile_model(
            mod, target_dict, tune_trials=tune_trials, tune_dir=tmp / "tuning" if tune_trials else None,
            threads=profile.threads(), database=database))
        library = export_step("TVM library export", lambda: tvm_export.export_library(compiled, tmp / "model"))
        if tune_trials:
            shutil.rmtree(tmp / "tuning", ignore_errors=True)  # the records are baked into the library
        tvm_parity = None
        if not cross:
            outputs = export_step("TVM run", lambda: tvm_export.run_library(library.so, ctx.parity_inputs))
            tvm_parity = compare_outputs(ctx.torch_outputs, outputs, reference_name="torch", runtime="tvm")
        elif profile.backend == "tvm" and profile.options.get("rpc_host"):
            from hwnas.runtime.backends import get_backend

            backend = get_backend(profile)
            outputs = []
            with backend.prepare_compiled(compiled, ctx.shape, library=library) as runner:
                for x in ctx.parity_inputs:
                    runner.input.copyfrom(x)
                    outputs.append(runner.outputs()[0])
            tvm_parity = compare_outputs(ctx.torch_outputs, outputs, reference_name="torch", runtime="tvm (rpc)")
        if tvm_parity is not None and not tvm_parity.passed:
            raise ExportError(f"the TVM library's output differs from torch's by {tvm_parity.max_abs_diff:.3g} "
                              f"(> {tvm_parity.tolerance:g}); export the onnx format only", field="formats")
        tuning = {k: v for k, v in compiled.tuning.items() if k not in ("work_dir", "database")}
        if database is not None:
            from hwnas.runtime.tvm_tuning import file_sha256

            tuning["records"] = {"file": Path(database.path).name, "sha256": file_sha256(database.path),
                                 "target": database.target, "workloads": len(database)}
        info = {"target": compiled.target, "target_string": compiled.target_string, "cross_compiled": cross,
                "library": library.to_dict(), "tune_trials": tune_trials, "tuning": tuning}
        info["library"] = {k: (Path(v).name if isinstance(v, str) and k in ("so", "tar") else v)
                           for k, v in info["library"].items()}
        ctx.files.update({k: Path(v).name for k, v in (("tvm_so", library.so), ("tvm_tar", library.tar)) if v})
        ctx.formats_info["tvm"] = info
        ctx.notes += library.notes
        ctx.artifacts.update(tvm_compiled=compiled, tvm_library=library)
        if tvm_parity is not None:
            ctx.parity["tvm_vs_torch"] = tvm_parity.to_dict()
        else:
            ctx.notes.append("TVM parity not checked: the library is for another CPU and no RPC device was given")


@register_exporter("tensorrt")
class TensorRTExporter:
    """model.engine (TensorRT, where tensorrt and a GPU exist), checked against ONNX Runtime."""

    def check_available(self, ctx: ExportContext | None = None) -> None:
        from hwnas.export.tensorrt import check_available

        check_available()  # before anything is compiled: a missing tensorrt / GPU fails fast

    def export(self, ctx: ExportContext) -> None:
        from hwnas.export import onnx as onnx_export
        from hwnas.export.tensorrt import export_engine

        profile = ctx.profile
        precision = ctx.tensorrt_precision or profile.options.get("precision", "fp16")
        if precision not in ("fp16", "fp32"):
            precision = "fp16"
        static = ctx.onnx_data if not ctx.dynamic_batch else onnx_export.onnx_bytes(ctx.model, ctx.shape)
        ctx.log(f"TensorRT engine ({precision})")
        engine = export_step("TensorRT engine", lambda: export_engine(
            static, ctx.shape, ctx.tmp / "model.engine", precision=precision,
            workspace_mb=int(profile.options.get("workspace_mb", 1024))))
        ctx.files["tensorrt"] = "model.engine"
        ctx.parity["tensorrt_vs_onnxruntime"] = engine.parity.to_dict()
        ctx.formats_info["tensorrt"] = {k: v for k, v in engine.to_dict().items() if k not in ("path", "parity")}
