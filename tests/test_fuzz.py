"""Fuzzed inputs to every file reader of the CLI: device profiles, latency tables, calibration
files and pareto.json, mutated (type changes, NaN/inf, negative numbers, missing and extra keys,
truncation, random bytes) and handed to each verb that reads them. Every mutation makes the file
invalid by construction; the property: exit status 2, the message names the file, no traceback, and no
file in the working folder is created or changed.

The example counts are sized for the normal test run (about 560 inputs in all). To fuzz longer, scale
them, e.g. `HWNAS_FUZZ_SCALE=20 python -m pytest -q tests/test_fuzz.py` (see tests/README.md).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_latency_profile import TINY

from hwnas.cli import main as cli_main
from hwnas.latency.predictor import METHODS, LatencyPredictor
from hwnas.latency.table import ENTRY_FIELDS, KIND
from hwnas.registry import BACKENDS
from hwnas.space import get_space
from hwnas.space.mbv3 import DEPTHS, EXPANDS, KERNELS, _is_int

SCALE = max(1, int(os.environ.get("HWNAS_FUZZ_SCALE", "1")))
FUZZ = settings(deadline=None, derandomize=SCALE == 1, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
SPACE = "mbv3-small-input"
SPACE_OPTIONS = {"resolutions": [8], "width_mult": 0.25}
ENTRY = "<first entry>"  # stands for the table's first op key in a path


# --- what makes a value valid where it sits (a mutation must never produce one) -------------------

def is_int(v: Any, low: float = -math.inf, high: float = math.inf) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def is_number(v: Any, low: float = -math.inf, high: float = math.inf) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and low <= v <= high


def equals(original: Any) -> Callable[[Any], bool]:
    return lambda v: v == original


@dataclass(frozen=True)
class Target:
    """A place in a document, the mutations that apply there, and what the reader accepts there."""

    path: tuple
    ops: tuple[str, ...]  # "type", "number", "missing", "extra"
    valid: Callable[[Any], bool] = lambda v: False


ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-10**9, 10**9), st.floats(), st.text(max_size=12),
                      st.lists(st.integers(-5, 5), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(),
                                                                                max_size=2))
BAD_NUMBERS = st.sampled_from([math.nan, math.inf, -math.inf, -1, -1e9, -0.5, 0, 0.0])


def resolve(doc: Any, path: tuple, first_entry: str | None) -> tuple[Any, Any]:
    """(container, key) of `path` in `doc`."""
    keys = [first_entry if k == ENTRY else k for k in path]
    node = doc
    for k in keys[:-1]:
        node = node[k]
    return node, keys[-1]


@st.composite
def mutation(draw, base: Any, targets: list[Target], serialize: Callable[[Any], bytes],
             first_entry: str | None = None) -> tuple[str, bytes]:
    """(what was done, the mutated file's bytes)."""
    how = draw(st.sampled_from(["field"] * 8 + ["truncate", "bytes"]))
    if how == "bytes":
        return "random bytes", draw(st.binary(max_size=300))
    if how == "truncate":
        data = serialize(base).rstrip()
        return "truncated", data[: draw(st.integers(0, len(data) - 1))]
    target = draw(st.sampled_from(targets))
    op = draw(st.sampled_from(target.ops))
    doc = copy.deepcopy(base)
    node, key = resolve(doc, target.path, first_entry) if target.path else ({"": doc}, "")
    if op == "missing":
        del node[key]
    elif op == "extra":
        value = node[key]
        if isinstance(value, list):
            value.append(draw(ANY_VALUE))
        else:
            value["zz_" + draw(st.text(alphabet="abcxyz", min_size=1, max_size=6))] = draw(ANY_VALUE)
    else:
        pool = ANY_VALUE if op == "type" else BAD_NUMBERS
        node[key] = draw(pool.filter(lambda v: not target.valid(v)))
    return f"{op} {'.'.join(map(str, target.path))}", serialize(doc)


def as_json(doc: Any) -> bytes:
    return (json.dumps(doc, indent=1) + "\n").encode()


def as_yaml(doc: Any) -> bytes:
    return yaml.safe_dump(doc, default_flow_style=True, sort_keys=False).encode()


# --- running a verb on a mutated file -----------------------------------------------------------

def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def check_rejected(folder: Path, bad_file: Path, argv: list[str], what: str) -> None:
    """The verb exits 2 naming `bad_file`, prints no traceback, and leaves `folder` as it was."""
    before = snapshot(folder)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli_main([*argv, "--json", "--no-progress"] if argv[0] in ("profile", "validate")
                          else [*argv, "--json"])
    printed = out.getvalue()
    error = json.loads(printed).get("error", "") if printed.strip() else ""
    context = f"{what}: {argv[0]} -> {status}: {error or err.getvalue()[-800:]}"
    assert status == 2, context
    assert str(bad_file) in error, context
    assert "Traceback" not in err.getvalue(), context
    assert snapshot(folder) == before, context


@contextlib.contextmanager
def workdir(base: Path, files: dict[str, bytes]):
    folder = Path(tempfile.mkdtemp(dir=base))
    try:
        for name, data in files.items():
            (folder / name).write_bytes(data)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- the valid documents the mutations start from -------------------------------------------------

@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Any]:
    """Valid inputs: a device profile, a latency table of a tiny space measured... by its provenance on
    this machine (device fingerprint, versions) with made-up entries, its calibration, a pareto.json."""
    root = tmp_path_factory.mktemp("fuzz")
    profile = {"name": "fuzz-ort", "backend": "onnxruntime", "options": {"threads": 1}, "batch": 1,
               "resolutions": [8, 9], "protocol": {"warmup": 1, "min_repeats": 3, "max_repeats": 8,
                                                   "max_seconds": 0.02, "rel_ci": 0.2, "rounds": 1},
               "description": "fuzz base"}
    (root / "p.yaml").write_bytes(as_yaml(profile))
    assert cli_main(["profile", str(root / "p.yaml"), "--space", TINY, "--out", str(root / "tiny.json"),
                     "--limit", "1", "--no-progress"]) == 0
    table = json.loads((root / "tiny.json").read_text())
    space = get_space(SPACE, **SPACE_OPTIONS)
    entry = next(iter(table["entries"].values()))
    rng = np.random.default_rng(0)
    table["space"] = {"name": SPACE, "config": space.config()}
    table["entries"] = {k: {**entry, "median_ms": float(rng.uniform(0.01, 0.1))} for k in space.all_ops()}
    table["expected_entries"] = len(table["entries"])
    (root / "t.json").write_bytes(as_json(table))
    predictor = LatencyPredictor.load(root / "t.json")
    archs = [space.sample(rng) for _ in range(8)]
    predictor.fit(archs, predictor.predict_raw(archs) * 1.2 + 0.05, methods=("affine",))
    predictor.save(root / "t.calibration.json")
    calibration = json.loads((root / "t.calibration.json").read_text())
    smallest = space.smallest()
    pareto = {"schema_version": 1, "kind": "hwnas.pareto", "space": SPACE, "space_options": space.config(),
              "supernet": None, "table": None, "budget_ms": 5.0,
              "pareto": [{"arch": smallest, "objectives": {"latency_ms": 1.0}}],
              "best_under_budget": {"arch": smallest, "objectives": {"latency_ms": 1.0}}}
    return {"profile": profile, "table": table, "calibration": calibration, "pareto": pareto,
            "first_entry": next(iter(table["entries"])), "root": root, "smallest": smallest}


# --- device profiles: `profile` and `export --profile` -----------------------------------------------

def _profile_targets() -> list[Target]:
    return [
        Target(("name",), ("type", "missing"), lambda v: isinstance(v, str) and bool(v.strip())),
        Target(("backend",), ("type", "missing"), lambda v: isinstance(v, str) and v in BACKENDS.names()),
        Target(("options",), ("type", "extra"), lambda v: not v or isinstance(v, dict)),
        Target(("options", "threads"), ("type", "number"), lambda v: v == "all" or is_int(v, 1)),
        Target(("batch",), ("type", "number"), lambda v: is_int(v, 1)),
        Target(("resolutions",), ("type",),
               lambda v: v is None or (isinstance(v, list) and bool(v) and all(is_int(r, 8) for r in v))),
        Target(("resolutions", 0), ("type", "number"), lambda v: is_int(v, 8)),
        Target(("protocol",), ("type", "extra"), lambda v: not v or isinstance(v, dict)),
        Target(("protocol", "warmup"), ("type", "number"), lambda v: is_int(v, 0, 10_000)),
        Target(("protocol", "min_repeats"), ("type", "number"), lambda v: is_int(v, 3, 8)),
        Target(("protocol", "max_seconds"), ("type", "number"), lambda v: is_number(v, 0.001, 3600)),
        Target(("protocol", "rel_ci"), ("type", "number"), lambda v: is_number(v, 0, 1)),
        Target(("description",), ("type",), lambda v: isinstance(v, str)),
        Target((), ("extra",)),
    ]


@given(data=st.data())
@settings(FUZZ, max_examples=300 * SCALE)
def test_fuzzed_device_profiles_are_rejected_by_every_verb_that_reads_them(bases, data):
    what, raw = data.draw(mutation(bases["profile"], _profile_targets(), as_yaml))
    with workdir(bases["root"], {"p.yaml": raw}) as w:
        verb = data.draw(st.sampled_from(["profile", "export"]))
        if verb == "profile":
            argv = ["profile", str(w / "p.yaml"), "--space", TINY, "--out", str(w / "t.json")]
        else:
            argv = ["export", "--arch", json.dumps(bases["smallest"]), "--space", SPACE, "--untrained",
                    "--format", "onnx", "--no-measure", "--profile", str(w / "p.yaml"), "--out", str(w / "D")]
        check_rejected(w, w / "p.yaml", argv, what)


# --- latency tables: `validate` and `search` ---------------------------------------------------------

def _table_targets() -> list[Target]:
    targets = [
        Target(("kind",), ("type", "missing"), equals(KIND)),
        Target(("schema_version",), ("type", "number", "missing"), equals(1)),
        *[Target((k,), ("type", "missing"), lambda v: isinstance(v, dict))
          for k in ("space", "profile", "device", "versions", "protocol", "entries")],
        Target(("space", "name"), ("type", "missing"), lambda v: v == SPACE),
        Target(("space", "config"), ("type", "extra"), lambda v: isinstance(v, dict)),
        Target(("profile", "name"), ("type", "missing"), lambda v: isinstance(v, str)),
        Target(("entries", ENTRY), ("type",), lambda v: isinstance(v, dict)),
        Target(("entries", ENTRY, "median_ms"), ("type", "number", "missing"), lambda v: is_number(v, 1e-300)),
        *[Target(("entries", ENTRY, f), ("type", "number", "missing"), lambda v: is_number(v, 0))
          for f in ENTRY_FIELDS if f != "median_ms"],
        Target(("entries", ENTRY, "rounds"), ("type", "number"), lambda v: is_int(v, 1)),
        Target(("expected_entries",), ("type",), lambda v: v is None or is_int(v, 0)),
    ]
    return targets


def _table_argv(verb: str, w: Path) -> list[str]:
    if verb == "validate":
        return ["validate", str(w / "t.json"), "--n", "2", "--calib-n", "3", "--calibration-out", str(w / "c.json"),
                "--plot", str(w / "p.png")]
    return ["search", "--space", SPACE, "--table", str(w / "t.json"), "--objectives", "latency_ms,params",
            "--budget-ms", "1000", "--pop", "4", "--gens", "1", "--out", str(w / "R")]


@given(data=st.data())
@settings(FUZZ, max_examples=300 * SCALE)
def test_fuzzed_latency_tables_are_rejected_by_every_verb_that_reads_them(bases, data):
    what, raw = data.draw(mutation(bases["table"], _table_targets(), as_json, bases["first_entry"]))
    with workdir(bases["root"], {"t.json": raw}) as w:
        verb = data.draw(st.sampled_from(["validate", "search"]))
        check_rejected(w, w / "t.json", _table_argv(verb, w), what)


@given(data=st.data())
@settings(FUZZ, max_examples=40 * SCALE)
def test_a_table_with_an_extra_entry_that_is_no_record_is_rejected(bases, data):
    table = copy.deepcopy(bases["table"])
    table["entries"]["zz|" + data.draw(st.text(max_size=8))] = data.draw(ANY_VALUE)
    with workdir(bases["root"], {"t.json": as_json(table)}) as w:
        verb = data.draw(st.sampled_from(["validate", "search"]))
        check_rejected(w, w / "t.json", _table_argv(verb, w), "extra entry")


# --- calibration files (read beside their table): `search` and `validate` ---------------------------

def _calibration_targets(calibration: dict) -> list[Target]:
    return [
        Target(("kind",), ("type", "missing"), equals(calibration["kind"])),
        Target(("schema_version",), ("type", "number", "missing"), equals(calibration["schema_version"])),
        Target(("method",), ("type", "missing"), lambda v: isinstance(v, str) and v in METHODS),
        Target(("coef",), ("type", "missing", "extra"),
               lambda v: isinstance(v, list) and len(v) == len(calibration["feature_names"])
               and all(isinstance(c, (int, float)) and math.isfinite(c) for c in v)),
        Target(("coef", 0), ("type", "number"), lambda v: isinstance(v, (int, float)) and math.isfinite(v)),
        Target(("feature_names",), ("type", "missing", "extra"), equals(calibration["feature_names"])),
        Target(("feature_names", 0), ("type",), equals(calibration["feature_names"][0])),
        Target(("provenance",), ("type",), lambda v: isinstance(v, dict)),
        Target(("loo_rel_rmse",), ("type",), lambda v: isinstance(v, dict)),
    ]


@given(data=st.data())
@settings(FUZZ, max_examples=150 * SCALE)
def test_fuzzed_calibration_files_are_rejected_by_every_verb_that_reads_them(bases, data):
    # validate does not read one: it fits the calibration afresh
    calibration = bases["calibration"]
    what, raw = data.draw(mutation(calibration, _calibration_targets(calibration), as_json))
    with workdir(bases["root"], {"t.json": as_json(bases["table"]), "t.calibration.json": raw}) as w:
        if data.draw(st.sampled_from(["search", "export"])) == "search":
            argv = _table_argv("search", w)
        else:
            # a run whose entry has no predicted latency: export predicts it from the run's table
            run = {**bases["pareto"], "table": str(w / "t.json"), "pareto": [{"arch": bases["smallest"]}]}
            (w / "pareto.json").write_bytes(as_json(run))
            argv = ["export", str(w / "pareto.json"), "--pick", "0", "--untrained", "--format", "onnx",
                    "--no-measure", "--out", str(w / "D")]
        check_rejected(w, w / "t.calibration.json", argv, what)


# --- pareto.json: `export` ---------------------------------------------------------------------------

def _pareto_targets(smallest: dict) -> list[Target]:
    return [
        Target(("pareto",), ("type", "missing"), lambda v: isinstance(v, list) and bool(v) and isinstance(v[0], dict)
               and isinstance(v[0].get("arch"), dict)),
        Target(("pareto", 0), ("type",), lambda v: isinstance(v, dict) and isinstance(v.get("arch"), dict)),
        Target(("pareto", 0, "arch"), ("type", "missing", "extra"), equals(smallest)),
        Target(("pareto", 0, "arch", "r"), ("type", "number", "missing"), equals(smallest["r"])),
        *[Target(("pareto", 0, "arch", gene), ("type", "missing", "extra"), equals(smallest[gene]))
          for gene in ("d", "k", "e")],
        *[Target(("pareto", 0, "arch", gene, 0), ("type", "number"), lambda v, c=choices: _is_int(v) and int(v) in c)
          for gene, choices in (("d", DEPTHS), ("k", KERNELS), ("e", EXPANDS))],
        Target(("space",), ("type", "missing"), equals(SPACE)),
        Target(("space_options",), ("type", "extra"), lambda v: False),
        Target(("supernet",), ("type",), lambda v: v is None or isinstance(v, str)),
        Target(("table",), ("type",), lambda v: v is None or isinstance(v, str)),
    ]


@given(data=st.data())
@settings(FUZZ, max_examples=300 * SCALE)
def test_fuzzed_pareto_files_are_rejected_by_export(bases, data):
    what, raw = data.draw(mutation(bases["pareto"], _pareto_targets(bases["smallest"]), as_json))
    with workdir(bases["root"], {"pareto.json": raw}) as w:
        argv = ["export", str(w / "pareto.json"), "--pick", "0", "--untrained", "--format", "onnx", "--no-measure",
                "--out", str(w / "D")]
        check_rejected(w, w / "pareto.json", argv, what)


# --- space spec files: `space show` and `profile --space` ---------------------------------------------

def _positive_int(v: Any) -> bool:
    return is_int(v, 1)


def _choices(v: Any) -> bool:
    return _positive_int(v) or (isinstance(v, list) and bool(v) and all(_positive_int(x) for x in v))


SPEC = {"name": "fuzz-net", "input": {"channels": 1, "resolutions": [16, 24]}, "classes": 10,
        "stem": {"block": "conv", "width": 8, "kernel": 3, "stride": 2, "act": "relu"},
        "stages": [{"block": "conv", "width": [8, 16], "depth": [1, 2], "kernel": [3, 5], "stride": 1, "act": "relu"},
                   {"block": "mbconv", "width": [16, 24], "depth": [1, 2], "kernel": [3, 5], "expand": [3, 6],
                    "stride": 2, "act": "relu"}],
        "head": {"width": 32}}


def _spec_targets() -> list[Target]:
    return [
        Target(("name",), ("type", "missing"), lambda v: isinstance(v, str) and bool(v.strip())),
        Target(("input",), ("type", "missing"), lambda v: False),
        Target(("input", "channels"), ("type", "number"), _positive_int),
        Target(("input", "resolutions"), ("type", "number", "missing"), _choices),
        Target(("classes",), ("type", "number"), _positive_int),
        Target(("stem", "width"), ("number",), _choices),
        Target(("stages",), ("type", "missing"), lambda v: False),
        Target(("stages", 0, "block"), ("type",), lambda v: v in ("conv", "mbconv", "fused_mbconv", "basic",
                                                                    "bottleneck", "cell")),
        Target(("stages", 0, "width"), ("number",), _choices),
        Target(("stages", 1, "depth"), ("number",), _choices),
        Target(("stages", 1, "kernel"), ("number",), _choices),
        Target(("stages", 1, "expand"), ("number",), _choices),
        Target(("stages", 1, "stride"), ("number",), _positive_int),
    ]


@given(data=st.data())
@settings(FUZZ, max_examples=120 * SCALE)
def test_fuzzed_space_specs_are_rejected_by_every_verb_that_reads_them(bases, data):
    base = bases["root"]
    assert cli_main(["space", "show", str(_write(base / "valid.yaml", as_yaml(SPEC))), "--json"]) == 0
    what, blob = data.draw(mutation(SPEC, _spec_targets(), as_yaml))
    with workdir(base, {"s.yaml": blob, "p.yaml": as_yaml(bases["profile"])}) as folder:
        spec = folder / "s.yaml"
        check_rejected(folder, spec, ["space", "show", str(spec)], what)
        check_rejected(folder, spec, ["profile", str(folder / "p.yaml"), "--space", str(spec), "--out",
                                      str(folder / "t.json")], what)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
