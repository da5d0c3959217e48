"""Latency table format: round trip, lookups, and every kind of bad file is an InputError."""

from __future__ import annotations

import json

import pytest

from hwnas.errors import InputError
from hwnas.latency.table import KIND, SCHEMA_VERSION, LatencyTable
from hwnas.runtime.measure import rounds_needed


def make_table(**entries) -> LatencyTable:
    return LatencyTable(
        space={"name": "tiny", "config": {"resolutions": [8]}},
        profile={"name": "cpu-ort-1t", "backend": "onnxruntime"},
        device={"cpu_model": "x", "cpu_cores": 2, "machine": "x86_64", "gpu_name": None},
        versions={"onnxruntime": "1.0"},
        protocol={"warmup": 1},
        entries={k: {"median_ms": v, "p25_ms": v * 0.9, "p75_ms": v * 1.1, "cv": 0.2, "n": 30}
                 for k, v in entries.items()},
        expected_entries=len(entries),
    )


def test_round_trip_keeps_everything(tmp_path):
    table = make_table(a=1.5, b=0.25)
    path = tmp_path / "t.json"
    table.save(path)
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == SCHEMA_VERSION and raw["kind"] == KIND and raw["complete"] is True
    loaded = LatencyTable.load(path)
    assert loaded.entries == table.entries
    assert loaded.space == table.space and loaded.profile == table.profile and loaded.device == table.device
    assert loaded.versions == table.versions and loaded.protocol == table.protocol
    assert loaded.lookup("a") == 1.5
    assert loaded.sum(["a", "b", "a"]) == pytest.approx(3.25)
    assert loaded.path == str(path)


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "t.json"
    make_table(a=1.0).save(path)
    make_table(a=1.0, b=2.0).save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]
    assert len(LatencyTable.load(path)) == 2


def test_sum_names_the_first_missing_op_key():
    table = make_table(a=1.0)
    with pytest.raises(InputError, match="first missing: 'zz'") as exc:
        table.sum(["a", "zz", "yy"])
    assert "2 of 3" in str(exc.value)
    with pytest.raises(InputError, match="'q' is not in this latency table"):
        table.lookup("q")


def _write(tmp_path, obj) -> str:
    path = tmp_path / "bad.json"
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


def _valid_raw() -> dict:
    return make_table(a=1.0, b=2.0).to_dict()


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda raw: "{not json", "not valid JSON"),
        (lambda raw: json.dumps(raw)[: len(json.dumps(raw)) // 2], "not valid JSON"),  # truncated
        (lambda raw: "", "not valid JSON"),
        (lambda raw: [1, 2], "not an hwnas latency table"),
        (lambda raw: {"kind": "hwnas-pareto-set", "schema_version": 1}, "not an hwnas latency table"),
        (lambda raw: {**raw, "schema_version": 99}, "unsupported schema_version 99"),
        (lambda raw: {k: v for k, v in raw.items() if k != "schema_version"}, "unsupported schema_version"),
        (lambda raw: {k: v for k, v in raw.items() if k != "entries"}, "field 'entries': missing"),
        (lambda raw: {k: v for k, v in raw.items() if k != "device"}, "field 'device': missing"),
        (lambda raw: {**raw, "entries": []}, "field 'entries': expected a dict"),
        (lambda raw: {**raw, "space": {"config": {}}}, "field 'space.name'"),
        (lambda raw: {**raw, "entries": {"a": {"median_ms": "fast", "p25_ms": 1, "p75_ms": 1, "cv": 0, "n": 3}}},
         "entries.a.median_ms"),
        (lambda raw: {**raw, "entries": {"a": {"median_ms": 1.0, "p25_ms": 1, "p75_ms": 1, "n": 3}}},
         "entries.a.cv"),
        (lambda raw: {**raw, "entries": {"a": {"median_ms": -1.0, "p25_ms": 1, "p75_ms": 1, "cv": 0, "n": 3}}},
         "expected a positive number"),
        (lambda raw: {**raw, "entries": {"a": {"median_ms": None, "p25_ms": 1, "p75_ms": 1, "cv": 0, "n": 3}}},
         "expected a finite number"),
        (lambda raw: {**raw, "entries": {"a": 3.0}}, "entries.a"),
    ],
)
def test_bad_tables_are_input_errors(tmp_path, mutate, message):
    path = _write(tmp_path, mutate(_valid_raw()))
    with pytest.raises(InputError, match=message) as exc:
        LatencyTable.load(path)
    assert path in str(exc.value)


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        LatencyTable.load(tmp_path / "absent.json")


def test_nan_median_is_rejected(tmp_path):
    raw = _valid_raw()
    text = json.dumps(raw).replace('"median_ms": 1.0', '"median_ms": NaN')
    with pytest.raises(InputError, match="finite number"):
        LatencyTable.load(_write(tmp_path, text))


def test_rounds_needed_confirms_the_lowest_round():
    def entry(*medians):
        return {"median_ms": min(medians), "rounds": len(medians), "round_medians_ms": list(medians)}

    assert rounds_needed(None, 3) == 3
    assert rounds_needed(entry(1.0), 3) == 2
    assert rounds_needed(entry(1.0, 1.02, 2.0), 3) == 0  # the two lowest agree within 5 %
    assert rounds_needed(entry(1.0, 1.5, 2.0), 3) == 1  # the lowest is unconfirmed
    assert rounds_needed(entry(1.0, 1.5, 2.0, 1.4, 1.3, 1.2), 3) == 0  # capped at twice the rounds
    assert rounds_needed(entry(1.0), 1) == 0
    assert rounds_needed({"median_ms": 1.0, "p25_ms": 1, "p75_ms": 1, "cv": 0, "n": 3}, 1) == 0


def test_fingerprint_names_the_cpu_vector_extensions(tmp_path):
    from hwnas.latency.fingerprint import cpu_isa, device_differences, device_fingerprint

    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse4_2 avx2 fma avx512f mmx avx\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm sve i8mm\n")
    assert cpu_isa(x86) == "avx avx2 avx512f fma sse4_2"  # the vector units only, sorted
    assert cpu_isa(arm) == "asimd i8mm sve"
    assert cpu_isa(tmp_path / "absent") is None
    assert device_fingerprint()["cpu_isa"] == cpu_isa()
    # same model name, other vector units: another device
    here = {"cpu_model": "AMD EPYC", "cpu_cores": 2, "machine": "x86_64", "gpu_name": None,
            "cpu_isa": cpu_isa(x86)}
    assert device_differences(here, {**here, "cpu_isa": "avx avx2 fma sse4_2"}) == ["cpu_isa"]
    # a table written before the field was recorded cannot tell, and is not refused for it
    older = {k: v for k, v in here.items() if k != "cpu_isa"}
    assert device_differences(older, here) == [] and device_differences(here, older) == []
    assert device_differences(here, {**here, "cpu_model": "Other"}) == ["cpu_model"]
    assert device_differences(here, {**here, "gpu_name": "NVIDIA H100"}) == ["gpu_name"]  # None is a value there
