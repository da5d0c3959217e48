"""TVM backend: the module's ONNX export compiled by Relax for the profile's target, timed by
TVM's own `time_evaluator` here (target llvm) or on a remote device over TVM RPC.

Options (device profile): `target` (e.g. "llvm", or "llvm -mtriple=aarch64-linux-gnu
-mattr=+neon" for a board, cross-compiled here), `threads` (TVM runtime workers, fixed on
the device before timing), `rpc_host` / `rpc_port` (a `python -m tvm.exec.rpc_server` on the
device; with `rpc_key` they name a tracker instead), `tuning_trials` (MetaSchedule trials
per compiled model; 0: untuned), `tune` ({trials_per_op: N}: `hwnas profile` tunes every op
key's workloads with MetaSchedule, N measured candidates each, and times the tuned code; the
records go into a tuning database beside the table, which whole subnets are then compiled with
in `validate` and `export`; a workload shared by several op keys is tuned once).

A CPU target for this machine is completed with the host CPU (`-mcpu`, e.g. znver4) and
`-num-cores` (the threads), see `hwnas.runtime.tvm.host_target`.

Compilation happens once in `prepare`; each timed sample is one `time_evaluator` repeat of
one run (number=1) of the VM's stateful `main`, so the device clock times the inference and
the RPC round trip is never inside a sample. A cross target without an RPC address cannot
be timed here and is reported as NotAvailableError.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.device_profile import THREADS, Option
from hwnas.errors import InputError, NotAvailableError
from hwnas.runtime.backends import Backend, export_onnx_bytes, module_example, random_input, register_backend
from hwnas.runtime.runner import Runner


class TvmRunner(Runner):
    """A Relax VM with its input bound (`set_input`), on this machine or on an RPC device."""

    timing = "tvm_time_evaluator"

    def __init__(self, vm: Any, device: Any, input_array: np.ndarray, settings: dict[str, Any],
                 session: Any = None, workdir: tempfile.TemporaryDirectory | None = None):
        import tvm

        self.vm = vm
        self.device = device
        self.session = session  # keeps the RPC connection (and the remote module) alive
        self.workdir = workdir
        self.input = tvm.runtime.tensor(np.ascontiguousarray(input_array), device)
        vm.set_input("main", self.input)
        self.settings = settings
        self._evaluators: dict[int, Any] = {}

    def run(self) -> None:
        self.vm.invoke_stateful("main")

    def _evaluator(self, repeat: int) -> Any:
        if repeat not in self._evaluators:
            self._evaluators[repeat] = self.vm.time_evaluator("invoke_stateful", self.device, number=1,
                                                              repeat=repeat)
        return self._evaluators[repeat]

    def warmup(self, n: int) -> None:
        if n > 0:
            self._evaluator(n)("main")

    def time(self, n: int) -> list[float]:
        result = self._evaluator(n)("main")
        return [float(s) * 1e3 for s in result.results]

    def outputs(self) -> list[np.ndarray]:
        """The outputs of the last run (copied to this machine)."""
        self.vm.invoke_stateful("main")
        out = self.vm.get_outputs("main")
        return [out.numpy()] if hasattr(out, "numpy") else [o.numpy() for o in out]

    def describe(self) -> dict[str, Any]:
        return {"timing": self.timing, **self.settings}

    def close(self) -> None:
        self._evaluators.clear()
        self.vm = None
        self.input = None
        self.session = None
        if self.workdir is not None:
            self.workdir.cleanup()
            self.workdir = None


def _tune_rule(value: Any) -> str | None:
    trials = value.get("trials_per_op") if isinstance(value, dict) else None
    if (not isinstance(value, dict) or set(value) != {"trials_per_op"} or isinstance(trials, bool)
            or not isinstance(trials, int) or trials < 1):
        return "{trials_per_op: N} with N an integer >= 1 (measured candidates per op workload)"
    return None


@register_backend("tvm")
class TvmBackend(Backend):
    packages = ("apache-tvm", "onnx", "torch")
    options_schema = {
        "target": Option((str,), None, "llvm"),
        "threads": THREADS,
        "opt_level": Option((int,), (0, 1, 2, 3), 3),
        "rpc_host": Option((str,), None, None),
        "rpc_port": Option((int,), None, 9090),
        "rpc_key": Option((str,), None, None),
        "tuning_trials": Option((int,), None, 0),
        "tune": Option((dict,), None, None, check=_tune_rule),
    }

    def __init__(self, profile: Any):
        super().__init__(profile)
        self.database: Any = None  # the TuningDatabase subnets are compiled with
        self.tuner: Any = None  # set while profiling a table with `tune`
        self.database_path: Path | None = None
        self._label: str | None = None
        self._compiled: dict[tuple, Any] = {}  # while profiling with tuning: (ONNX sha256, shape) -> CompiledModel

    def target(self) -> dict[str, Any]:
        """The target dict compiled for: the database's when there is one, else the profile's on this host."""
        from hwnas.runtime.tvm import host_target, parse_target

        if self.database is not None:
            return parse_target(self.database.target)
        return host_target(self.options.get("target", "llvm"), threads=self.profile.threads())

    def attach_table(self, table: Any, *, profiling: bool = False) -> None:
        from hwnas.runtime.tvm import is_cross_target, target_string
        from hwnas.runtime.tvm_tuning import Tuner, TuningDatabase, tuning_path

        tune = self.options.get("tune") or {}
        if not profiling:
            path = table.tuning_file()
            if path is not None:
                self.database = TuningDatabase.load_verified(path, table.tuning["sha256"])
            return
        if not tune:
            return
        target = self.target()
        if is_cross_target(target):
            raise InputError("per-op tuning measures candidates on this machine; a cross target is not tuned "
                             "here", path=self.profile.path, field="options.tune")
        self.database_path = tuning_path(table.path)
        if table.tuning and self.database_path.is_file():
            # a resumed table: its database may hold one op more than the table (saved first)
            self.database = TuningDatabase.load(self.database_path)
            if self.database.target != target_string(target):
                raise InputError(f"the tuning database was tuned for target {self.database.target!r}, this host "
                                 f"compiles for {target_string(target)!r}; profile afresh (--overwrite)",
                                 path=str(self.database_path), field="target")
        elif table.tuning:
            raise InputError("the table names a tuning database that is missing; profile afresh (--overwrite)",
                             path=str(self.database_path), field="tuning.database")
        else:
            self.database = TuningDatabase.create(target_string(target))
        self.tuner = Tuner(self.database, int(tune["trials_per_op"]), threads=self.profile.threads())

    def table_record(self) -> dict[str, Any] | None:
        if self.tuner is None or self.database_path is None:
            return None
        sha = self.database.save(self.database_path)
        return {"database": self.database_path.name, "sha256": sha, "target": self.database.target,
                "trials_per_op": self.tuner.trials, "strategy": "replay-trace", **self.database.summary()}

    def prepare_op(self, key: str, module: Any, input_shape: Sequence[int]) -> TvmRunner:
        self._label = key
        try:
            return self.prepare(module, input_shape)
        finally:
            self._label = None

    def check_available(self) -> None:
        from hwnas.runtime.tvm import import_tvm, is_cross_target, parse_target

        import_tvm()
        target = parse_target(self.options.get("target", "llvm"))
        if target["kind"] != "llvm":
            raise NotAvailableError(f"the tvm backend times CPU targets (kind llvm) here; got kind "
                                    f"{target['kind']!r}")
        if is_cross_target(target) and not self.options.get("rpc_host"):
            raise NotAvailableError(f"target {self.options.get('target')!r} is for another CPU: set "
                                    "options.rpc_host (and rpc_port) to a TVM RPC server on that device")

    def describe(self) -> dict[str, Any]:
        from hwnas.runtime.tvm import target_string

        d = super().describe()
        d["remote"] = self.rpc_address().describe() if self.options.get("rpc_host") else None
        d["target_string"] = target_string(self.target())
        return d

    def rpc_address(self) -> Any:
        from hwnas.runtime.tvm import RpcAddress

        return RpcAddress(host=self.options["rpc_host"], port=int(self.options.get("rpc_port") or 9090),
                          key=self.options.get("rpc_key"))

    def prepare(self, module: Any, input_shape: Sequence[int]) -> TvmRunner:
        return self.prepare_onnx(export_onnx_bytes(module, module_example(module, input_shape)), input_shape)

    def prepare_onnx(self, onnx_model: bytes | str | Path, input_shape: Sequence[int]) -> TvmRunner:
        """Compile an ONNX model (bytes or a path) and bind a random input of `input_shape`."""
        from hwnas.runtime.tvm import compile_model, import_onnx, make_target, prepare_module

        key = None
        if self.tuner is not None:
            # profiling compiles each op again in every round: TVM's compile is deterministic, so the
            # rounds after the first reuse the executable (built with the records the op was tuned into)
            data = onnx_model if isinstance(onnx_model, bytes) else Path(onnx_model).read_bytes()
            key = (hashlib.sha256(data).hexdigest(), tuple(int(d) for d in input_shape))
            if key in self._compiled:
                return self.prepare_compiled(self._compiled[key], input_shape)
        cache_key = None
        if self.tuner is None and not self.options.get("rpc_host") and not int(self.options.get("tuning_trials") or 0):
            cache_key, runner = self._from_cache(onnx_model, input_shape)
            if runner is not None:
                return runner
        mod = import_onnx(onnx_model, input_shape)
        target = self.target()
        if self.tuner is not None:
            tvm_target = make_target(target)
            self.tuner.tune(prepare_module(mod, tvm_target), tvm_target, label=self._label or "whole network")
        compiled = compile_model(mod, target, tune_trials=int(self.options.get("tuning_trials") or 0),
                                 threads=self.profile.threads(), database=self.database)
        if key is not None:
            self._compiled[key] = compiled
        if cache_key is not None:
            from hwnas.runtime import tvm_cache
            from hwnas.runtime.tvm import LibraryFiles

            so = tvm_cache.store(cache_key, compiled)
            if so is not None:  # loading the written library is faster than linking the executable in memory
                return self.prepare_compiled(compiled, input_shape, library=LibraryFiles(so, None, None))
        return self.prepare_compiled(compiled, input_shape)

    def _from_cache(self, onnx_model: bytes | str | Path, input_shape: Sequence[int]) -> tuple[str | None, Any]:
        """(cache key, a runner over the cached library or None); key None: not cacheable
        (`hwnas.runtime.tvm_cache`: the library compiled earlier on this machine from the same ONNX
        bytes, shape, target and tuning records)."""
        from hwnas.runtime import tvm_cache
        from hwnas.runtime.tvm import CompiledModel, LibraryFiles, target_string

        if tvm_cache.cache_dir() is None or (self.database is not None and not self.database.sha256):
            return None, None
        data = onnx_model if isinstance(onnx_model, bytes) else Path(onnx_model).read_bytes()
        key = tvm_cache.cache_key(data, input_shape, target_string(self.target()),
                                  self.database.sha256 if self.database is not None else None)
        hit = tvm_cache.lookup(key)
        if hit is None:
            return key, None
        so, made = hit
        compiled = CompiledModel(executable=None, target=made["target"], tune_trials=0,
                                 tuning={**made.get("tuning", {}), "cached_library": so},
                                 input_dtype=made.get("input_dtype", "float32"))
        try:
            return key, self.prepare_compiled(compiled, input_shape, library=LibraryFiles(so, None, None))
        except Exception:  # noqa: BLE001 - an entry that no longer loads (damaged, another TVM build) is a miss
            return key, None

    def prepare_compiled(self, compiled: Any, input_shape: Sequence[int], *,
                         library: Any = None) -> TvmRunner:
        """A runner for an already compiled model (`library`: its exported LibraryFiles, if any)."""
        import tvm

        from hwnas.runtime.tvm import export_library, load_vm, set_threads, upload_library

        threads = self.profile.threads()
        settings = {"target": compiled.target, "threads": threads, "tune_trials": compiled.tune_trials}
        data = random_input(input_shape, dtype=compiled.input_dtype).numpy()
        if not self.options.get("rpc_host"):
            set_threads(threads)
            source = library.so if library is not None and library.so else compiled.executable
            return TvmRunner(load_vm(source), tvm.cpu(), data, {**settings, "device": "local"})
        workdir = None
        if library is None:
            workdir = tempfile.TemporaryDirectory(prefix="hwnas-tvm-")
            library = export_library(compiled, Path(workdir.name) / "model")
        from hwnas.runtime.tvm import connect

        address = self.rpc_address()
        session = connect(address)
        try:
            set_threads(threads, session)
            remote_module = upload_library(session, library)
            device = session.cpu()
            vm = load_vm(remote_module, device)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - say which device refused the library
            if workdir is not None:
                workdir.cleanup()
            raise RuntimeError(f"the RPC device {address.describe()} could not load the library: "
                               f"{type(exc).__name__}: {exc}") from exc
        return TvmRunner(vm, device, data, {**settings, "device": f"rpc {address.describe()}"},
                         session=session, workdir=workdir)
