"""`tools/bench_rounds.py`: the scatter of a round's timing, a session's share of it, and k-round agreement."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from hwnas.device_profile import load_profile, profile_from_dict

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "bench_rounds.py"


def _tool():
    spec = importlib.util.spec_from_file_location("bench_rounds", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _timings(n: int, sessions: int, rounds: int, round_sd: float, session_sd: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    true = np.exp(rng.normal(np.log(0.3), 0.13, n))
    session = rng.normal(0.0, session_sd, (n, sessions, 1))
    noise = rng.normal(0.0, round_sd, (n, sessions, rounds))
    return true, true[:, None, None] * np.exp(session + noise)


def test_the_scatter_of_a_round_and_a_sessions_share_are_recovered():
    tool = _tool()
    _, ms = _timings(400, 2, 8, round_sd=0.01, session_sd=0.006)
    out = tool.analyse(ms, None, draws=20)
    assert out["round_sd_rel"] == pytest.approx(0.01, rel=0.1)
    assert out["session_effect_sd_rel"] == pytest.approx(0.006, rel=0.25)
    # no session effect: what is left of the sessions' means is what the rounds' scatter leaves
    _, ms = _timings(400, 2, 8, round_sd=0.01, session_sd=0.0, seed=1)
    assert tool.analyse(ms, None, draws=20)["session_effect_sd_rel"] < 0.002


def test_more_rounds_agree_better_and_a_perfect_predictor_gains_with_them():
    tool = _tool()
    true, ms = _timings(60, 1, 12, round_sd=0.02, session_sd=0.0)
    out = tool.analyse(ms, true, draws=100)
    curve = out["k_round_medians"]
    assert [row["rounds"] for row in curve] == [1, 2, 3, 4, 5, 6]
    assert curve[0]["retest_tau"] < curve[2]["retest_tau"] < curve[5]["retest_tau"] < 1.0
    # against the truth the k-round median has one measurement's noise, not two: it ranks above the retest
    assert curve[0]["retest_tau"] < curve[0]["calibrated_tau"] < curve[5]["calibrated_tau"]
    assert out["calibrated_vs_all_rounds"]["within_10pct"] == 1.0
    assert "session_effect_sd_rel" not in out


def test_rounds_are_timed_on_the_tables_backend_with_its_anchor(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    import hwnas.latency.anchor as anchor_module
    from hwnas.latency.predictor import LatencyPredictor
    from hwnas.latency.profile import profile

    monkeypatch.setattr(anchor_module, "ANCHOR_ROUND_INTERVAL_S", 0.0)
    raw = load_profile("cpu-ort-1t").to_dict()
    raw["protocol"].update(warmup=1, min_repeats=3, max_repeats=5, max_seconds=0.01, remeasure=0, anchor="bracket")
    path = tmp_path / "t.json"
    profile(profile_from_dict(raw), "mbv3-small-input", path, quick=True, progress=False,
            space_options={"resolutions": [8], "width_mult": 0.25})
    tool = _tool()
    space = LatencyPredictor.load(path).space
    archs = [space.sample(np.random.default_rng(s)) for s in range(3)]
    ms = tool.time_rounds(str(path), archs, sessions=2, rounds=2)
    assert ms.shape == (3, 2, 2) and np.all(ms > 0)
    # each session's rounds land at (subnet, session, round); rounds beyond the asked ones are dropped
    seen = {}

    def fake(profile, protocol, space, runs, *, rounds, anchor, **_):
        seen.update(runs=runs, anchor=anchor)
        return [[100.0 * (j // 3) + 10.0 * (j % 3) + r for r in range(rounds + (j == 0))]
                for j in range(len(runs))], 0.1

    monkeypatch.setattr(tool, "time_subnet_rounds", fake)
    ms = tool.time_rounds(str(path), archs, sessions=2, rounds=2)
    assert seen["runs"] == archs * 2 and seen["anchor"][1] == LatencyPredictor.load(path).table.protocol["anchor_ms"]
    expected = [[[100.0 * sess + 10.0 * i + r for r in range(2)] for sess in range(2)] for i in range(3)]
    assert ms.tolist() == expected
