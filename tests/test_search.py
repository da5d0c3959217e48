"""Search: strategies, evaluation counting, Pareto/hypervolume maths, the tabular benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from toy_space import VectorSpace

from hwnas.cli import main
from hwnas.errors import InputError
from hwnas.search import (
    ArchEvaluator,
    best_under_budget,
    hypervolume,
    pareto_front,
    plot_hypervolume,
    plot_pareto,
    search,
    strategy_names,
)
from hwnas.search.operators import SpaceMutation
from hwnas.search.tabular import TableOracle, load_table, run_on_table, score_queried
from hwnas.space import get_space
from hwnas.space.nb201 import OPS, to_arch_str

NB201_CSV = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks" / "nb201.csv"
STRATEGIES = ["nsga2", "random", "evolution", "regularized-evolution"]




def cost(archs):  # minimise the sum of genes ...
    return np.array([sum(a["x"]) for a in archs], dtype=float)


def shortfall(archs, k=5):  # ... against the squared distance of each gene from its top value
    return np.array([sum((k - 1 - v) ** 2 for v in a["x"]) for a in archs], dtype=float)


def analytic_front(n=6, k=5) -> set[tuple[float, float]]:
    # for a given sum s the shortfall is least when the genes are as equal as possible
    front = set()
    for s in range(n * (k - 1) + 1):
        q, r = divmod(s, n)
        front.add((float(s), float(r * (k - 2 - q) ** 2 + (n - r) * (k - 1 - q) ** 2)))
    return front


class CountingMetric:
    """Wraps a metric and records every architecture it was asked about."""

    def __init__(self, fn):
        self.fn, self.seen = fn, []

    def __call__(self, archs):
        self.seen.extend(tuple(a.get("x", a.get("edges"))) for a in archs)
        return self.fn(archs)


def nb201_metrics():
    # accuracy grows with convolutions, latency with their cost: a real trade-off
    gain = {"none": 0.0, "skip_connect": 1.0, "avg_pool_3x3": 0.5, "nor_conv_1x1": 3.0, "nor_conv_3x3": 5.0}
    price = {"none": 0.0, "skip_connect": 0.1, "avg_pool_3x3": 0.4, "nor_conv_1x1": 1.0, "nor_conv_3x3": 2.5}
    return {
        "accuracy": lambda archs: np.array([60 + sum(gain[o] for o in a["edges"]) for a in archs]),
        "latency_ms": lambda archs: np.array([1 + sum(price[o] for o in a["edges"]) for a in archs]),
    }


# --- Pareto front and hypervolume ------------------------------------------------------------

def test_pareto_front_matches_brute_force():
    rng = np.random.default_rng(0)
    for m in (2, 3):
        for _ in range(50):
            F = rng.integers(0, 6, size=(int(rng.integers(1, 30)), m)).astype(float)
            brute = [i for i in range(len(F))
                     if not any((F[j] <= F[i]).all() and (F[j] < F[i]).any() for j in range(len(F)))]
            assert pareto_front(F).tolist() == brute


def test_hypervolume_2d_is_exact_and_ignores_points_beyond_the_reference():
    F = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0], [0.6, 0.6], [3.0, -1.0]])
    # staircase of the first three points against (2, 2); (0.6, 0.6) is dominated, (3, -1) is outside
    assert hypervolume(F, np.array([2.0, 2.0])) == pytest.approx(2 * 1 + 1.5 * 0.5 + 1 * 0.5)
    assert hypervolume(np.array([[2.0, 0.0]]), np.array([2.0, 2.0])) == 0.0


def test_hypervolume_agrees_with_pymoo_in_2d_and_3d():
    from pymoo.indicators.hv import HV

    rng = np.random.default_rng(3)
    for m in (2, 3):
        F = rng.random((40, m))
        ref = np.full(m, 1.1)
        assert hypervolume(F, ref) == pytest.approx(HV(ref_point=ref)(F), rel=1e-9)


# --- strategies on a space-agnostic problem with a known front ---------------------------------

def test_nsga2_finds_the_analytic_front_of_a_toy_problem():
    space = VectorSpace(6, 5)
    result = search(space, {"cost": cost, "shortfall": shortfall}, ("cost", "shortfall"), maximize=(),
                    generations=50, pop_size=50, seed=0, progress=False)
    found = {(e["objectives"]["cost"], e["objectives"]["shortfall"]) for e in result.pareto}
    truth = analytic_front()
    assert found <= truth  # nothing reported as optimal that is not
    assert len(found) >= 0.9 * len(truth)
    baseline = search(space, {"cost": cost, "shortfall": shortfall}, ("cost", "shortfall"), None, "random",
                      maximize=(), evaluations=result.evaluations, seed=0, progress=False)
    found_by_random = {(e["objectives"]["cost"], e["objectives"]["shortfall"]) for e in baseline.pareto}
    assert len(found & truth) > len(found_by_random & truth)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_search_is_deterministic_per_seed(strategy):
    space = get_space("nb201")

    def run(seed):
        r = search(space, nb201_metrics(), ("accuracy", "latency_ms"), {"latency_ms": 8.0}, strategy,
                   evaluations=120, pop_size=20, seed=seed, progress=False)
        return [e["arch"] for e in r.evaluated], r.pareto, r.hypervolume_history

    assert run(7) == run(7)
    assert run(7)[0] != run(8)[0]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_evaluations_are_counted_once_per_distinct_arch_within_budget(strategy):
    space = VectorSpace(8, 4)
    counted = CountingMetric(cost)
    result = search(space, {"cost": counted, "shortfall": shortfall}, ("shortfall",), {"cost": 12.0}, strategy,
                    maximize=(), evaluations=150, pop_size=20, seed=1, progress=False)
    assert len(counted.seen) == len(set(counted.seen)) == result.evaluations == 150
    keys = [tuple(e["arch"]["x"]) for e in result.evaluated]
    assert len(keys) == len(set(keys)) == 150


def test_a_shared_evaluator_does_not_count_a_requery():
    space = get_space("nb201")
    counted = CountingMetric(nb201_metrics()["accuracy"])
    metrics = {"accuracy": counted, "latency_ms": nb201_metrics()["latency_ms"]}
    evaluator = ArchEvaluator(space, metrics)
    first = search(space, metrics, evaluations=60, pop_size=20, seed=2, evaluator=evaluator, progress=False)
    again = search(space, metrics, evaluations=60, pop_size=20, seed=2, evaluator=evaluator, progress=False)
    assert first.evaluations == again.evaluations == 60
    assert evaluator.n_evaluations == len(counted.seen) == len(set(counted.seen)) == 120


def test_nsga2_offspring_are_never_already_evaluated():
    space = get_space("nb201")
    counted = CountingMetric(nb201_metrics()["latency_ms"])
    metrics = {"accuracy": nb201_metrics()["accuracy"], "latency_ms": counted}
    result = search(space, metrics, generations=15, pop_size=30, seed=4, progress=False)
    # every generation brought pop_size new archs: duplicates were eliminated before evaluation
    assert result.evaluations == len(set(counted.seen)) == 15 * 30


def test_nsga2_mutation_changes_one_gene_on_average():
    # a long genome: OFA's 0.1 per gene would change 4 of these 40 genes per child
    space, rng = VectorSpace(40, 5), np.random.default_rng(0)
    mutation = SpaceMutation(space)
    X = np.array([space.encode(space.sample(rng)) for _ in range(2000)])
    changed = (mutation._do(None, X, random_state=rng) != X).sum(axis=1)
    assert 0.9 <= changed.mean() <= 1.1


def test_constraint_holds_for_the_front_and_best_under_budget():
    space = get_space("nb201")
    metrics = nb201_metrics()
    result = search(space, metrics, ("accuracy", "latency_ms"), {"latency_ms": 9.0}, evaluations=300,
                    pop_size=30, seed=5, progress=False)
    assert result.pareto and all(e["constraints"]["latency_ms"] <= 9.0 and e["feasible"] for e in result.pareto)
    assert any(not e["feasible"] for e in result.evaluated)
    for budget in (3.0, 6.0, 9.0, 20.0):
        best = best_under_budget(result, budget)
        within = [e for e in result.evaluated if e["feasible"] and e["objectives"]["latency_ms"] <= budget]
        assert best is not None and best["objectives"]["latency_ms"] <= budget
        assert best["objectives"]["accuracy"] == max(e["objectives"]["accuracy"] for e in within)
    assert best_under_budget(result, 0.5) is None


@pytest.mark.parametrize("strategy", ["evolution", "regularized-evolution"])
def test_single_objective_strategies_maximise_accuracy_under_the_budget(strategy):
    space = get_space("nb201")
    all_archs = space.all_archs()
    metrics = nb201_metrics()
    lat, acc = metrics["latency_ms"](all_archs), metrics["accuracy"](all_archs)
    optimum = acc[lat <= 6.0].max()
    result = search(space, metrics, ("accuracy",), {"latency_ms": 6.0}, strategy, evaluations=600,
                    pop_size=30, seed=0, progress=False)
    best = best_under_budget(result, 6.0)
    assert best["objectives"]["accuracy"] >= optimum - 1.0
    assert best["constraints"]["latency_ms"] <= 6.0


def test_hypervolume_history_is_monotone_and_ends_at_the_result():
    result = search(get_space("nb201"), nb201_metrics(), generations=10, pop_size=20, seed=0, progress=False)
    history = result.hypervolume_history
    assert len(history) == 10
    assert all(b >= a for a, b in zip(history, history[1:], strict=False))
    assert result.hypervolume == history[-1] > 0


def test_unknown_names_are_input_errors():
    space = get_space("nb201")
    with pytest.raises(InputError, match="known: .*nsga2"):
        search(space, nb201_metrics(), strategy="simulated-annealing", progress=False)
    with pytest.raises(InputError, match="available: accuracy, latency_ms"):
        search(space, nb201_metrics(), ("accuracy", "flops"), progress=False)
    with pytest.raises(InputError, match="constraint 'params'"):
        search(space, nb201_metrics(), constraints={"params": 1e6}, progress=False)
    assert set(STRATEGIES) <= set(strategy_names())


def test_plots_are_written_as_png(tmp_path):
    result = search(get_space("nb201"), nb201_metrics(), ("accuracy", "latency_ms"), {"latency_ms": 9.0},
                    generations=4, pop_size=20, seed=0, progress=False)
    plot_pareto(tmp_path / "pareto.png", result, 9.0)
    plot_hypervolume(tmp_path / "hv.png", result.hypervolume_history)
    for name in ("pareto.png", "hv.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- tabular benchmark ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def table_csv(tmp_path_factory):
    """Every NAS-Bench-201 cell with accuracy and latency from a fixed random draw."""
    space = get_space("nb201")
    rng = np.random.default_rng(11)
    path = tmp_path_factory.mktemp("nb201") / "table.csv"
    lines = ["index,arch_str,acc,lat_a,lat_b"]
    for i, arch in enumerate(space.all_archs()):
        convs = sum(op.startswith("nor_conv") for op in arch["edges"])
        acc = 70 + 4 * convs + rng.normal(0, 2)
        lines.append(f"{i},{to_arch_str(arch)},{acc:.3f},{1 + convs + rng.random():.4f},{rng.random():.4f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_hv_ratio_and_recall_are_one_when_every_arch_is_queried(table_csv):
    table = load_table("nb201", table_csv, "acc", "lat_a")
    assert score_queried(table, set(range(len(table.keys)))) == (pytest.approx(1.0), 1.0)


def test_front_recall_is_the_share_of_true_front_archs_queried(table_csv):
    table = load_table("nb201", table_csv, "acc", "lat_b")
    front = pareto_front(table.minimised())
    assert len(front) >= 4
    half = set(front[: len(front) // 2].tolist())
    others = set(np.setdiff1d(np.arange(len(table.keys)), front)[:100].tolist())
    hv_ratio, recall = score_queried(table, half | others)
    assert recall == pytest.approx(len(half) / len(front))
    assert 0 < hv_ratio < 1


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_table_queries_are_counted_and_capped(table_csv, strategy):
    table = load_table("nb201", table_csv, "acc", "lat_a")
    score = run_on_table(table, strategy, 200, seed=3, pop_size=20)
    assert score.evaluations == 200
    assert 0 < score.hv_ratio <= 1 and 0 <= score.front_recall <= 1
    assert run_on_table(table, strategy, 200, seed=3, pop_size=20).hv_ratio == score.hv_ratio


def test_oracle_counts_distinct_archs(table_csv):
    table = load_table("nb201", table_csv, "acc", "lat_a")
    oracle = TableOracle(table)
    arch = {"edges": [OPS[1]] * 6}
    oracle.accuracy([arch, arch])
    oracle.latency_ms([arch])
    assert oracle.n_queries == 1


def bench_cli(args, capsys):
    status = main(["bench", "nb201", "--json", *args])
    return status, json.loads(capsys.readouterr().out)


def test_bench_cli_reports_scores_per_seed(table_csv, capsys):
    status, out = bench_cli(["--csv", str(table_csv), "--accuracy", "acc", "--latency", "lat_a",
                             "--evals", "100", "--seeds", "2", "--pop", "20"], capsys)
    assert status == 0
    assert {"hv_ratio", "front_recall", "evaluations", "seconds", "hv_ratio_std"} <= out.keys()
    assert out["evaluations_per_seed"] == [100, 100]
    assert out["hv_ratio"] == pytest.approx(np.mean(out["hv_ratio_per_seed"]))


def test_bench_cli_bad_inputs_exit_2(table_csv, tmp_path, capsys):
    status, out = bench_cli(["--csv", str(table_csv), "--accuracy", "acc_cifar10", "--latency", "lat_a",
                             "--evals", "10"], capsys)
    assert status == 2 and "available columns: index, arch_str, acc, lat_a, lat_b" in out["error"]
    status, out = bench_cli(["--csv", str(tmp_path / "missing.csv"), "--accuracy", "acc", "--latency", "lat_a",
                             "--evals", "10"], capsys)
    assert status == 2 and "not found" in out["error"]
    bad = tmp_path / "bad.csv"
    bad.write_text(table_csv.read_text().replace(",1.", ",fast.", 1))
    status, out = bench_cli(["--csv", str(bad), "--accuracy", "acc", "--latency", "lat_a", "--evals", "10"], capsys)
    assert status == 2 and "expected a finite number" in out["error"]


@pytest.mark.skipif(not NB201_CSV.is_file(), reason=f"benchmark table not found at {NB201_CSV}")
def test_bench_on_the_real_nb201_table(capsys):
    status, out = bench_cli(["--csv", str(NB201_CSV), "--accuracy", "acc_cifar10_test_200ep",
                             "--latency", "lat_ms_pixel3", "--evals", "100", "--pop", "20"], capsys)
    assert status == 0 and out["evaluations"] == 100 and out["table_size"] == 15625
    assert 0 < out["hv_ratio"] <= 1


# --- search artifact --------------------------------------------------------------------------

def test_search_outputs_hold_the_front_settings_and_best_under_budget(tmp_path):
    from hwnas.search.artifact import fastest_latency, write_search_outputs

    space, metrics = get_space("nb201"), nb201_metrics()
    arch, ms = fastest_latency(space, metrics["latency_ms"])
    assert ms == metrics["latency_ms"]([space.smallest()])[0] == 1.0
    result = search(space, metrics, ("accuracy", "latency_ms"), {"latency_ms": 7.0}, generations=5, pop_size=20,
                    seed=3, progress=False)
    files = write_search_outputs(tmp_path / "run", result, budget_ms=7.0,
                                 metadata={"table": "/t.json", "supernet": "/c.pt"})
    doc = json.loads(Path(files["pareto"]).read_text())
    assert doc["table"] == "/t.json" and doc["supernet"] == "/c.pt" and doc["seed"] == 3
    assert doc["pareto"] == result.pareto and doc["n_pareto"] == len(result.pareto)
    assert doc["best_under_budget"] == best_under_budget(result, 7.0)
    assert doc["constraints"] == {"latency_ms": 7.0}
    assert doc["hypervolume_history"] == result.hypervolume_history and len(doc["hypervolume_history"]) == 5
    assert Path(files["pareto_plot"]).is_file() and Path(files["hypervolume_plot"]).is_file()


def _result(entries, budget_metric="latency_ms"):
    from hwnas.search.result import SearchResult

    return SearchResult(pareto=entries, evaluated=entries, hypervolume_history=[0.0], evaluations=len(entries),
                        seconds=0.0, seed=0, settings={"objectives": ["accuracy", budget_metric],
                                                        "maximize": ["accuracy"]})


def _entry(acc, ms, se=None, feasible=True):
    entry = {"arch": {"x": [acc, ms]}, "objectives": {"accuracy": acc, "latency_ms": ms},
             "constraints": {"latency_ms": ms}, "feasible": feasible}
    if se is not None:
        entry["stderr"] = {"accuracy": se}
    return entry


def test_best_under_budget_calls_a_lead_inside_the_standard_error_a_tie_and_picks_the_faster():
    # 80.0 leads 79.5 by 0.5 points; one standard error of the difference is hypot(1, 1) = 1.41
    entries = [_entry(80.0, 0.9, 1.0), _entry(79.5, 0.5, 1.0), _entry(76.0, 0.3, 1.0), _entry(90.0, 2.0, 1.0)]
    best = best_under_budget(_result(entries), 1.0)
    assert best["objectives"] == {"accuracy": 79.5, "latency_ms": 0.5}  # the faster of the two tied
    selection = best["selection"]
    assert selection["tied"] == 2 and "cannot tell them apart" in selection["note"]
    assert selection["highest_estimate"]["accuracy"] == 80.0 and selection["highest_estimate"]["latency_ms"] == 0.9
    assert [t["latency_ms"] for t in selection["tied_with"]] == [0.5, 0.9]
    assert "lowest latency_ms" in selection["rule"]


def test_best_under_budget_keeps_a_lead_larger_than_the_standard_error():
    entries = [_entry(80.0, 0.9, 0.5), _entry(78.0, 0.5, 0.5)]  # 2 points against 0.71
    best = best_under_budget(_result(entries), 1.0)
    assert best["objectives"]["accuracy"] == 80.0 and best["selection"]["tied"] == 1
    assert "note" not in best["selection"]
    # the same estimates measured on fewer images: the lead is noise, the faster one is picked
    wide = [_entry(80.0, 0.9, 2.0), _entry(78.0, 0.5, 2.0)]
    assert best_under_budget(_result(wide), 1.0)["objectives"]["accuracy"] == 78.0
    # without standard errors nothing is called a tie, as before
    bare = [_entry(80.0, 0.9), _entry(79.9, 0.5)]
    assert best_under_budget(_result(bare), 1.0) == bare[0]


def test_pareto_json_holds_each_estimates_standard_error_and_how_it_was_computed(tmp_path):
    from hwnas.search.artifact import write_search_outputs
    from hwnas.search.result import accuracy_size_agreement, attach_stderr
    from hwnas.stats import binomial_stderr

    space, metrics = get_space("nb201"), nb201_metrics()
    result = search(space, metrics, ("accuracy", "latency_ms"), {"latency_ms": 7.0}, generations=3, pop_size=12,
                    seed=3, progress=False)
    attach_stderr(result, "accuracy", lambda archs: [binomial_stderr(a, 1000) for a in metrics["accuracy"](archs)])
    uncertainty = {"accuracy": {"kind": "binomial standard error", "split": "val", "images": 1000}}
    files = write_search_outputs(tmp_path / "run", result, budget_ms=7.0, metadata={"uncertainty": uncertainty})
    doc = json.loads(Path(files["pareto"]).read_text())
    assert doc["uncertainty"] == uncertainty
    for entry in doc["pareto"]:
        acc = entry["objectives"]["accuracy"]
        assert entry["stderr"]["accuracy"] == pytest.approx(100 * np.sqrt(acc / 100 * (1 - acc / 100) / 1000),
                                                            abs=1e-4)
    assert doc["best_under_budget"]["selection"]["tied"] >= 1
    # every evaluated subnet is there too, in order, each estimate with its standard error
    assert [e["arch"] for e in doc["evaluated"]] == [e["arch"] for e in result.evaluated]
    assert all(e["stderr"]["accuracy"] > 0 for e in doc["evaluated"])
    # the accuracy here is a sum of per-op gains, the cost a sum of per-op prices: they rise together
    signal = accuracy_size_agreement(result, lambda arch: metrics["latency_ms"]([arch])[0])
    assert signal["subnets"] == len(result.evaluated) and signal["kendall_tau"] > 0.3


def test_search_cli_reports_bad_flags_before_loading_anything(tmp_path, capsys):
    args = ["search", "--json", "--space", "nb201", "--table", str(tmp_path / "none.json"),
            "--supernet", str(tmp_path / "none.pt"), "--out", str(tmp_path / "r")]
    assert main([*args, "--budget-ms", "-1"]) == 2
    assert "--budget-ms" in json.loads(capsys.readouterr().out)["error"]
    assert main([*args, "--budget-ms", "5", "--objectives", "accuracy,energy"]) == 2
    assert "energy" in json.loads(capsys.readouterr().out)["error"]
    assert main([*args, "--budget-ms", "5"]) == 2
    assert "file not found" in json.loads(capsys.readouterr().out)["error"]
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def tiny_latency_table(tmp_path_factory):
    """A latency table measured here with onnxruntime on a tiny MobileNetV3 space."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("hwnas.latency.predictor")
    from hwnas.device_profile import load_profile, profile_from_dict
    from hwnas.latency.profile import profile

    raw = load_profile("cpu-ort-1t").to_dict()
    raw["protocol"].update(warmup=1, min_repeats=3, max_repeats=5, max_seconds=0.01, remeasure=0)
    path = tmp_path_factory.mktemp("table") / "tiny.json"
    profile(profile_from_dict(raw), "mbv3-small-input", path, quick=True, progress=False,
            space_options={"resolutions": [8], "width_mult": 0.25})
    return path


@pytest.mark.slow  # measures a real (tiny) latency table first
def test_search_cli_writes_the_front_under_the_budget(tiny_latency_table, tmp_path, capsys):
    from hwnas.latency.predictor import LatencyPredictor

    predictor = LatencyPredictor.load(tiny_latency_table)
    space = predictor.space
    fastest = float(predictor.predict([space.smallest()])[0])
    largest = float(predictor.predict([space.largest()])[0])
    budget = fastest + 0.5 * (largest - fastest)
    args = ["search", "--json", "--space", "mbv3-small-input", "--table", str(tiny_latency_table),
            "--objectives", "latency_ms,params", "--pop", "16", "--gens", "4", "--seed", "1"]
    assert main([*args, "--budget-ms", str(fastest * 0.5), "--out", str(tmp_path / "none")]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert "below the fastest subnet's predicted latency" in error and not (tmp_path / "none").exists()

    assert main([*args, "--budget-ms", str(budget), "--out", str(tmp_path / "run")]) == 0
    out = json.loads(capsys.readouterr().out)
    doc = json.loads(Path(out["pareto"]).read_text())
    assert doc["table"] == str(tiny_latency_table.resolve()) and doc["space"] == "mbv3-small-input"
    assert doc["space_options"]["resolutions"] == [8]
    assert out["n_pareto"] == len(doc["pareto"]) > 0 and out["evaluations"] == doc["evaluations"] <= 64
    assert all(e["objectives"]["latency_ms"] <= budget for e in doc["pareto"])
    assert len(doc["hypervolume_history"]) == 4
    assert (tmp_path / "run" / "pareto.png").is_file() and (tmp_path / "run" / "hypervolume.png").is_file()


def test_evolution_mutates_resolution_and_respects_the_constraint_on_mbv3():
    space = get_space("mbv3-small-input")
    metrics = {"macs": lambda archs: np.array([space.flops(a) / 1e6 for a in archs]),
               "params": lambda archs: np.array([space.params(a) / 1e6 for a in archs])}
    limit = float(np.median(metrics["params"]([space.sample(np.random.default_rng(0)) for _ in range(30)])))
    result = search(space, metrics, ("macs",), {"params": limit}, "evolution", maximize=("macs",),
                    evaluations=150, pop_size=20, seed=0, progress=False)
    assert result.evaluations == 150
    assert len({e["arch"]["r"] for e in result.evaluated}) == len(space.resolutions)
    best = best_under_budget(result, limit, metric="params")
    assert best["constraints"]["params"] <= limit
    assert best["objectives"]["macs"] == max(e["objectives"]["macs"] for e in result.evaluated if e["feasible"])
