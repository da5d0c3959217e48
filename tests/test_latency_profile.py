"""`hwnas profile`: every op measured once, atomic saves, resume, refusal to mix, exit statuses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from torch import nn

import hwnas.latency.profile as profile_module
from hwnas.cli import main as cli_main
from hwnas.errors import InputError
from hwnas.latency.profile import lowest_confirmed, profile
from hwnas.latency.table import LatencyTable
from hwnas.runtime.measure import ROUND_AGREEMENT, rounds_needed
from hwnas.space.base import SearchSpace, register_space

TESTS = Path(__file__).resolve().parent
TINY = "tiny-conv-latency-test"


@register_space(TINY)
class TinyConvSpace(SearchSpace):
    """One gene: the input side of a single 3x3 conv. Op keys "conv|i4xHxH|o8xHxH|k3"."""

    name = TINY

    def __init__(self, n_ops: int = 6, resolutions=None):
        self.sizes = list(resolutions) if resolutions else list(range(8, 8 + n_ops))

    def config(self) -> dict:
        return {"name": TINY, "sizes": self.sizes}

    def sample(self, rng):
        return {"h": int(self.sizes[rng.integers(len(self.sizes))])}

    def mutate(self, arch, rng, prob=0.1):
        return self.sample(rng) if rng.random() < prob else dict(arch)

    def crossover(self, a, b, rng):
        return dict(a if rng.random() < 0.5 else b)

    def encode(self, arch):
        return np.array([self.sizes.index(arch["h"])])

    def decode(self, x):
        return {"h": self.sizes[int(x[0])]}

    @property
    def bounds(self):
        return np.array([0]), np.array([len(self.sizes) - 1])

    def ops(self, arch):
        return [self._key(arch["h"])]

    def all_ops(self):
        return [self._key(h) for h in self.sizes]

    @staticmethod
    def _key(h: int) -> str:
        return f"conv|i4x{h}x{h}|o8x{h}x{h}|k3"

    def build_op(self, key: str):
        h = int(key.split("|")[1].split("x")[1])
        return nn.Conv2d(4, 8, 3, padding=1), (4, h, h)


PROFILE_YAML = """\
name: {name}
backend: onnxruntime
options: {{threads: 1}}
protocol: {{warmup: 1, min_repeats: 3, max_repeats: 8, max_seconds: 0.02, rel_ci: 0.2, remeasure: 0, rounds: {rounds}}}
"""


@pytest.fixture
def profile_path(tmp_path) -> Path:
    path = tmp_path / "fast.yaml"
    path.write_text(PROFILE_YAML.format(name="fast-ort", rounds=1))
    return path


def count_measurements(monkeypatch) -> dict:
    calls = {"n": 0}
    real = profile_module.measure

    def counting(runner, protocol):
        calls["n"] += 1
        return real(runner, protocol)

    monkeypatch.setattr(profile_module, "measure", counting)
    return calls


def test_profile_measures_every_op_once_with_provenance(profile_path, tmp_path, monkeypatch):
    calls = count_measurements(monkeypatch)
    out = tmp_path / "t.json"
    result = profile(profile_path, TINY, out, progress=False)
    assert result["entries"] == 6 and result["measured"] == 6 and result["reused"] == 0 and result["complete"]
    assert calls["n"] == 6
    table = LatencyTable.load(out)
    assert sorted(table.keys()) == sorted(TinyConvSpace().all_ops())
    assert table.profile["name"] == "fast-ort" and table.space == {"name": TINY, "config": TinyConvSpace().config()}
    assert table.device["cpu_cores"] == os.cpu_count() and table.device["cpu_model"]
    assert "onnxruntime" in table.versions and "torch" in table.versions
    assert table.protocol["threads"] == 1 and table.protocol["min_repeats"] == 3 and table.protocol["quick"] is False
    assert all(e["median_ms"] > 0 and e["n"] >= 3 for e in table.entries.values())
    (run,) = table.conditions["runs"]
    assert run["measurements"] == 6 and len(run["loadavg_start"]) == 3 and run["finished"] >= run["started"]


def test_resume_does_not_remeasure(profile_path, tmp_path, monkeypatch):
    out = tmp_path / "t.json"
    first = profile(profile_path, TINY, out, limit=2, progress=False)
    assert first["entries"] == 2 and not first["complete"]
    kept = LatencyTable.load(out).entries
    calls = count_measurements(monkeypatch)
    second = profile(profile_path, TINY, out, resume=True, progress=False)
    assert (second["measured"], second["reused"], second["entries"]) == (4, 2, 6)
    assert calls["n"] == 4
    table = LatencyTable.load(out)
    assert all(table.entries[k] == v for k, v in kept.items())
    third = profile(profile_path, TINY, out, resume=True, progress=False)
    assert (third["measured"], third["reused"]) == (0, 6) and calls["n"] == 4


def test_rounds_keep_the_least_disturbed_pass_and_resume_finishes_a_pass(tmp_path, monkeypatch):
    path = tmp_path / "two.yaml"
    path.write_text(PROFILE_YAML.format(name="two-rounds", rounds=2))
    out = tmp_path / "t.json"
    calls = count_measurements(monkeypatch)
    first = profile(path, TINY, out, limit=3, progress=False)
    assert first["measured"] == 3 and 6 <= first["measurements"] <= 12 and calls["n"] == first["measurements"]
    table = LatencyTable.load(out)
    for entry in table.entries.values():
        assert 2 <= entry["rounds"] <= 4 and len(entry["round_medians_ms"]) == entry["rounds"]
        assert rounds_needed(entry, 2) == 0
        # the lowest round another round confirms (or the lowest): the kept round lies within the agreement of it
        target = lowest_confirmed(entry["round_medians_ms"])
        assert entry["median_ms"] in entry["round_medians_ms"]
        assert abs(entry["median_ms"] - target) <= ROUND_AGREEMENT * target
        assert entry["p25_ms"] <= entry["median_ms"] <= entry["p75_ms"]
    # an entry left after its first round (as after an interruption) gets exactly one more round
    raw = json.loads(out.read_text())
    key = next(iter(raw["entries"]))
    raw["entries"][key] = {**raw["entries"][key], "rounds": 1, "round_medians_ms": [123.0], "median_ms": 123.0}
    out.write_text(json.dumps(raw))
    assert not LatencyTable.load(out).complete
    second = profile(path, TINY, out, resume=True, progress=False)
    assert second["measured"] == 4 and second["reused"] == 2 and second["complete"]
    merged = LatencyTable.load(out).entries[key]
    # 123 ms disagrees with the new round, so a confirmation round followed
    assert merged["rounds"] >= 3 and merged["round_medians_ms"][0] == 123.0 and merged["median_ms"] < 1.0


def test_existing_table_is_not_overwritten_without_a_flag(profile_path, tmp_path):
    out = tmp_path / "t.json"
    profile(profile_path, TINY, out, limit=1, progress=False)
    before = out.read_text()
    with pytest.raises(InputError, match="--resume"):
        profile(profile_path, TINY, out, progress=False)
    assert out.read_text() == before
    assert profile(profile_path, TINY, out, overwrite=True, progress=False)["measured"] == 6


def test_resume_refuses_another_profile_space_or_device(profile_path, tmp_path):
    out = tmp_path / "t.json"
    profile(profile_path, TINY, out, limit=1, progress=False)
    other = tmp_path / "other.yaml"
    other.write_text(PROFILE_YAML.format(name="other-ort", rounds=1))
    with pytest.raises(InputError, match="cannot resume.*profile"):
        profile(other, TINY, out, resume=True, progress=False)
    with pytest.raises(InputError, match="cannot resume.*space"):
        profile(profile_path, TINY, out, resume=True, space_options={"n_ops": 3}, progress=False)
    with pytest.raises(InputError, match="cannot resume.*protocol"):
        profile(profile_path, TINY, out, resume=True, quick=True, progress=False)
    raw = json.loads(out.read_text())
    raw["device"]["cpu_model"] = "Some Other CPU"
    out.write_text(json.dumps(raw))
    with pytest.raises(InputError, match="cannot resume.*device cpu_model"):
        profile(profile_path, TINY, out, resume=True, progress=False)


def test_resume_of_a_corrupt_table_is_an_input_error(profile_path, tmp_path):
    out = tmp_path / "t.json"
    out.write_text('{"kind": "hwnas-latency-table", "schema_version": 1, "entr')
    with pytest.raises(InputError, match="not valid JSON"):
        profile(profile_path, TINY, out, resume=True, progress=False)


def test_profile_resolutions_restrict_the_ops(tmp_path):
    path = tmp_path / "res.yaml"
    path.write_text(PROFILE_YAML.format(name="res-ort", rounds=1) + "resolutions: [9, 11]\n")
    result = profile(path, TINY, tmp_path / "t.json", progress=False)
    assert result["entries"] == 2
    assert set(LatencyTable.load(tmp_path / "t.json").keys()) == {TinyConvSpace._key(9), TinyConvSpace._key(11)}


def child_main(argv: list[str]) -> int:
    """Entry point of the subprocess in the kill test (the tiny space is registered by importing this file)."""
    return cli_main(argv)


def test_kill_9_mid_profiling_leaves_a_loadable_table_that_resume_completes(profile_path, tmp_path):
    n_ops = 60
    out = tmp_path / "t.json"
    big = tmp_path / "big.yaml"
    big.write_text(PROFILE_YAML.format(name="fast-ort", rounds=1))
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r}); import test_latency_profile as t; "
        f"t.TinyConvSpace.__init__.__defaults__ = ({n_ops}, None); sys.exit(t.child_main(sys.argv[1:]))"
    )
    cmd = [sys.executable, "-c", code, "profile", str(big), "--space", TINY, "--out", str(out), "--no-progress"]
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    try:
        while time.time() < deadline and child.poll() is None:
            if out.exists() and len(json.loads(out.read_text())["entries"]) >= 3:
                break
            time.sleep(0.01)
        assert child.poll() is None, f"child ended before it could be killed: {child.stderr.read().decode()}"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    partial = LatencyTable.load(out)
    done = len(partial)
    assert 3 <= done < n_ops and not partial.complete
    result = profile(big, TINY, out, resume=True, space_options={"n_ops": n_ops}, progress=False)
    assert (result["reused"], result["measured"], result["entries"]) == (done, n_ops - done, n_ops)
    final = LatencyTable.load(out)
    assert final.complete and all(final.entries[k] == v for k, v in partial.entries.items())


def test_cli_json_keys(profile_path, tmp_path, capsys):
    out = tmp_path / "t.json"
    assert cli_main(["profile", str(profile_path), "--space", TINY, "--out", str(out), "--json", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {"table", "entries", "measured", "reused", "seconds"} <= set(printed)
    assert printed["entries"] == 6 and printed["table"] == str(out)


@pytest.mark.parametrize(
    "yaml_text,message",
    [
        ("name: x\nbackend: onnxruntime\noptions: {threads: zero}\n", "options.threads"),
        ("name: x\nbackend: quantum\n", "unknown backend"),
        ("name: x\nbackend: onnxruntime\nprotocol: [1\n", "not valid YAML"),
    ],
)
def test_cli_bad_profile_exits_2(tmp_path, capsys, yaml_text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml_text)
    assert cli_main(["profile", str(bad), "--space", TINY, "--out", str(tmp_path / "t.json"), "--json"]) == 2
    captured = capsys.readouterr()
    assert message in json.loads(captured.out)["error"]
    assert not (tmp_path / "t.json").exists()


def test_cli_unknown_space_and_missing_profile_exit_2(profile_path, tmp_path):
    assert cli_main(["profile", str(profile_path), "--space", "no-such-space", "--out", str(tmp_path / "t.json")]) == 2
    assert cli_main(["profile", str(tmp_path / "absent.yaml"), "--space", TINY]) == 2


def test_quick_protocol_is_recorded(profile_path, tmp_path):
    result = profile(profile_path, TINY, tmp_path / "t.json", quick=True, progress=False, limit=1)
    table = LatencyTable.load(result["table"])
    assert table.protocol["quick"] is True and table.protocol["max_seconds"] <= 0.1


def _round(median: float, n: int):
    from hwnas.runtime.measure import Measurement

    return Measurement(median_ms=median, mean_ms=median, min_ms=median * 0.9, p10_ms=median * 0.95,
                       p25_ms=median * 0.98, p75_ms=median * 1.02, p90_ms=median * 1.05, cv=0.04,
                       std_over_mean=0.05, ci_low_ms=median * 0.99, ci_high_ms=median * 1.01, n=n,
                       stop_reason="stable", attempts=1, seconds=0.1)


def test_a_lone_fast_round_is_not_kept_once_two_others_agree():
    from hwnas.latency.profile import lowest_confirmed, merge_round

    # rounds seen on a 2-vCPU VM with 2 intra-op threads: one round at about half the op's usual time
    entry = None
    for i, median in enumerate([0.0126, 0.0235, 0.0229, 0.0236]):
        entry = merge_round(entry, _round(median, n=10 + i))
        if i == 1:  # nothing confirmed yet: the lowest round stands
            assert entry["median_ms"] == 0.0126 and entry["n"] == 10
    assert entry["median_ms"] == 0.0229 and entry["n"] == 12  # the kept round's own statistics
    assert entry["rounds"] == 4 and entry["round_medians_ms"] == [0.0126, 0.0235, 0.0229, 0.0236]
    # two rounds that agree with each other confirm the lowest
    assert lowest_confirmed([0.020, 0.0101, 0.0100, 0.03]) == 0.0100
    assert lowest_confirmed([0.03, 0.02, 0.01]) == 0.01  # none confirmed: the lowest
