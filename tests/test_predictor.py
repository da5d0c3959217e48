"""Calibrated latency predictor (table sum + correction) and `hwnas validate`."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from hwnas.cli import main
from hwnas.device_profile import load_profile, profile_from_dict
from hwnas.errors import InputError
from hwnas.latency.fingerprint import device_fingerprint
from hwnas.latency.predictor import Calibration, LatencyPredictor, calibration_path
from hwnas.latency.table import LatencyTable
from hwnas.space import get_space

SPACE_CONFIG = {"resolutions": [24, 32]}


def _synthetic_table(path, space) -> LatencyTable:
    """A complete table whose medians are a fixed pseudo-random function of the op key."""
    keys = space.all_ops()
    entries = {}
    for k in keys:
        u = int(hashlib.sha256(k.encode()).hexdigest()[:8], 16) / 2**32
        med = 0.02 + 0.3 * u
        entries[k] = {"median_ms": med, "p25_ms": med * 0.98, "p75_ms": med * 1.02, "cv": 0.04, "n": 30}
    table = LatencyTable(space={"name": space.name, "config": space.config()},
                         profile=load_profile("cpu-ort-1t").to_dict(), device=device_fingerprint(),
                         versions={}, protocol={}, entries=entries, expected_entries=len(keys))
    table.save(path)
    return table


@pytest.fixture
def setup(tmp_path):
    space = get_space("mbv3-small-input", **SPACE_CONFIG)
    table = _synthetic_table(tmp_path / "t.json", space)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(80)]
    return space, table, archs


def test_raw_prediction_is_the_table_sum(setup):
    space, table, archs = setup
    pred = LatencyPredictor(table, space)
    expected = [table.sum(space.ops(a)) for a in archs[:10]]
    np.testing.assert_allclose(pred.predict(archs[:10]), expected, rtol=1e-12)
    np.testing.assert_allclose(pred.predict_raw(archs[:10]), expected, rtol=1e-12)


def test_calibration_recovers_per_call_overhead_and_scale(setup):
    space, table, archs = setup
    pred = LatencyPredictor(table, space)
    sums, n_ops = pred.op_sums(archs)
    # truth: fixed cost 0.05 ms, ops 20 % faster in context, 4 us of call overhead in each isolated entry
    truth = 0.05 + 0.8 * sums.sum(axis=1) - 0.004 * n_ops
    pred.fit(archs[:30], truth[:30])
    assert pred.calibration.method == "overhead"
    np.testing.assert_allclose(pred.calibration.coef, [0.05, 0.8, -0.004], atol=1e-9)
    np.testing.assert_allclose(pred.predict(archs[30:]), truth[30:], rtol=1e-9)
    assert pred.score(archs[30:], truth[30:]) == 1.0


def test_calibration_finds_per_type_scales(setup):
    space, table, archs = setup
    pred = LatencyPredictor(table, space)
    sums, n_ops = pred.op_sums(archs)
    scale = np.linspace(0.5, 1.5, sums.shape[1])
    truth = 0.1 + sums @ scale
    pred.fit(archs[:40], truth[:40])
    assert pred.calibration.method == "per-type"
    np.testing.assert_allclose(pred.predict(archs[40:]), truth[40:], rtol=1e-8)


def test_simplest_adequate_calibration_is_kept(setup):
    space, table, archs = setup
    pred = LatencyPredictor(table, space)
    truth = 1.3 * pred.predict_raw(archs)
    pred.fit(archs[:20], truth[:20])
    assert pred.calibration.method == "scale"
    assert pred.calibration.coef == pytest.approx([1.3])
    pred.fit(archs[:20], pred.predict_raw(archs[:20]))
    assert pred.calibration.method == "raw"


def test_calibration_round_trip_beside_the_table(setup, tmp_path, capsys):
    space, table, archs = setup
    pred = LatencyPredictor(table, space)
    truth = 0.2 + 0.9 * pred.predict_raw(archs)
    path = pred.fit(archs[:20], truth[:20], provenance={"note": "x"}).save()
    assert path == calibration_path(tmp_path / "t.json") == tmp_path / "t.calibration.json"
    saved = json.loads(path.read_text())
    assert saved["kind"] == "hwnas-latency-calibration" and saved["provenance"]["n_measured"] == 20
    assert saved["provenance"]["table_sha256"]
    loaded = LatencyPredictor.load(tmp_path / "t.json")
    assert loaded.calibration.method == "affine"
    np.testing.assert_allclose(loaded.predict(archs), pred.predict(archs), rtol=1e-12)
    # the table measured again: the old calibration no longer applies
    first = next(iter(table.entries))
    table.entries[first]["median_ms"] *= 2
    table.save()
    stale = LatencyPredictor.load(tmp_path / "t.json")
    assert stale.calibration is None and "raw table sum" in capsys.readouterr().err


def test_bad_calibration_and_missing_ops_are_input_errors(setup, tmp_path):
    space, table, archs = setup
    bad = tmp_path / "t.calibration.json"
    bad.write_text(json.dumps({"kind": "hwnas-latency-calibration", "schema_version": 1, "method": "magic"}))
    with pytest.raises(InputError, match="method"):
        LatencyPredictor.load(tmp_path / "t.json")
    with pytest.raises(InputError, match="not found"):
        LatencyPredictor.load(tmp_path / "t.json", calibration=tmp_path / "absent.json")
    with pytest.raises(InputError):
        Calibration.from_dict([1, 2])
    table.entries.pop(space.ops(archs[0])[3])
    with pytest.raises(InputError, match="not in the latency table"):
        LatencyPredictor(table, space).predict(archs[:1])


def test_predict_is_fast_on_a_search_population(setup):
    space, table, archs = setup
    pred = LatencyPredictor(table, space)
    rng = np.random.default_rng(1)
    population = [space.sample(rng) for _ in range(2000)]
    out = pred.predict(population)
    assert out.shape == (2000,) and np.all(out > 0)
    assert pred.predict(population[:5]).tolist() == out[:5].tolist()  # cached op indices give the same numbers


def test_validate_refuses_a_table_of_another_device(setup, tmp_path, capsys):
    _, table, _ = setup
    table.device = {**table.device, "cpu_model": "Some Other CPU 9000"}
    table.save()
    assert main(["validate", str(tmp_path / "t.json"), "--n", "3", "--json"]) == 2
    assert "another device" in json.loads(capsys.readouterr().out)["error"]


def test_validate_refuses_a_table_of_another_cpu_generation(setup, tmp_path, capsys):
    _, table, _ = setup
    here = table.device.get("cpu_isa")
    if here is None:
        pytest.skip("this system does not list its CPU's instruction-set extensions (/proc/cpuinfo)")
    table.device = {**table.device, "cpu_isa": "avx512f " + here if "avx512f" not in here else "avx2"}
    table.save()
    assert main(["validate", str(tmp_path / "t.json"), "--n", "3", "--json"]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert "another device" in error and "cpu_isa" in error


def test_validate_refuses_an_incomplete_table(setup, tmp_path, capsys):
    _, table, _ = setup
    table.expected_entries = len(table.entries) + 5
    table.save()
    assert main(["validate", str(tmp_path / "t.json"), "--n", "3", "--json"]) == 2
    assert "incomplete" in json.loads(capsys.readouterr().out)["error"]


def test_validate_measures_real_subnets_end_to_end(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from hwnas.latency.profile import profile

    raw = load_profile("cpu-ort-1t").to_dict()
    raw["protocol"].update(warmup=1, min_repeats=3, max_repeats=5, max_seconds=0.01, remeasure=0)
    tiny = profile_from_dict(raw)
    table_path = tmp_path / "tiny.json"
    profile(tiny, "mbv3-small-input", table_path, quick=True, progress=False,
            space_options={"resolutions": [8], "width_mult": 0.25})
    plot = tmp_path / "v.png"
    assert main(["validate", str(table_path), "--n", "3", "--calib-n", "5", "--plot", str(plot), "--json",
                 "--no-progress", "--retest"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("n", "mape", "within_10pct", "kendall_tau", "calibrated", "raw"):
        assert key in out
    assert out["n"] == 3 and out["calibrated"]["n"] == 3
    # the held-out subnets measured a second time, scored against the first measurement
    assert out["retest"]["n"] == 3 and 0 <= out["retest"]["within_10pct"] <= 1
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cal = json.loads((tmp_path / "tiny.calibration.json").read_text())
    assert cal["provenance"]["n_measured"] == 5 and cal["provenance"]["device"]["cpu_model"]
    assert len(cal["provenance"]["retest"]["ms"]) == 3 and min(cal["provenance"]["retest"]["ms"]) > 0
    assert LatencyPredictor.load(table_path).calibration.method == out["method"]


def test_validate_scores_against_the_geometric_mean_of_independent_passes(tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnxruntime")
    import hwnas.latency.validate as validate_module
    from hwnas.latency.profile import profile

    raw = load_profile("cpu-ort-1t").to_dict()
    raw["protocol"].update(warmup=1, min_repeats=3, max_repeats=5, max_seconds=0.01, remeasure=0)
    table_path = tmp_path / "tiny.json"
    profile(profile_from_dict(raw), "mbv3-small-input", table_path, quick=True, progress=False,
            space_options={"resolutions": [8], "width_mult": 0.25})
    calls = []

    def fake_measure(profile, protocol, space, archs, **kwargs):
        # each pass: a latency known per subnet, scaled by a factor of its own (pass 1: x1, pass 2: x4, ...)
        calls.append(len(archs))
        factor = [1.0, 4.0, 2.0, 8.0][len(calls) - 1]
        return factor * (0.1 + 0.01 * np.arange(len(archs), dtype=float)), 0.15  # the anchor now (ms)

    monkeypatch.setattr(validate_module, "measure_subnets", fake_measure)
    assert main(["validate", str(table_path), "--n", "4", "--calib-n", "6", "--passes", "2", "--retest",
                 "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    # one pass over calibration and held-out subnets, one more over the held-out, then the retest's two
    assert calls == [10, 4, 4, 4] and out["passes"] == 2
    first = 0.1 + 0.01 * np.arange(6, 10)
    second = 4.0 * (0.1 + 0.01 * np.arange(4))
    held = json.loads((tmp_path / "tiny.calibration.json").read_text())["provenance"]["measurements"]["held_out"]
    np.testing.assert_allclose([h["ms"] for h in held], np.sqrt(first * second), rtol=1e-5)
    assert [h["pass_ms"] for h in held] == [[round(a, 6), round(b, 6)] for a, b in zip(first, second, strict=True)]
    # pass 2 against pass 1: ranked alike, 4x apart; the retest (2x and 8x: geometric mean 4x) ranks alike too
    assert out["pass_agreement"]["kendall_tau"] == 1.0 and out["pass_agreement"]["within_10pct"] == 0.0
    assert out["retest"]["kendall_tau"] == 1.0 and out["retest"]["mean_ratio"] == pytest.approx(
        float(np.mean(4.0 * (0.1 + 0.01 * np.arange(4)) / np.sqrt(first * second))), rel=1e-4)
    assert main(["validate", str(table_path), "--n", "4", "--passes", "0", "--json", "--no-progress"]) == 2
    assert "passes" in json.loads(capsys.readouterr().out)["error"]


def test_calibration_survives_a_small_re_measurement_of_the_table(setup, tmp_path):
    space, table, archs = setup
    pred = LatencyPredictor(table, space)
    truth = 0.2 + 0.9 * pred.predict_raw(archs)
    fitted = [{"arch": a, "ms": float(v), "raw_ms": float(r)}
              for a, v, r in zip(archs[:20], truth[:20], pred.predict_raw(archs[:20]), strict=True)]
    pred.fit(archs[:20], truth[:20], provenance={"measurements": {"calibration": fitted}}).save()
    for entry in table.entries.values():  # confirmation rounds moved every median by 0.5 %
        entry["median_ms"] *= 1.005
    table.save()
    assert LatencyPredictor.load(tmp_path / "t.json").calibration.method == "affine"
    for entry in list(table.entries.values())[::2]:  # half the ops measured 30 % slower: refit needed
        entry["median_ms"] *= 1.3
    table.save()
    assert LatencyPredictor.load(tmp_path / "t.json").calibration is None


def test_calibration_refuses_too_few_or_invalid_measurements(setup):
    space, table, archs = setup
    pred = LatencyPredictor(table, space)
    with pytest.raises(InputError, match="at least 3") as err:
        pred.fit(archs[:2], [1.0, 2.0])
    assert err.value.field == "calib_n"
    with pytest.raises(InputError, match="3 architectures but 2 latencies"):
        pred.fit(archs[:3], [1.0, 2.0])
    with pytest.raises(InputError, match="positive finite"):
        pred.fit(archs[:3], [1.0, -2.0, 3.0])


def test_op_attribute_calibration_learns_costs_the_table_does_not_see(setup):
    """Ops cost more in the network than alone in ways no per-type scale captures: a 7x7 kernel
    pays extra at every input size, and an expansion of 6 with squeeze-excitation pays extra too."""
    space, table, archs = setup
    rng = np.random.default_rng(1)
    archs = archs + [space.sample(rng) for _ in range(120)]
    pred = LatencyPredictor(table, space)
    sums, n_ops = pred.op_sums(archs)
    ops = [space.ops(a) for a in archs]
    k7 = np.array([sum("|k7|" in k for k in o) for o in ops])
    e6_se = np.array([sum("|e6|" in k and "|se1|" in k for k in o) for o in ops])
    assert k7.std() > 0 and e6_se.std() > 0
    truth = 0.05 + 0.8 * sums.sum(axis=1) + 0.03 * k7 + 0.05 * e6_se
    fit_on, held = slice(0, 120), slice(120, None)
    per_type = LatencyPredictor(table, space).fit(archs[fit_on], truth[fit_on], methods=["per-type"])
    pred.fit(archs[fit_on], truth[fit_on])
    assert pred.calibration.method == "op-attributes"
    assert pred.calibration.provenance["ridge_alpha"] > 0
    coef = dict(zip(pred.calibration.feature_names, pred.calibration.coef, strict=True))
    assert "count[mbconv:k7]" in coef and "count[mbconv:e6&se1]" in coef
    err = np.abs(pred.predict(archs[held]) / truth[held] - 1)
    err_per_type = np.abs(per_type.predict(archs[held]) / truth[held] - 1)
    assert err.max() < 0.01 and err.mean() < err_per_type.mean() / 3


def test_op_attributes_of_a_key():
    from hwnas.latency.predictor import op_attributes

    attrs = op_attributes("mbconv|i8x14x14|o16x7x7|k5|e6|s2|se1|relu|res0")
    assert attrs[:3] == ["mbconv", "mbconv:i8x14x14", "mbconv:o16x7x7"]
    assert "mbconv:k5&e6" in attrs and "mbconv:e6&se1" in attrs and "mbconv:i8x14x14&k5" in attrs
    assert len(attrs) == 1 + 8 + 8 * 7 // 2
    assert op_attributes("linear|i256x1x1|o10") == ["linear", "linear:i256x1x1", "linear:o10",
                                                    "linear:i256x1x1&o10"]


def test_relative_ridge_is_the_penalised_least_squares_and_its_leave_one_out_error_is_exact():
    from hwnas.stats import relative_ridge as _relative_ridge

    rng = np.random.default_rng(3)
    n = 14
    B = np.c_[np.ones(n), rng.uniform(1, 2, n)]
    X = rng.integers(0, 3, (n, 30)).astype(float)  # more penalised columns than rows
    y = B @ [0.1, 0.9] + X @ rng.normal(0, 0.01, 30) + rng.normal(0, 0.01, n)
    alpha = 2.0
    coef, err, chosen = _relative_ridge(B, X, y, alphas=[alpha], iterations=1)
    assert chosen == alpha

    def primal(rows):  # min |1 - (B a + X b) / y|^2 + alpha |b|^2 over the given rows
        A = np.c_[B, X][rows] / y[rows, None]
        pen = np.diag(np.r_[0.0, 0.0, np.full(X.shape[1], alpha)])
        return np.linalg.solve(A.T @ A + pen, A.T @ np.ones(len(rows)))

    np.testing.assert_allclose(coef, primal(np.arange(n)), rtol=1e-7, atol=1e-10)
    loo = []
    for i in range(n):
        c = primal(np.delete(np.arange(n), i))
        loo.append(abs(1 - np.c_[B, X][i] @ c / y[i]))
    loo = np.sort(loo)[: int(np.ceil(0.9 * n))]
    assert err == pytest.approx(np.sqrt(np.mean(loo**2)), rel=1e-6)


def test_op_attribute_calibration_round_trips(setup, tmp_path):
    space, table, archs = setup
    pred = LatencyPredictor(table, space)
    ops = [space.ops(a) for a in archs]
    truth = 0.1 + pred.predict_raw(archs) + 0.02 * np.array([sum("|k7|" in k for k in o) for o in ops])
    pred.fit(archs[:60], truth[:60], methods=["op-attributes"]).save()
    loaded = LatencyPredictor.load(tmp_path / "t.json")
    assert loaded.calibration.method == "op-attributes"
    np.testing.assert_allclose(loaded.predict(archs), pred.predict(archs), rtol=1e-12)
    # predict folds the attribute costs into one per table entry: the same as the design matrix times the coef
    X, names = pred.features(archs, "op-attributes")
    assert names == pred.calibration.feature_names
    folded = np.maximum(X @ pred.calibration.coef, 0.1 * pred.predict_raw(archs))
    np.testing.assert_allclose(pred.predict(archs), folded, rtol=1e-12)
