"""MetaSchedule tuning records kept with a latency table: tune each op workload once, apply them anywhere.

    db = TuningDatabase.create(target="llvm -mcpu=znver4 -num-cores=1")
    tuner = Tuner(db, trials_per_task=8)
    tuner.tune(fused_module, label="conv|i8x28x28|...")     # tunes only workloads not yet in db
    db.save("latency_tables/T.tuning.json.gz")               # returns its sha256
    executable, applied = compile_with_database(fused_module, target, db)

A workload is one fused TIR function of a Relax module (what MetaSchedule calls a task), keyed by
its structural hash: two op keys whose modules lower to the same workload share its record, and it
is tuned once. The file keeps, per workload, the workload itself, its best measured record, the
trials spent and the op keys that use it, as gzip'd JSON (written with a fixed timestamp, so the
same records give the same bytes and sha256). The latency table names the file and its sha256;
`load(path, sha256=...)` refuses a file that is missing or differs (InputError naming it).

The search is MetaSchedule's replay-trace (random samples of the schedule space, each built and
measured on this machine); candidates are compiled in this process (see `in_process_builder`).
"""

from __future__ import annotations

import atexit
import functools
import gzip
import hashlib
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwnas.errors import InputError
from hwnas.io import atomic_write_bytes, file_sha256

KIND = "hwnas-tvm-tuning-database"
SCHEMA_VERSION = 1
# MetaSchedule records a candidate that failed to build or run with this run time (seconds)
FAILED_RUN_SECS = 1e9
# the shortest time (ms) a candidate is run for when it is measured
MIN_REPEAT_MS = 20


def tuning_path(table_path: str | os.PathLike) -> Path:
    """Where the tuning database of the latency table at `table_path` is kept (beside it)."""
    table_path = Path(table_path)
    return table_path.with_name(table_path.stem + ".tuning.json.gz")


def best_seconds(record: list | None) -> float | None:
    """The mean run time (s) of a JSONDatabase record line's candidate; None when it failed."""
    if not record:
        return None
    run_secs = record[1]
    if not run_secs:
        return None
    secs = [float(s) for s in run_secs]
    mean = sum(secs) / len(secs)
    return None if max(secs) >= FAILED_RUN_SECS else mean


@dataclass
class WorkloadEntry:
    """One tuned workload: MetaSchedule's workload line, its best record (None: no candidate ran)."""

    key: str  # the workload's structural hash, as MetaSchedule's database writes it
    workload: list  # [hash, serialised IRModule] (a JSONDatabase workload line)
    record: list | None  # [trace, run_secs, target, args_info] (a JSONDatabase record line without its index)
    task: str
    trials: int
    op_keys: list[str] = field(default_factory=list)

    @property
    def best_us(self) -> float | None:
        secs = best_seconds(self.record)
        return None if secs is None else secs * 1e6

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "task": self.task, "trials": self.trials, "best_us": self.best_us,
                "op_keys": self.op_keys, "workload": self.workload, "record": self.record}


class TuningDatabase:
    """The tuning records of one target, with a MetaSchedule database over them for compiling."""

    def __init__(self, target: str, entries: dict[str, WorkloadEntry] | None = None, path: str | None = None):
        self.target = target
        self.entries: dict[str, WorkloadEntry] = dict(entries or {})
        self.path = path
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._ms_db: Any = None
        self.sha256: str | None = None  # of the file it was read from (None: built or changed in memory)

    @classmethod
    def create(cls, target: str) -> TuningDatabase:
        return cls(target)

    def __len__(self) -> int:
        return len(self.entries)

    def summary(self) -> dict[str, Any]:
        tuned = sum(1 for e in self.entries.values() if e.record is not None)
        return {"workloads": len(self.entries), "with_record": tuned,
                "trials": sum(e.trials for e in self.entries.values())}

    # --- the MetaSchedule side -----------------------------------------------------------
    def ms_database(self) -> Any:
        """A MetaSchedule JSONDatabase (in a scratch folder) holding these records; tuning adds to it."""
        if self._ms_db is None:
            from tvm.s_tir import meta_schedule as ms

            self._scratch = tempfile.TemporaryDirectory(prefix="hwnas-tuning-db-")
            folder = Path(self._scratch.name)
            entries = list(self.entries.values())
            (folder / "database_workload.json").write_text(
                "".join(json.dumps(e.workload) + "\n" for e in entries))
            (folder / "database_tuning_record.json").write_text(
                "".join(json.dumps([i, e.record]) + "\n" for i, e in enumerate(entries) if e.record is not None))
            self._ms_db = ms.database.JSONDatabase(work_dir=str(folder), module_equality="structural")
        return self._ms_db

    @classmethod
    def from_work_dir(cls, work_dir: str | os.PathLike, target: str, *, trials: int = 0) -> TuningDatabase:
        """The records MetaSchedule's JSONDatabase wrote into `work_dir` (e.g. by `tune_relax`)."""
        db = cls(target)
        workloads, records = _read_lines(Path(work_dir))
        db._add(workloads, records, None, trials)
        return db

    def absorb(self, tasks: dict[str, tuple[str, str]], trials: int) -> None:
        """Take the records tuning just wrote into the scratch database for `tasks` ({workload key: (task
        name, label)}): for each workload its best candidate (or none when every candidate failed)."""
        self._add(*_read_lines(Path(self._scratch.name)), tasks, trials)

    def _add(self, workloads: list[list], records: list[list], tasks: dict[str, tuple[str, str]] | None,
             trials: int) -> None:
        best: dict[int, list] = {}
        for index, record in records:
            secs = best_seconds(record)
            if secs is not None and (index not in best or secs < best_seconds(best[index])):
                best[index] = record
        for index, line in enumerate(workloads):
            key = str(line[0])
            if key in self.entries or (tasks is not None and key not in tasks):
                continue
            task, label = tasks[key] if tasks is not None else ("", None)
            self.entries[key] = WorkloadEntry(key=key, workload=line, record=best.get(index), task=task,
                                              trials=trials, op_keys=[label] if label else [])

    def close(self) -> None:
        self._ms_db = None
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    # --- persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "schema_version": SCHEMA_VERSION, "target": self.target,
                "workloads": [e.to_dict() for e in self.entries.values()]}

    def save(self, path: str | os.PathLike) -> str:
        """Write atomically (gzip'd JSON, fixed timestamp); returns the file's sha256."""
        raw = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        data = gzip.compress(raw, compresslevel=6, mtime=0)
        atomic_write_bytes(path, data)
        self.path = str(path)
        return hashlib.sha256(data).hexdigest()

    # read-only databases already read in this process, by (file, sha256): building MetaSchedule's database
    # over a table's records (parsing every workload's IR) took ~2-5 s, and one export reads it three times
    # (the bundle's library, the network alone, the anchor subnet)
    _shared: dict[tuple[str, str], TuningDatabase] = {}

    @classmethod
    def load_verified(cls, path: str | os.PathLike, sha256: str, *, field_name: str = "tuning.database"
                      ) -> TuningDatabase:
        """`load` with the sha256 the table records, shared by every reader in this process (the file is
        hashed each time; a database read this way is compiled with, never tuned into)."""
        key = (str(Path(path).resolve()), sha256)
        shared = cls._shared.get(key)
        if shared is not None:  # read before: the file's hash is checked again, its records not parsed again
            try:
                if hashlib.sha256(Path(path).read_bytes()).hexdigest() == sha256:
                    return shared
            except OSError:
                pass  # gone or unreadable: `load` says so
        database = cls.load(path, sha256=sha256, field_name=field_name)
        return cls._shared.setdefault(key, database)

    @classmethod
    def load(cls, path: str | os.PathLike, *, sha256: str | None = None, field_name: str = "tuning.database"
             ) -> TuningDatabase:
        """Read a database file; with `sha256`, refuse one whose bytes differ from what the table recorded."""
        path = Path(path)
        if not path.is_file():
            raise InputError("the TVM tuning database this table names is missing; copy it beside the table, or "
                             "profile again", path=str(path), field=field_name)
        if sha256 is not None:
            found = file_sha256(path)
            if found != sha256:
                raise InputError(f"the TVM tuning database differs from the one the table was measured with "
                                 f"(sha256 {found[:16]}..., the table records {sha256[:16]}...); restore it or "
                                 "profile again", path=str(path), field="tuning.sha256")
        try:
            data = path.read_bytes()
            raw = json.loads(gzip.decompress(data))
        except (OSError, EOFError, ValueError) as exc:
            raise InputError(f"not a gzip'd JSON TVM tuning database ({type(exc).__name__}: {exc})",
                             path=str(path), field=field_name) from exc
        if not isinstance(raw, dict) or raw.get("kind") != KIND:
            raise InputError(f"not an hwnas TVM tuning database (expected kind {KIND!r})", path=str(path),
                             field="kind")
        if raw.get("schema_version") != SCHEMA_VERSION:
            raise InputError(f"unsupported schema_version {raw.get('schema_version')!r}; this hwnas reads "
                             f"{SCHEMA_VERSION}", path=str(path), field="schema_version")
        entries = {}
        for i, item in enumerate(raw.get("workloads") or []):
            try:
                entry = WorkloadEntry(key=str(item["key"]), workload=list(item["workload"]), record=item["record"],
                                      task=str(item["task"]), trials=int(item["trials"]),
                                      op_keys=list(item.get("op_keys") or []))
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(f"workload {i} is malformed ({type(exc).__name__}: {exc})", path=str(path),
                                 field=f"workloads.{i}") from exc
            entries[entry.key] = entry
        if not isinstance(raw.get("target"), str):
            raise InputError("expected the target string the records were tuned for", path=str(path), field="target")
        database = cls(raw["target"], entries, path=str(path))
        database.sha256 = hashlib.sha256(data).hexdigest()
        return database


def workload_key(ms_db: Any, mod: Any) -> str:
    """The key MetaSchedule's database gives `mod` (its structural hash, as written in the workload file)."""
    return str(ms_db.commit_workload(mod).as_json()[0])


def _read_lines(folder: Path) -> tuple[list[list], list[list]]:
    """The workload and record lines of a MetaSchedule JSONDatabase folder."""
    def lines(name: str) -> list[list]:
        path = folder / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    return lines("database_workload.json"), lines("database_tuning_record.json")


def apply_database(fused: Any, target: Any, database: TuningDatabase) -> tuple[Any, dict[str, Any]]:
    """The fused module with each workload the database holds replaced by its tuned schedule, and
    which operators were tuned and which keep TVM's default schedule."""
    import tvm
    from tvm import relax

    with target, database.ms_database(), tvm.transform.PassContext(opt_level=3):
        applied = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(fused)
    tuned, default = [], []
    for gv, func in applied.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc):
            scheduled = func.attrs is not None and bool(func.attrs.get("tirx.is_scheduled", False))
            (tuned if scheduled else default).append(gv.name_hint)
    return applied, {"operators": len(tuned) + len(default), "tuned": len(tuned), "fell_back": len(default),
                     "tuned_operators": sorted(tuned), "default_operators": sorted(default)}


def compile_with_database(fused: Any, target: Any, database: TuningDatabase) -> tuple[Any, dict[str, Any]]:
    """A Relax executable whose tuned operators run the database's schedules (the others TVM's defaults).

    The records are applied to the fused module itself and the result compiled: MetaSchedule's
    `compile_relax` legalises and fuses again before applying them, and on a module fused already
    it found none (measured: a tuned 0.38 ms operator stayed at its default 7 ms).
    """
    import tvm

    applied, report = apply_database(fused, target, database)
    return tvm.compile(applied, target), report


def in_process_builder() -> Any:
    """A MetaSchedule builder that compiles candidates in this process.

    The stock LocalBuilder starts fresh worker processes for every batch; each pays TVM's import
    and intrinsic registration, longer than its build timeout on a 2-core machine, so every
    candidate failed.
    """
    import tvm
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    from tvm.support.tar import tar

    @derived_object
    class InProcessBuilder(ms.builder.PyBuilder):
        def build(self, build_inputs):
            results = []
            for item in build_inputs:
                try:
                    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(item.mod)
                    built = tvm.compile(mod, target=item.target)
                    path = os.path.join(tempfile.mkdtemp(prefix="hwnas-candidate-"), "candidate." + tar.output_format)
                    built.export_library(path, fcompile=tar)
                    results.append(ms.builder.BuilderResult(path, None))
                except Exception as exc:  # noqa: BLE001 - a failing candidate is recorded, tuning goes on
                    results.append(ms.builder.BuilderResult(None, f"build failed: {type(exc).__name__}: {exc}"))
            return results

    return InProcessBuilder()


def space_generator() -> Any:
    from tvm.s_tir import meta_schedule as ms

    # the evolutionary search's mutators crash when initialised in this TVM build; replay-trace
    # samples the same schedule space without them
    return ms.space_generator.PostOrderApply(sch_rules="llvm", postprocs="llvm", mutator_probs={})


class Tuner:
    """Tunes, in this process, the workloads of fused modules that the database does not hold yet.

    Candidates are timed with `threads` TVM runtime threads, as the built model runs: with the runner's
    default (every core), a candidate with a parallel loop paid a thread-pool launch per call, and the
    smallest kernels (a reshape) measured 15 us where they take well under one.
    """

    def __init__(self, database: TuningDatabase, trials_per_task: int, *, threads: int = 1, seed: int = 0):
        if isinstance(trials_per_task, bool) or not isinstance(trials_per_task, int) or trials_per_task < 1:
            raise InputError(f"expected an integer >= 1, got {trials_per_task!r}", field="tune.trials_per_op")
        self.database = database
        self.trials = trials_per_task
        self.threads = threads
        self.seed = seed
        self.tuned_tasks = 0  # workloads this tuner searched (each at most once)
        self._runner: Any = None

    def runner(self) -> Any:
        if self._runner is None:
            from tvm.s_tir import meta_schedule as ms

            # the runner process's TVM thread pool reads TVM_NUM_THREADS when it first starts (a builtin as the
            # initializer: the worker unpickles it without importing hwnas)
            # each candidate is timed for at least MIN_REPEAT_MS (MetaSchedule's default, 100 ms, made the
            # timing the larger part of tuning an op of a few microseconds)
            self._runner = ms.runner.LocalRunner(
                evaluator_config=ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=MIN_REPEAT_MS),
                initializer=functools.partial(os.putenv, "TVM_NUM_THREADS", str(self.threads)))
            atexit.register(self.close)  # its worker process otherwise outlives this one
        return self._runner

    def close(self) -> None:
        if self._runner is not None:
            self._runner.pool.shutdown()
            self._runner = None

    def tune(self, fused: Any, target: Any, *, label: str) -> dict[str, Any]:
        """Tune the workloads of `fused` not in the database yet (`label`: the op key they come from).

        Returns {"tasks": n, "tuned": newly tuned, "reused": already in the database}.
        """
        register_cpu_intrinsics_only()
        from tvm.s_tir import meta_schedule as ms

        ms_db = self.database.ms_database()
        tasks = ms.relax_integration.extract_tasks(fused, target, module_equality="structural")
        new, reused = [], 0
        for task in tasks:
            mod = task.dispatched[0]
            if ms_db.has_workload(mod):
                key = workload_key(ms_db, mod)
                entry = self.database.entries.get(key)
                if entry is not None and label not in entry.op_keys:
                    entry.op_keys.append(label)
                reused += 1
            elif mod.attrs is None or not mod.attrs.get("tirx.is_scheduled", False):
                new.append(task)
        if new:
            # MetaSchedule prints its task table to stdout at INFO; its log files keep everything
            ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
            ms_logger.setLevel(logging.WARNING)
            # MetaSchedule re-configures this logger by its handlers' names: a handler it did not make
            # (unnamed, e.g. left by an earlier run's teardown) makes its dictConfig fail
            for handler in list(ms_logger.handlers):
                if not (handler.get_name() or "").startswith("tvm.s_tir.meta_schedule"):
                    ms_logger.removeHandler(handler)
            with tempfile.TemporaryDirectory(prefix="hwnas-tune-") as logs:
                contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                    new, logs, space=space_generator(), strategy="replay-trace", seed=self.seed)
                trials = self.trials
                ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=logs,
                              max_trials_global=trials * len(contexts), max_trials_per_task=trials,
                              num_trials_per_iter=trials, builder=in_process_builder(), runner=self.runner(),
                              database=ms_db, cost_model="random", task_scheduler="round-robin")
            keys = {workload_key(ms_db, t.dispatched[0]): (t.task_name, label) for t in new}
            self.database.absorb(keys, self.trials)
            self.tuned_tasks += len(new)
        return {"tasks": len(tasks), "tuned": len(new), "reused": reused}


def register_cpu_intrinsics_only() -> None:
    """Import the x86 tensor intrinsics alone, not the whole `tvm.s_tir.tensor_intrin` package.

    MetaSchedule imports the package (every intrinsic of every target) when a tuning context or a
    build starts; its CUDA part alone takes 90-120 s to register on this 2-core machine. The CPU
    schedule rules used here (`llvm`) tensorize with nothing else.
    """
    import importlib.util
    import types

    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        return
    package = types.ModuleType(name)
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules[name] = package
    importlib.import_module(name + ".x86")
