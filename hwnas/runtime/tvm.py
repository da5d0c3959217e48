"""TVM (Relax) compilation of an exported ONNX model: local, cross-compiled, and over RPC.

    mod = import_onnx("model.onnx", [1, 3, 128, 128])
    compiled = compile_model(mod, "llvm", tune_trials=0)
    files = export_library(compiled, "deploy/model")   # model.so (+ model.tar for a cross target)

Targets are TVM 0.27 target dicts; the older command-line form ("llvm -mtriple=aarch64-linux-gnu
-mattr=+neon", as written in device profiles) is parsed into one by `parse_target`.
A target whose triple is not this machine's is cross-compiled: `model.tar` (the objects,
linked on the device by the RPC server's compiler) is always written, and `model.so` too
when a cross linker (`<triple>-gcc`) is on PATH.

MetaSchedule tuning (`tune_trials` > 0) runs in a child process so that a crash inside
the tuner cannot take the caller down; its records land in a JSON database that the
compilation then applies. The search samples the schedule space and measures each
candidate (replay-trace strategy), candidates compiled in the tuning process itself. The
tuner stores IR as JSON; where `tvm.ir.save_json` crashes (apache-tvm 0.27 beside
apache-tvm-ffi 0.1.15: SIGSEGV in tvm::ffi::ToJSONGraph; the `tvm` extra pins ffi below
0.1.15; probed in a child process) tuning raises NotAvailableError and the untuned library
is the option.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import InputError, NotAvailableError

# target attributes that TVM holds as lists
_LIST_ATTRS = {"mattr", "keys", "libs", "cl-opt"}
_HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def import_tvm() -> Any:
    try:
        import tvm
        from tvm import relax  # noqa: F401 - the compiler part, absent in runtime-only builds
    except ImportError as exc:
        raise NotAvailableError("TVM is not installed (pip install apache-tvm)") from exc
    return tvm


def parse_target(spec: str | dict) -> dict[str, Any]:
    """A TVM target dict from a dict, a JSON string, or the command-line form "llvm -key=value ..."."""
    if isinstance(spec, dict):
        target = dict(spec)
    elif isinstance(spec, str) and spec.strip().startswith("{"):
        try:
            target = json.loads(spec)
        except json.JSONDecodeError as exc:
            raise InputError(f"not a valid JSON target ({exc})", field="target") from exc
    elif isinstance(spec, str) and spec.strip():
        tokens = shlex.split(spec)
        target = {"kind": tokens[0]}
        for token in tokens[1:]:
            if not token.startswith("-") or "=" not in token:
                raise InputError(f"target option {token!r} is not of the form -key=value (in {spec!r})",
                                 field="target")
            key, value = token.lstrip("-").split("=", 1)
            if key in _LIST_ATTRS:
                target[key] = [v for v in value.split(",") if v]
            elif value.isdigit():
                target[key] = int(value)
            else:
                target[key] = value
    else:
        raise InputError(f"expected a TVM target such as 'llvm' or {{\"kind\": \"llvm\"}}, got {spec!r}",
                         field="target")
    if not isinstance(target.get("kind"), str):
        raise InputError(f"the target needs a 'kind' (llvm, cuda, ...), got {spec!r}", field="target")
    return target


def target_arch(target: dict[str, Any]) -> str:
    """The CPU architecture a target compiles for ("x86_64", "aarch64", ...)."""
    triple = target.get("mtriple")
    if not triple:
        return _HOST_ARCH.get(platform.machine().lower(), platform.machine().lower())
    return _HOST_ARCH.get(triple.split("-")[0].lower(), triple.split("-")[0].lower())


def is_cross_target(target: dict[str, Any]) -> bool:
    """True when the library cannot run on this machine (another CPU architecture)."""
    host = _HOST_ARCH.get(platform.machine().lower(), platform.machine().lower())
    return target["kind"] == "llvm" and target_arch(target) != host


def cross_compiler_for(target: dict[str, Any]) -> str | None:
    """The cross gcc on PATH for the target's triple (e.g. aarch64-linux-gnu-gcc), or None."""
    triple = target.get("mtriple")
    if not triple:
        return None
    return shutil.which(f"{triple}-gcc")


def host_target(spec: str | dict, *, threads: int | None = None) -> dict[str, Any]:
    """The target dict for `spec` with this CPU's features when it compiles for this machine.

    A CPU target (llvm) for this machine without `-mcpu` gets the host's (LLVM's name for it, e.g.
    znver4): MetaSchedule then searches with the vector units the code will run on (AVX2, FMA,
    AVX-512); without it, it tunes for a generic x86-64. `threads` sets `-num-cores`, the parallelism
    the schedules are written for. A cross target is left as written.
    """
    target = parse_target(spec)
    if target["kind"] == "llvm" and not is_cross_target(target) and "mcpu" not in target:
        import_tvm()
        from tvm.target import codegen

        cpu = str(codegen.llvm_get_system_cpu())
        if cpu and cpu != "generic":
            target["mcpu"] = cpu
    if threads is not None and target["kind"] == "llvm":
        target.setdefault("num-cores", int(threads))
    return target


def target_string(target: dict[str, Any]) -> str:
    """The command-line form of a target dict ("llvm -mcpu=znver4 -num-cores=1")."""
    parts = [str(target["kind"])]
    for key, value in target.items():
        if key == "kind":
            continue
        parts.append(f"-{key}=" + (",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)))
    return " ".join(parts)


def make_target(spec: str | dict, *, threads: int | None = None) -> Any:
    """A tvm.target.Target for `spec` as `host_target` completes it."""
    tvm = import_tvm()
    target = host_target(spec, threads=threads)
    try:
        return tvm.target.Target(target)
    except Exception as exc:  # noqa: BLE001 - TVM rejects the target with its own error type
        raise InputError(f"TVM does not accept target {target}: {exc}", field="target") from exc


def import_onnx(model: str | os.PathLike | bytes | Any, input_shape: Sequence[int], *,
                input_name: str = "input") -> Any:
    """A Relax IRModule from an ONNX model (path, bytes or ModelProto) with a fixed input shape; the
    input keeps the model's dtype (uint8 for a model with its image preprocessing inside)."""
    import onnx
    from onnx import helper

    import_tvm()
    from tvm.relax.frontend.onnx import from_onnx

    if isinstance(model, bytes):
        model = onnx.load_from_string(model)
    elif isinstance(model, (str, os.PathLike)):
        model = onnx.load(str(model))
    dtypes = {i.name: np.dtype(helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)).name
              for i in model.graph.input}
    try:
        return from_onnx(model, shape_dict={input_name: [int(d) for d in input_shape]},
                         dtype_dict={input_name: dtypes.get(input_name, "float32")})
    except Exception as exc:  # noqa: BLE001 - an op the frontend lacks is bad input for this exporter
        raise InputError(f"TVM's Relax ONNX frontend cannot import the model ({type(exc).__name__}: {exc}); "
                         "export the subnet without that op, or use the onnx format alone", field="model") from exc


@dataclass
class CompiledModel:
    """A Relax VM executable and how it was made."""

    executable: Any
    target: dict[str, Any]
    tune_trials: int = 0
    tuning: dict[str, Any] = field(default_factory=dict)
    input_dtype: str = "float32"

    @property
    def target_string(self) -> str:
        return target_string(self.target)

    def describe(self) -> dict[str, Any]:
        return {"target": self.target, "target_string": self.target_string, "tune_trials": self.tune_trials,
                "tuning": self.tuning}


def _fuse_passes() -> list[Any]:
    from tvm import relax

    return [
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]


def prepare_module(mod: Any, target: Any) -> Any:
    """Inference rewrites, legalisation and operator fusion (what tuning tasks are extracted from)."""
    tvm = import_tvm()
    from tvm import relax

    with target:
        seq = [relax.transform.DecomposeOpsForInference(), relax.transform.CanonicalizeBindings(), *_fuse_passes()]
        return tvm.transform.Sequential(seq)(mod)


def compile_model(mod: Any, target_spec: str | dict = "llvm", *, tune_trials: int = 0,
                  tune_dir: str | os.PathLike | None = None, threads: int = 1, seed: int = 0,
                  database: Any = None) -> CompiledModel:
    """Compile a Relax module for the target (completed by `host_target`), with the tuned schedules of
    `database` (a TuningDatabase), or tuned with MetaSchedule first (`tune_trials` in all), or untuned."""
    target_dict = host_target(target_spec, threads=threads)
    target = make_target(target_dict)
    fused = prepare_module(mod, target)
    tuning: dict[str, Any] = {}
    try:
        if tune_trials > 0:
            if is_cross_target(target_dict):
                raise InputError("tuning measures candidates on this machine; a cross target is tuned on "
                                 "the device through an RPC runner, which this exporter does not drive",
                                 field="tune_trials")
            from hwnas.runtime.tvm_tuning import TuningDatabase

            work_dir = Path(tune_dir) if tune_dir else Path(tempfile.mkdtemp(prefix="hwnas-tune-"))
            tuning = tune(fused, target_dict, work_dir, trials=tune_trials, threads=threads, seed=seed)
            database = TuningDatabase.from_work_dir(work_dir, target_string(target_dict))
        if database is not None:
            from hwnas.runtime.tvm_tuning import compile_with_database

            executable, applied = compile_with_database(fused, target, database)
            tuning = {**tuning, "database": database.path, "database_target": database.target, **applied}
        else:
            executable = tvm_compile(fused, target)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - a compile failure names the target and the cause
        raise RuntimeError(f"TVM failed to compile for target {target_dict}: {type(exc).__name__}: {exc}") from exc
    return CompiledModel(executable=executable, target=target_dict, tune_trials=tune_trials, tuning=tuning,
                         input_dtype=_main_input_dtype(mod))


def tvm_compile(fused: Any, target: Any) -> Any:
    tvm = import_tvm()
    return tvm.compile(fused, target)


def _main_input_dtype(mod: Any) -> str:
    """The dtype of the first parameter of a Relax module's `main` ("float32" when it cannot be read)."""
    try:
        param = mod["main"].params[0]
        info = getattr(param, "ty", None) or getattr(param, "struct_info", None)  # TVM 0.27: ty
        return str(info.dtype)
    except Exception:  # noqa: BLE001 - a module without a typed first parameter takes the float default
        return "float32"


def _tune_in_child(script_path: str, target: dict, work_dir: str, trials: int, threads: int, seed: int) -> None:
    from hwnas.runtime.tvm_tuning import register_cpu_intrinsics_only

    register_cpu_intrinsics_only()
    import tvm
    from tvm.s_tir import meta_schedule as ms

    mod = tvm.ir.load_json(Path(script_path).read_text())
    target_obj = tvm.target.Target(target)
    # the default evolutionary search's mutators crash when initialised in this TVM build;
    # replay-trace samples the same schedule space without them
    from hwnas.runtime.tvm_tuning import in_process_builder, space_generator

    runner = ms.runner.LocalRunner()
    try:
        ms.relax_integration.tune_relax(
            mod, params=None, target=target_obj, work_dir=work_dir, max_trials_global=trials,
            num_trials_per_iter=min(16, trials), seed=seed, space=space_generator(), strategy="replay-trace",
            cost_model="random", runner=runner, builder=in_process_builder(),
        )
    finally:
        runner.pool.shutdown()  # its worker process otherwise outlives this one


def tune(fused_mod: Any, target: dict[str, Any], work_dir: str | os.PathLike, *, trials: int, threads: int = 1,
         seed: int = 0) -> dict[str, Any]:
    """MetaSchedule tuning of every fused operator with `trials` measured candidates in all.

    Runs in a spawned child process; its records are in `work_dir`'s JSON database.
    """
    tvm = import_tvm()
    if not ir_serialization_works():
        # MetaSchedule stores workloads and traces as IR JSON: without it, the tuner cannot run
        raise NotAvailableError(f"MetaSchedule tuning cannot run with this TVM build (apache-tvm {tvm.__version__}): "
                                "serializing IR to JSON (tvm.ir.save_json) crashes the process; install "
                                "'apache-tvm-ffi<0.1.15' (0.1.15 crashes apache-tvm 0.27 there) or export untuned "
                                "(--tune-trials 0)")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    mod_path = work_dir / "module.json"
    mod_path.write_text(tvm.ir.save_json(fused_mod))
    target = {**target, "num-cores": int(threads)}
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_tune_in_child, args=(str(mod_path), target, str(work_dir), trials, threads, seed))
    proc.start()
    proc.join()
    if proc.exitcode is not None and proc.exitcode < 0:
        raise NotAvailableError(f"MetaSchedule tuning crashed in this TVM build (signal {-proc.exitcode}, "
                                f"apache-tvm {tvm.__version__}); its logs are in {work_dir / 'logs'}; "
                                "export untuned (--tune-trials 0) or use a TVM build whose tuner runs")
    if proc.exitcode != 0:
        raise RuntimeError(f"MetaSchedule tuning failed (child exit status {proc.exitcode}); "
                           f"its logs are in {work_dir / 'logs'}; export without --tune-trials")
    n_records, n_measured = _count_records(work_dir / "database_tuning_record.json")
    return {"trials": trials, "records": n_records, "measured": n_measured, "strategy": "replay-trace",
            "work_dir": str(work_dir)}


def _count_records(path: Path) -> tuple[int, int]:
    """(tuning records, records of candidates that built and ran) in a JSON database file."""
    from hwnas.runtime.tvm_tuning import best_seconds

    if not path.exists():
        return 0, 0
    records = measured = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        records += 1
        # a record is [workload index, [trace, run_secs, target, args_info]]
        if best_seconds(json.loads(line)[1]) is not None:
            measured += 1
    return records, measured


_IR_JSON_PROBE = "import tvm; tvm.ir.save_json(tvm.tirx.const(1, 'int32'))"


@functools.lru_cache(maxsize=1)
def ir_serialization_works() -> bool:
    """Whether tvm.ir.save_json works here (probed in a child process: in some builds it segfaults)."""
    probe = subprocess.run([sys.executable, "-c", _IR_JSON_PROBE], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=300, check=False)
    return probe.returncode == 0


@dataclass
class LibraryFiles:
    """What `export_library` wrote."""

    so: str | None  # loadable shared library (None for a cross target without a cross linker)
    tar: str | None  # objects for the device to link (cross targets)
    cross_compiler: str | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_library(compiled: CompiledModel, stem: str | os.PathLike) -> LibraryFiles:
    """Write `<stem>.so` (and `<stem>.tar` for a cross target)."""
    from tvm.support import cc

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    executable = compiled.executable
    if not is_cross_target(compiled.target):
        so = stem.with_suffix(".so")
        executable.export_library(str(so))
        return LibraryFiles(so=str(so), tar=None, cross_compiler=None)
    tar = stem.with_suffix(".tar")
    executable.export_library(str(tar))
    gcc = cross_compiler_for(compiled.target)
    if gcc is None:
        triple = compiled.target.get("mtriple", "?")
        note = (f"no cross linker {triple}-gcc on PATH: only {tar.name} (objects) was written; the RPC server "
                f"links it on the device, or install one (Debian: apt-get install gcc-aarch64-linux-gnu "
                f"libc6-dev-arm64-cross) to get a .so")
        return LibraryFiles(so=None, tar=str(tar), cross_compiler=None, notes=[note])
    so = stem.with_suffix(".so")
    try:
        executable.export_library(str(so), fcompile=cc.cross_compiler(gcc))
    except RuntimeError as exc:
        raise RuntimeError(f"cross-linking {so.name} with {gcc} failed ({exc}); is the target's C library "
                           "installed (Debian: libc6-dev-arm64-cross)?") from exc
    return LibraryFiles(so=str(so), tar=str(tar), cross_compiler=gcc)


def set_threads(threads: int, session: Any = None) -> None:
    """Fix the TVM runtime's worker threads, here or on an RPC session's device."""
    tvm = import_tvm()
    if session is None:
        # read when TVM's thread pool first starts: with it, one thread runs a parallel loop inline; after
        # config_threadpool(0, 1) alone a parallel loop still paid a pool launch (a 2-kernel network of a
        # 1x1 conv and a mean, tuned: 14.8 us a call against 2.2 us with TVM_NUM_THREADS=1)
        os.environ["TVM_NUM_THREADS"] = str(int(threads))
        config = tvm.get_global_func("runtime.config_threadpool", allow_missing=True)
    else:
        config = session.get_function("runtime.config_threadpool")
    if config is not None:
        config(0, int(threads))  # 0: big cores first (the default affinity), `threads` workers


def load_vm(library: str | os.PathLike | Any, device: Any = None) -> Any:
    """A Relax VirtualMachine over a library file, a loaded module or an executable."""
    tvm = import_tvm()
    from tvm import relax

    if isinstance(library, (str, os.PathLike)):
        library = tvm.runtime.load_module(str(library))
    return relax.VirtualMachine(library, device if device is not None else tvm.cpu())


def run_vm(vm: Any, inputs: Sequence[np.ndarray], device: Any = None) -> list[np.ndarray]:
    """The outputs of `main` for each input (the first output when there are several)."""
    tvm = import_tvm()
    device = device if device is not None else tvm.cpu()
    outputs = []
    for x in inputs:
        out = vm["main"](tvm.runtime.tensor(np.ascontiguousarray(x), device))
        if not hasattr(out, "numpy"):
            out = out[0]
        outputs.append(out.numpy())
    return outputs


def run_library(library: str | os.PathLike, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    return run_vm(load_vm(library), inputs)


# ---------------------------------------------------------------------------- RPC


@dataclass
class RpcAddress:
    host: str
    port: int = 9090
    key: str | None = None  # with a key, host:port is a tracker and a device is requested by key

    def describe(self) -> str:
        return f"{self.key}@tracker {self.host}:{self.port}" if self.key else f"{self.host}:{self.port}"


def connect(address: RpcAddress, *, timeout_s: float = 60.0) -> Any:
    """An RPC session with the device (directly, or through a tracker when a key is given)."""
    import_tvm()
    from tvm import rpc

    try:
        if address.key:
            tracker = rpc.connect_tracker(address.host, address.port)
            return tracker.request(address.key, session_timeout=int(timeout_s) * 10)
        return rpc.connect(address.host, address.port, session_timeout=int(timeout_s) * 10)
    except Exception as exc:  # noqa: BLE001 - an unreachable device is an input problem
        raise InputError(f"cannot reach the TVM RPC server at {address.describe()} ({type(exc).__name__}: {exc}); "
                         "start `python -m tvm.exec.rpc_server --host 127.0.0.1 --port PORT` on the device and "
                         "tunnel to it over SSH, or bind it to a private address (never 0.0.0.0: it runs any "
                         "uploaded code), and check rpc_host / rpc_port", field="rpc_host") from exc


def upload_library(session: Any, files: LibraryFiles) -> Any:
    """Upload the library and load it on the device: the .so when there is one, else the .tar
    (which the device's RPC server links with its own compiler)."""
    path = files.so or files.tar
    if path is None:
        raise RuntimeError("no library file to upload")
    session.upload(path)
    return session.load_module(Path(path).name)
