"""Few-shot whole-network latency prediction (`hwnas fit-latency`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hwnas.cli import main
from hwnas.errors import InputError
from hwnas.latency.fit import WholeNetworkLatencyRegressor, fit_latency, mbv3_blocks, read_arch_latency_csv
from hwnas.stats import grouped_ridge_loo, latency_metrics, weighted_ridge_loo

HEADER = "idx,r,d,ks,e,lat_ms_a,lat_ms_b\n"


def _random_arch(rng: np.random.Generator) -> dict:
    return {"r": int(rng.choice(np.arange(128, 228, 4))), "d": rng.integers(2, 5, 5).tolist(),
            "k": rng.choice([3, 5, 7], 20).tolist(), "e": rng.choice([3, 4, 6], 20).tolist()}


def _row(i: int, arch: dict, *lat: float) -> str:
    cells = [str(i), str(arch["r"]), "-".join(map(str, arch["d"])), "-".join(map(str, arch["k"])),
             "-".join(map(str, arch["e"]))]
    return ",".join(cells + [f"{v:.5f}" for v in lat]) + "\n"


def test_blocks_follow_ofa_mobilenetv3_geometry():
    arch = {"r": 224, "d": [4] * 5, "k": [7] * 20, "e": [6] * 20}
    blocks = mbv3_blocks(arch)
    assert len(blocks) == 20
    # strides 2, 2, 2, 1, 2 after a stride-2 stem: 112 -> 56 -> 28 -> 14 -> 14 -> 7
    assert [b.h_out for b in blocks[::4]] == [56, 28, 14, 14, 7]
    assert blocks[0].c_in == 16 and blocks[0].c_mid == 96 and blocks[-1].c_out == 160
    assert blocks[4].se and not blocks[0].se


def test_ridge_loo_matches_brute_force_leave_one_out():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 3 + rng.normal(scale=0.1, size=20)
    w = rng.uniform(0.5, 2.0, 20)
    fit, loo = weighted_ridge_loo(X, y, w, alphas=np.array([0.3]))
    for i in (0, 7):
        keep = np.arange(20) != i
        fit_i, _ = weighted_ridge_loo(X[keep], y[keep], w[keep], alphas=np.array([0.3]))
        # standardisation depends on the rows, so LOO is exact only up to that: compare loosely
        assert loo[i] == pytest.approx(y[i] - fit_i.predict(X[i : i + 1])[0], abs=0.05)


def test_grouped_ridge_drops_the_group_that_carries_no_signal():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(40, 6))
    y = X[:, :3] @ np.array([1.0, -2.0, 0.5]) + 3 + rng.normal(scale=0.05, size=40)
    w = rng.uniform(0.5, 2.0, 40)
    groups = np.array([0, 0, 0, 1, 1, 1])
    fit, loo = grouped_ridge_loo(X, y, w, groups, penalties=(1e-3, np.inf))
    assert fit.group_penalties == (1e-3, np.inf)
    assert np.all(fit.coef[3:] == 0) and np.all(np.abs(fit.coef[:3]) > 0.4)
    keep = np.arange(40) != 5
    fit_5, _ = grouped_ridge_loo(X[keep], y[keep], w[keep], groups, penalties=(1e-3, np.inf))
    # standardisation depends on the rows, so LOO is exact only up to that: compare loosely
    assert loo[5] == pytest.approx(y[5] - fit_5.predict(X[5:6])[0], abs=0.02)
    with pytest.raises(ValueError, match="one group per feature"):
        grouped_ridge_loo(X, y, w, groups[:5])


def test_regressor_recovers_an_additive_latency_and_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    archs = [_random_arch(rng) for _ in range(140)]
    # truth: a fixed cost plus per-block costs that grow with MACs (what a GPU at large batch does)
    y = np.array([0.8 + sum(2e-7 * b.pw_macs + 1e-6 * b.dw_macs + 0.05 for b in mbv3_blocks(a)) for a in archs])
    model = WholeNetworkLatencyRegressor().fit(archs[:60], y[:60])
    metrics = latency_metrics(model.predict(archs[60:]), y[60:])
    assert metrics["within_10pct"] == 1.0 and metrics["kendall_tau"] > 0.95
    path = tmp_path / "model.json"
    model.save(path)
    assert "pickle" not in path.read_text()
    again = WholeNetworkLatencyRegressor.load(path)
    np.testing.assert_allclose(again.predict(archs[60:]), model.predict(archs[60:]), rtol=1e-12)
    assert model.score(archs[60:], y[60:]) == 1.0


def test_regressor_rejects_bad_input():
    with pytest.raises(RuntimeError, match="not fitted"):
        WholeNetworkLatencyRegressor().predict([{"r": 160}])
    rng = np.random.default_rng(2)
    archs = [_random_arch(rng) for _ in range(10)]
    with pytest.raises(InputError, match="positive"):
        WholeNetworkLatencyRegressor().fit(archs, [1.0] * 9 + [-1.0])
    with pytest.raises(InputError, match="feature_sets"):
        WholeNetworkLatencyRegressor(feature_sets=["nope"]).fit(archs, [1.0] * 10)
    with pytest.raises(InputError, match="bags"):
        WholeNetworkLatencyRegressor(bags=0).fit(archs, [1.0] * 10)
    with pytest.raises(InputError, match="subsample"):
        WholeNetworkLatencyRegressor(subsample=1.5).fit(archs, [1.0] * 10)


def _write_csv(path, n=60, seed=3):
    rng = np.random.default_rng(seed)
    lines = [HEADER]
    for i in range(n):
        a = _random_arch(rng)
        macs = sum(b.pw_macs + b.dw_macs for b in mbv3_blocks(a))
        lines.append(_row(i, a, 1 + macs * 1e-8, 2 + macs * 2e-8))
    path.write_text("".join(lines))
    return path


def test_csv_errors_name_file_and_field(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_arch_latency_csv(tmp_path / "absent.csv", "lat_ms_a")
    good = _write_csv(tmp_path / "good.csv")
    with pytest.raises(InputError, match=r"lat_ms_zzz.*available latency columns: \['lat_ms_a', 'lat_ms_b'\]"):
        read_arch_latency_csv(good, "lat_ms_zzz")
    bad_value = tmp_path / "bad_value.csv"
    bad_value.write_text(good.read_text().replace(good.read_text().splitlines()[3].split(",")[-2], "fast", 1))
    with pytest.raises(InputError, match=r"line 4.*lat_ms_a"):
        read_arch_latency_csv(bad_value, "lat_ms_a")
    bad_arch = tmp_path / "bad_arch.csv"
    lines = good.read_text().splitlines(keepends=True)
    cells = lines[2].split(",")
    cells[2] = "2-2-9-2-2"
    bad_arch.write_text(lines[0] + lines[1] + ",".join(cells) + "".join(lines[3:]))
    with pytest.raises(InputError, match=r"line 3.*'d'"):
        read_arch_latency_csv(bad_arch, "lat_ms_a")
    no_arch = tmp_path / "no_arch.csv"
    no_arch.write_text("r,lat_ms_a\n160,1.0\n")
    with pytest.raises(InputError, match="architecture column"):
        read_arch_latency_csv(no_arch, "lat_ms_a")


def test_cli_exit_status_and_json_keys(tmp_path, capsys):
    csv_path = _write_csv(tmp_path / "lat.csv")
    assert main(["fit-latency", "--csv", str(csv_path), "--target", "lat_ms_b", "--train-size", "30",
                 "--splits", "2", "--out", str(tmp_path / "m.json"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("train", "test", "mape", "within_10pct", "kendall_tau", "per_split", "reference"):
        assert key in out
    assert out["train"] == 30 and out["test"] == 30 and len(out["per_split"]) == 2
    assert (tmp_path / "m.json").is_file()
    assert main(["fit-latency", "--csv", str(csv_path), "--target", "nope", "--train-size", "30", "--json"]) == 2
    assert "available latency columns" in json.loads(capsys.readouterr().out)["error"]
    assert main(["fit-latency", "--csv", str(csv_path), "--target", "lat_ms_a", "--train-size", "60"]) == 2
    assert main(["fit-latency", "--csv", str(tmp_path / "none.csv"), "--target", "a", "--train-size", "9"]) == 2


@pytest.mark.parametrize("column", ["lat_ms_titan_xp_1", "lat_ms_2080ti_32"])
def test_beats_flops_least_squares_on_real_gpu_measurements(shared_benchmarks, tmp_path, column):
    # a 1,100-row slice keeps this fast; the full 5,000-row figures live in tools/bench_latency_predictor.py
    lines = (shared_benchmarks / "ofa_mbv3_gpu_latency.csv").read_text().splitlines(keepends=True)
    part = tmp_path / "slice.csv"
    part.write_text("".join(lines[:1101]))
    result = fit_latency(part, column, 100, splits=2, seed=0)
    assert result["test"] == 1000
    assert result["within_10pct"] >= result["reference"]["within_10pct"] + 0.05
    assert result["kendall_tau"] >= result["reference"]["kendall_tau"] - 0.01


def test_search_takes_a_saved_fit_latency_model(tmp_path, capsys):
    """A device timed only whole: fit-latency --out, then search --latency-model; export predicts with it."""
    from hwnas.export.source import predicted_latency, select_from_run
    from hwnas.latency.model import load_latency_model

    csv_path = _write_csv(tmp_path / "lat.csv", n=60)
    model_path = tmp_path / "m.json"
    assert main(["fit-latency", "--csv", str(csv_path), "--target", "lat_ms_a", "--train-size", "40",
                 "--splits", "1", "--out", str(model_path), "--json"]) == 0
    capsys.readouterr()
    model = load_latency_model(model_path)
    assert isinstance(model, WholeNetworkLatencyRegressor) and model.space_name == "mbv3" and model.calibrated
    budget = float(np.median(model.predict([model.space.sample(np.random.default_rng(0)) for _ in range(50)])))
    rc = main(["search", "--space", "mbv3", "--latency-model", str(model_path), "--objectives", "params,latency_ms",
               "--budget-ms", f"{budget:.4f}", "--algo", "random", "--pop", "20", "--gens", "2",
               "--out", str(tmp_path / "run"), "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    result = json.loads(out.out)
    assert result["notes"] == [] and "no calibration" not in out.err  # a whole-network model is calibrated
    best = result["best_under_budget"]
    assert best["objectives"]["latency_ms"] <= budget
    pareto = json.loads((tmp_path / "run" / "pareto.json").read_text())
    assert pareto["latency_model"] == str(model_path.resolve()) and pareto["table"] is None
    selection = select_from_run(tmp_path / "run" / "pareto.json", "best-under-budget")
    assert predicted_latency(selection.table, selection.arch) == pytest.approx(best["objectives"]["latency_ms"])

    # the wrong space, or a file that is neither a table nor a model, is bad input naming the flag
    assert main(["search", "--space", "mbv3-small-input", "--latency-model", str(model_path), "--objectives",
                 "params,latency_ms", "--budget-ms", "5", "--out", str(tmp_path / "r2")]) == 2
    assert "--space" in capsys.readouterr().err
    assert main(["search", "--space", "mbv3", "--latency-model", str(csv_path), "--objectives", "params,latency_ms",
                 "--budget-ms", "5", "--out", str(tmp_path / "r3")]) == 2
    assert "--latency-model" in capsys.readouterr().err


def test_library_errors_name_fields_and_the_cli_names_flags(tmp_path, capsys):
    import hwnas

    table = str(tmp_path / "absent.json")
    with pytest.raises(InputError) as err:
        hwnas.search("mbv3", table=table, budget_ms=-1, out=str(tmp_path / "r"))
    assert err.value.field == "budget_ms" and "--budget-ms" not in str(err.value)
    with pytest.raises(InputError) as err:
        hwnas.search("mbv3", table=table, budget_ms=1, strategy="annealing", out=str(tmp_path / "r"))
    assert err.value.field == "strategy"
    assert main(["search", "--space", "mbv3", "--table", table, "--budget-ms", "1", "--algo", "annealing",
                 "--out", str(tmp_path / "r")]) == 2
    assert "field '--algo'" in capsys.readouterr().err
