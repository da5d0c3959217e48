"""Anchored timing: each call timed against a call of the table's anchor subnet."""

from __future__ import annotations

import json

import pytest

from hwnas.cli import main
from hwnas.device_profile import MeasurementProtocol, load_profile, profile_from_dict
from hwnas.errors import InputError
from hwnas.latency.anchor import AnchorBracket, AnchoredRunner, BracketedRunner, anchor_arch
from hwnas.latency.table import LatencyTable
from hwnas.runtime.measure import measure, measure_rounds
from hwnas.runtime.runner import Runner
from hwnas.space import get_space


class _Machine:
    """A shared machine whose speed changes every `period` calls (spells of a busy host)."""

    def __init__(self, slowdowns: list[float], period: int):
        self.slowdowns, self.period, self.calls = slowdowns, period, 0

    def call(self, ms: float) -> float:
        factor = self.slowdowns[(self.calls // self.period) % len(self.slowdowns)]
        self.calls += 1
        return ms * factor


class _OnMachine(Runner):
    """A network that takes `ms` on the quiet machine; reports what it took, not sleeping it."""

    def __init__(self, machine: _Machine, ms: float):
        self.machine, self.ms, self.closed = machine, ms, False

    def run(self) -> None:
        self.machine.call(self.ms)

    def time(self, n: int) -> list[float]:
        return [self.machine.call(self.ms) for _ in range(n)]

    def close(self) -> None:
        self.closed = True


_PROTO = MeasurementProtocol(warmup=2, min_repeats=40, max_repeats=40, max_seconds=5.0, rel_ci=1.0, max_cv=10.0,
                             remeasure=0)


def test_a_slowdown_common_to_both_calls_cancels():
    # the machine runs at 1x, 1.6x and 1.3x speed in spells of 7 calls: a plain median lands on a slow spell
    machine = _Machine([1.0, 1.6, 1.3, 1.6], period=7)
    plain = measure(_OnMachine(machine, 0.2), _PROTO)
    assert plain.median_ms > 0.25
    anchor = _OnMachine(machine, 0.25)
    wrapped = AnchoredRunner(_OnMachine(machine, 0.2), anchor, anchor_ms=0.25)
    m = measure(wrapped, _PROTO)
    # each call and the anchor's call right after it fall in one spell (but for the spell's last pair)
    assert m.median_ms == pytest.approx(0.2, rel=1e-9)
    assert m.settings["anchor_ms"] == 0.25
    wrapped.close()
    assert wrapped.runner.closed and not anchor.closed  # the anchor serves other runners


def test_anchored_runner_refuses_a_non_positive_anchor_latency():
    machine = _Machine([1.0], 1)
    with pytest.raises(ValueError, match="positive"):
        AnchoredRunner(_OnMachine(machine, 1.0), _OnMachine(machine, 1.0), 0.0)


def test_the_anchor_is_a_fixed_valid_subnet_of_the_space():
    space = get_space("mbv3-small-input")
    arch = anchor_arch(space)
    assert arch == anchor_arch(space) and space.validate(arch) == arch


class _Drifting(_Machine):
    """A machine that slows steadily, by `per_call` of its quiet speed with every call."""

    def __init__(self, per_call: float):
        super().__init__([1.0], 1)
        self.per_call = per_call

    def call(self, ms: float) -> float:
        self.calls += 1
        return ms * (1 + self.per_call * self.calls)


class _Counted(_OnMachine):
    def __init__(self, machine: _Machine, ms: float):
        super().__init__(machine, ms)
        self.measurements = 0

    def warmup(self, n: int) -> None:  # once per measurement
        self.measurements += 1
        super().warmup(n)


def test_a_bracketed_measurement_cancels_a_steady_drift():
    # a drift over the measurement: the plain median is 11 % high; the anchor's medians just before and
    # after it straddle the subnet's own by as much on either side, so their mean cancels it exactly
    machine = _Drifting(per_call=0.005)
    plain = measure(_OnMachine(machine, 0.2), _PROTO)
    assert plain.median_ms > 0.22
    machine.calls = 0
    anchor = _Counted(machine, 0.25)
    bracketed = BracketedRunner(_OnMachine(machine, 0.2), AnchorBracket(anchor, anchor_ms=0.25))
    m = measure(bracketed, _PROTO)
    assert m.median_ms == pytest.approx(0.2, rel=1e-9)
    assert m.settings["anchor_after_ms"] > m.settings["anchor_before_ms"] > 0.25


def test_bracketed_runners_of_one_run_share_the_anchor_measurement_between_them():
    machine = _Machine([1.3], 1)  # 1.3x slower than when the table was profiled
    anchor = _Counted(machine, 0.25)
    bracket = AnchorBracket(anchor, anchor_ms=0.25)
    runners = {ms: BracketedRunner(_OnMachine(machine, ms), bracket) for ms in (0.1, 0.2, 0.3)}
    results = measure_rounds(runners, _PROTO, rounds=1)
    assert [results[ms][0].median_ms for ms in (0.1, 0.2, 0.3)] == pytest.approx([0.1, 0.2, 0.3], rel=1e-9)
    assert anchor.measurements == 4  # one before each subnet, the last after; not 2 per subnet
    with pytest.raises(ValueError, match="positive"):
        AnchorBracket(anchor, anchor_ms=-1.0)


@pytest.mark.parametrize("value", ["yes", 1, None, "per_call"])
def test_profile_anchor_setting_must_be_a_boolean_or_a_mode(value):
    raw = load_profile("cpu-ort-1t").to_dict()
    raw["protocol"]["anchor"] = value
    with pytest.raises(InputError) as err:
        profile_from_dict(raw, source="p.yaml")
    assert err.value.field == "protocol.anchor" and "'per-call', 'bracket'" in str(err.value)


@pytest.mark.parametrize("value", [True, False, "per-call", "bracket"])
def test_profile_anchor_modes_are_accepted(value):
    raw = load_profile("cpu-ort-1t").to_dict()
    raw["protocol"]["anchor"] = value
    assert profile_from_dict(raw, source="p.yaml").protocol.anchor == value


@pytest.fixture(params=[True, "bracket"])
def anchored_table(request, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    import hwnas.latency.anchor as anchor_module
    from hwnas.latency.profile import profile

    monkeypatch.setattr(anchor_module, "ANCHOR_ROUND_INTERVAL_S", 0.0)  # the spacing only waits; not under test

    raw = load_profile("cpu-ort-1t").to_dict()
    raw["protocol"].update(warmup=1, min_repeats=3, max_repeats=5, max_seconds=0.01, remeasure=0,
                           anchor=request.param)
    path = tmp_path / "anchored.json"
    options = {"resolutions": [8], "width_mult": 0.25}
    result = profile(profile_from_dict(raw), "mbv3-small-input", path, quick=True, progress=False,
                     space_options=options, limit=4)
    assert result["measured"] == 4
    return raw, path, options


def test_an_anchored_table_records_its_anchor_and_resume_keeps_it(anchored_table):
    from hwnas.latency.profile import profile

    raw, path, options = anchored_table
    table = LatencyTable.load(path)
    space = get_space("mbv3-small-input", **options)
    assert table.protocol["anchor"] == raw["protocol"]["anchor"] and table.protocol["anchor_arch"] == anchor_arch(space)
    assert ("right before and right after" in table.protocol["anchored"]) == (table.protocol["anchor"] == "bracket")
    anchor_ms = table.protocol["anchor_ms"]
    assert anchor_ms > 0 and all(e["median_ms"] > 0 for e in table.entries.values())
    profile(profile_from_dict(raw), "mbv3-small-input", path, quick=True, progress=False, space_options=options,
            resume=True)
    resumed = LatencyTable.load(path)
    # the first run's unit is kept: entries of both runs are in the same anchor units
    assert resumed.complete and resumed.protocol["anchor_ms"] == anchor_ms
    runs = resumed.conditions["runs"]
    assert len(runs) == 2 and runs[0]["anchor_ms_start"] == anchor_ms
    assert all(r["anchor_ms_start"] > 0 and r["anchor_ms_end"] > 0 for r in runs)


def test_validate_times_an_anchored_table_against_its_anchor(anchored_table, capsys):
    from hwnas.latency.profile import profile

    raw, path, options = anchored_table
    profile(profile_from_dict(raw), "mbv3-small-input", path, quick=True, progress=False, space_options=options,
            resume=True)
    assert main(["validate", str(path), "--n", "3", "--calib-n", "4", "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    anchor = out["anchor"]
    assert anchor["table_ms"] == LatencyTable.load(path).protocol["anchor_ms"] and anchor["now_ms"] > 0
    assert anchor["speed_now_vs_profiling"] == pytest.approx(anchor["table_ms"] / anchor["now_ms"], rel=1e-3)
    cal = json.loads(path.with_suffix(".calibration.json").read_text())
    assert cal["provenance"]["anchor"]["table_ms"] == anchor["table_ms"]
    # an anchored table whose unit was lost cannot be compared with anything: exit 2, naming the field
    table = LatencyTable.load(path)
    del table.protocol["anchor_ms"]
    table.save()
    assert main(["validate", str(path), "--n", "3", "--calib-n", "4", "--json", "--no-progress"]) == 2
    err = json.loads(capsys.readouterr().out)["error"]
    assert "protocol.anchor_ms" in err and "anchor's latency" in err


def test_export_times_the_artifact_in_the_anchored_tables_units(anchored_table, tmp_path, capsys):
    import yaml

    from hwnas.latency.profile import profile

    raw, path, options = anchored_table
    profile(profile_from_dict(raw), "mbv3-small-input", path, quick=True, progress=False, space_options=options,
            resume=True)
    space = get_space("mbv3-small-input", **options)
    arch = space.smallest()
    run = tmp_path / "pareto.json"
    entry = {"arch": arch, "objectives": {"accuracy": 70.0, "latency_ms": 1.0}, "feasible": True}
    run.write_text(json.dumps({"space": "mbv3-small-input", "space_options": options, "supernet": None,
                               "table": str(path), "pareto": [entry]}))
    prof = tmp_path / "p.yaml"
    prof.write_text(yaml.safe_dump(raw))  # the table's own profile: the bundle is timed as the table was
    assert main(["export", str(run), "--pick", "0", "--format", "onnx", "--untrained", "--profile", str(prof),
                 "--out", str(tmp_path / "D"), "--json"]) == 0, capsys.readouterr().out
    latency = json.loads((tmp_path / "D" / "manifest.json").read_text())["latency"]
    anchored = latency["measured"]["at_table_speed"]
    assert latency["measured_at_table_speed_ms"] == anchored["median_ms"] > 0
    assert anchored["anchor_table_ms"] == LatencyTable.load(path).protocol["anchor_ms"]
    assert anchored["speed_now_vs_profiling"] == pytest.approx(
        anchored["anchor_table_ms"] / anchored["anchor_now_ms"], rel=1e-3)
    assert latency["measured"]["onnxruntime"]["median_ms"] > 0  # the plain wall-clock figure stays beside it


def test_validate_keeps_the_median_of_bracketed_rounds_and_the_lowest_otherwise(anchored_table, monkeypatch):
    """A bracketed round is a ratio to the anchor: a spell moves it up or down, so the median round is kept."""
    import numpy as np

    import hwnas.latency.validate as validate_module
    from hwnas.latency.validate import measure_subnets, table_protocol

    raw, path, options = anchored_table
    table = LatencyTable.load(path)
    space = get_space("mbv3-small-input", **options)
    rounds = {0: [0.30, 0.24, 0.27], 1: [0.50, 0.56, 0.52]}

    def fake_rounds(runners, protocol, n_rounds, **_):
        return {i: (type("M", (), {"median_ms": min(rounds[i])})(), rounds[i]) for i in runners}

    monkeypatch.setattr(validate_module, "measure_rounds", fake_rounds)
    archs = [space.sample(np.random.default_rng(s)) for s in (1, 2)]
    anchor = (table.protocol["anchor_arch"], table.protocol["anchor_ms"])
    ms, now = measure_subnets(profile_from_dict(raw), table_protocol(table), space, archs, rounds=3, anchor=anchor)
    assert now > 0
    expected = [0.27, 0.52] if raw["protocol"]["anchor"] == "bracket" else [0.24, 0.50]
    assert ms.tolist() == expected
    # without an anchor the lowest round is kept in every mode
    plain, _ = measure_subnets(profile_from_dict(raw), table_protocol(table), space, archs, rounds=3)
    assert plain.tolist() == [0.24, 0.50]
