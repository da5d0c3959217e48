"""The strategies of the NAS literature (grid, bo, tpe, rl, morphism, zero-cost): each on a
toy problem that pins what it does, plus what every strategy owes (seeded, budgeted, feasible)."""

from __future__ import annotations

import importlib.util
import json
import sys
import time

import numpy as np
import pytest
from test_search import analytic_front, cost, nb201_metrics, shortfall
from toy_space import VectorSpace

from hwnas.cli import main
from hwnas.errors import InputError
from hwnas.search import get_strategy, hypervolume, search, strategy_names
from hwnas.search.strategies.morphism import growths
from hwnas.space import get_space
from hwnas.space.nb201 import GROWTH_ORDER

NEW = ["grid", "bo", "tpe", "rl", "morphism", "zero-cost"]
HAS_OPTUNA = importlib.util.find_spec("optuna") is not None
needs_optuna = pytest.mark.skipif(not HAS_OPTUNA, reason="Optuna (extra 'bo') is not installed")
BUDGET = {"bo": 60}


def _params(strategy):
    marks = [needs_optuna] if strategy == "tpe" else []
    return pytest.param(strategy, marks=marks)


def toy(space=None, **kw):
    space = space or VectorSpace(6, 5)
    return search(space, {"cost": cost, "shortfall": shortfall}, ("cost", "shortfall"), maximize=(),
                  progress=False, **kw)


def points(result):
    return {(e["objectives"]["cost"], e["objectives"]["shortfall"]) for e in result.pareto}


def toy_hypervolume(result):
    F = np.array([[e["objectives"]["cost"], e["objectives"]["shortfall"]] for e in result.evaluated])
    return hypervolume(F / [24.0, 96.0], np.array([1.1, 1.1]))


def test_every_strategy_is_registered_and_multi_objective():
    for name in NEW:
        assert name in strategy_names()
        assert get_strategy(name).multi_objective


@pytest.mark.parametrize("strategy", [_params(s) for s in NEW])
def test_new_strategies_are_seeded_budgeted_and_feasible(strategy):
    space, metrics = get_space("nb201"), nb201_metrics()
    budget = BUDGET.get(strategy, 120)

    def run(seed):
        return search(space, metrics, ("accuracy", "latency_ms"), {"latency_ms": 8.0}, strategy,
                      evaluations=budget, pop_size=10, seed=seed, progress=False)

    first = run(7)
    assert first.evaluations == budget
    keys = [tuple(e["arch"]["edges"]) for e in first.evaluated]
    assert len(set(keys)) == budget
    assert [e["arch"] for e in run(7).evaluated] == [e["arch"] for e in first.evaluated]
    assert first.pareto and all(e["feasible"] and e["constraints"]["latency_ms"] <= 8.0 for e in first.pareto)
    # most of the budget is spent inside the limit (a random cell meets it half the time)
    if strategy != "grid":
        assert np.mean([e["feasible"] for e in first.evaluated]) > 0.5


@pytest.mark.parametrize("strategy", ["grid", _params("tpe"), "rl", "morphism", "zero-cost"])
def test_new_strategies_via_the_bench_cli(strategy, capsys):
    from test_search import NB201_CSV

    if not NB201_CSV.is_file():
        pytest.skip(f"benchmark table not found at {NB201_CSV}")
    status = main(["bench", "nb201", "--json", "--csv", str(NB201_CSV), "--accuracy", "acc_cifar10_test_200ep",
                   "--latency", "lat_ms_fpga", "--evals", "60", "--algo", strategy])
    out = json.loads(capsys.readouterr().out)
    assert status == 0 and out["evaluations"] == 60 and out["algo"] == strategy


# --- grid ---------------------------------------------------------------------------------------

def test_grid_finds_the_exact_front_of_a_small_space():
    result = toy(VectorSpace(4, 5), strategy="grid")
    assert result.evaluations == 5**4
    assert points(result) == analytic_front(4, 5)


def test_grid_over_a_coarse_grid_of_choices():
    result = toy(VectorSpace(4, 4), strategy="grid", strategy_options={"choices": {0: [0, 3], 1: [1]}})
    xs = [e["arch"]["x"] for e in result.evaluated]
    assert len(xs) == 2 * 1 * 4 * 4
    assert {x[0] for x in xs} == {0, 3} and {x[1] for x in xs} == {1}


def test_grid_refuses_a_large_space_with_its_size():
    with pytest.raises(InputError, match="9,094,947,017,729,282,379,150,390,625 points"):
        toy(VectorSpace(40, 5), strategy="grid", evaluations=10)
    with pytest.raises(InputError, match="gene 7 is not a position"):
        toy(VectorSpace(4, 4), strategy="grid", strategy_options={"choices": {7: [0]}})


def test_grid_under_a_small_budget_samples_the_grid_without_repeats():
    a = toy(VectorSpace(4, 4), strategy="grid", evaluations=50, seed=1)
    b = toy(VectorSpace(4, 4), strategy="grid", evaluations=50, seed=2)
    assert a.evaluations == b.evaluations == 50
    assert [e["arch"] for e in a.evaluated] != [e["arch"] for e in b.evaluated]


# --- morphism -----------------------------------------------------------------------------------

def test_morphism_never_evaluates_a_subnet_smaller_than_its_start():
    start = {"x": [1, 0, 2, 0, 1, 3]}
    result = toy(strategy="morphism", evaluations=300, pop_size=20, strategy_options={"start": start})
    X = np.array([e["arch"]["x"] for e in result.evaluated])
    assert result.evaluated[0]["arch"] == start
    assert np.all(X >= start["x"])
    # and it climbs along the front, far from where it started
    assert max(cost for cost, _ in points(result)) >= 20


def test_morphism_grows_nb201_cells_one_op_step_at_a_time():
    space = get_space("nb201")
    start = {"edges": ["skip_connect", "none", "none", "nor_conv_1x1", "none", "avg_pool_3x3"]}
    result = search(space, nb201_metrics(), evaluations=150, pop_size=20, strategy="morphism",
                    strategy_options={"start": start}, progress=False)
    order = [[GROWTH_ORDER.index(op) for op in e["arch"]["edges"]] for e in result.evaluated]
    assert np.all(np.array(order) >= [GROWTH_ORDER.index(op) for op in start["edges"]])
    # a growth that changes nothing the cell computes is grown on in its place
    for grown in growths(space, space.smallest()):
        assert space.without_dead_edges(grown) != space.smallest()


# --- rl -----------------------------------------------------------------------------------------

def test_rl_sampling_distribution_moves_toward_higher_reward():
    # both objectives fall with every gene: the best architectures are all zeros
    strategy = get_strategy("rl")
    result = search(VectorSpace(6, 5), {"cost": cost, "square": lambda a: cost(a) ** 2}, ("cost", "square"),
                    None, strategy, maximize=(), evaluations=300, seed=0, progress=False)
    zero = np.mean([p[0] for p in strategy.probabilities()])
    assert zero > 0.5  # from 0.2, uniform
    later = [sum(e["arch"]["x"]) for e in result.evaluated[-50:]]
    earlier = [sum(e["arch"]["x"]) for e in result.evaluated[:50]]
    assert np.mean(later) < np.mean(earlier) - 3


def test_rl_mnasnet_reward_needs_accuracy_and_a_latency_target():
    with pytest.raises(InputError, match="mnasnet reward needs"):
        toy(strategy="rl", evaluations=20, strategy_options={"reward": "mnasnet"})
    space = get_space("nb201")
    result = search(space, nb201_metrics(), ("accuracy", "latency_ms"), {"latency_ms": 6.0}, "rl",
                    evaluations=100, seed=0, strategy_options={"reward": "mnasnet"}, progress=False)
    assert result.pareto and all(e["feasible"] for e in result.pareto)


# --- zero-cost ----------------------------------------------------------------------------------

def test_zero_cost_spends_the_budget_on_the_proxy_ranked_pool():
    space = get_space("nb201")
    metrics = nb201_metrics()
    result = search(space, metrics, evaluations=100, pop_size=20, seed=3, strategy="zero-cost",
                    strategy_options={"pool_size": 300}, progress=False)
    # the pool is the first 300 distinct random cells of the seed; nothing outside it is evaluated
    rng, pool = np.random.default_rng(3), []
    while len(pool) < 300:
        arch = space.sample(rng)
        if arch not in pool:
            pool.append(arch)
    assert result.evaluations == 100 and all(e["arch"] in pool for e in result.evaluated)
    # the first generation spans the proxy's range: the pool's smallest and largest cells
    params = [space.params(a) for a in pool]
    first = [e["arch"] for e in result.evaluated[:20]]
    assert pool[int(np.argmin(params))] in first and pool[int(np.argmax(params))] in first


def test_zero_cost_beats_random_on_a_toy_trade_off():
    space, metrics = get_space("nb201"), nb201_metrics()

    def hv(strategy):
        r = search(space, metrics, evaluations=80, pop_size=20, seed=0, strategy=strategy, progress=False)
        return r.hypervolume_history[-1], r

    zero_cost, result = hv("zero-cost")
    assert zero_cost > hv("random")[0]
    with pytest.raises(InputError, match="does not count parameters"):
        toy(strategy="zero-cost", evaluations=10)


# --- tpe (Optuna) and bo (a GP) ------------------------------------------------------------------------

@needs_optuna
def test_tpe_beats_random_search_on_the_toy_front():
    tpe = toy(strategy="tpe", evaluations=200, seed=0)
    random = toy(strategy="random", evaluations=200, seed=0)
    assert toy_hypervolume(tpe) > toy_hypervolume(random)
    assert len(points(tpe) & analytic_front()) > len(points(random) & analytic_front())


def test_bo_after_its_random_start_improves_on_random_search():
    bo = toy(strategy="bo", evaluations=40, seed=0, strategy_options={"startup": 10})
    random = toy(strategy="random", evaluations=40, seed=0)
    assert toy_hypervolume(bo) > toy_hypervolume(random)
    assert bo.settings["strategy_engine"] == "numpy"


def test_bo_gp_interpolates_what_it_has_seen_and_is_unsure_far_from_it():
    from hwnas.search.gp import HammingGP, normal_scores

    rng = np.random.default_rng(0)
    X = rng.integers(0, 5, size=(40, 6))
    y = (X == 3).sum(axis=1) + 0.5 * (X[:, 0] == 1)  # additive in the genes
    scores = normal_scores(y[:, None])[:, 0]
    near = X[:5].copy()
    far = 9 + np.zeros((1, 6), dtype=np.int64)  # every gene differs from every seen one
    mean, std = HammingGP(X, np.vstack([near, far])).posterior(scores[:, None])
    assert np.abs(mean[:5, 0] - scores[:5]).max() < 0.5 * scores.std()
    assert std[5, 0] > 2 * std[:5, 0].max()
    assert abs(mean[5, 0] - scores.mean()) < 0.2  # far from the data: the prior mean


def test_the_gp_fits_each_target_on_the_view_its_marginal_likelihood_prefers():
    from hwnas.search.gp import HammingGP, mid_ranks

    rng = np.random.default_rng(0)
    X = rng.integers(0, 3, size=(120, 10))
    own = (X[:, :3].sum(axis=1) % 3).astype(float)  # on the first three columns alone, not additively
    every = (X == 2).sum(axis=1).astype(float)  # on all ten
    X_new = rng.integers(0, 3, size=(200, 10))
    gp = HammingGP(X, X_new, views=[np.arange(3)])
    mean, _ = gp.posterior(mid_ranks(np.c_[own, every]))
    assert [c[0] for c in gp.chosen] == [1, 0]  # the three columns for one, all for the other
    # fit on the view it chose, the first target's predictions beat the same GP on all the columns
    truth = X_new[:, :3].sum(axis=1) % 3
    alone, _ = HammingGP(X, X_new).posterior(mid_ranks(own[:, None]))
    assert np.corrcoef(mean[:, 0], truth)[0, 1] > 0.95 > 0.5 > np.corrcoef(alone[:, 0], truth)[0, 1]


def test_bo_with_the_optuna_engine_runs_optunas_gp_sampler():
    pytest.importorskip("optuna", reason="Optuna (extra 'bo') is not installed")
    bo = toy(strategy="bo", evaluations=14, seed=0, strategy_options={"startup": 10, "engine": "optuna"})
    assert bo.evaluations == 14 and bo.settings["strategy_engine"] == "optuna"
    with pytest.raises(InputError, match="unknown engine"):
        toy(strategy="bo", evaluations=5, strategy_options={"engine": "botorch"})


@pytest.mark.parametrize("strategy, options", [("bo", {"engine": "optuna"}), ("tpe", {})])
def test_a_missing_optuna_is_an_input_error_naming_the_extra(strategy, options, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    with pytest.raises(InputError, match=r"pip install 'hwnas\[bo\]'"):
        toy(strategy=strategy, evaluations=10, strategy_options=options)
    from test_search import NB201_CSV

    if NB201_CSV.is_file() and not options:
        status = main(["bench", "nb201", "--json", "--csv", str(NB201_CSV), "--accuracy", "acc_cifar10_test_200ep",
                       "--latency", "lat_ms_fpga", "--evals", "20", "--algo", strategy])
        out = json.loads(capsys.readouterr().out)
        assert status == 2 and "hwnas[bo]" in out["error"]


def test_zero_cost_scores_its_pool_within_a_share_of_the_wall_clock_budget(monkeypatch):
    import hwnas.search.strategies.zero_cost as zero_cost

    real = zero_cost.proxy_scores

    def slow_proxy(space, proxy, archs, seed):  # a network proxy's cost: 10 ms a subnet
        time.sleep(0.01 * len(archs))
        return real(space, proxy, archs, seed)

    monkeypatch.setattr(zero_cost, "proxy_scores", slow_proxy)
    strategy = get_strategy("zero-cost", pool_size=2000)
    result = search(get_space("nb201"), nb201_metrics(), strategy=strategy, evaluations=200, pop_size=20, seed=0,
                    progress=False, max_seconds=2.0)
    # scoring 2,000 would take 20 s; a quarter of the 2 s leaves a pool of a few dozen
    assert result.seconds < 2.5 and 20 <= result.evaluations <= 64


def test_normal_scores_rank_ties_alike_and_score_of_places_a_new_value():
    from hwnas.search.gp import normal_scores, score_of

    y = np.array([3.0, 1.0, 3.0, 2.0, 10.0])
    s = normal_scores(y[:, None])[:, 0]
    assert s[0] == s[2] and s[1] < s[3] < s[0] < s[4]
    assert abs(s.mean()) < 0.2
    assert score_of(y, 2.5) > s[3] and score_of(y, 2.5) < s[0]


def test_mid_ranks_give_tied_values_one_rank_whatever_their_order():
    """The surrogate's targets: values timed in whole milliseconds tie many architectures, and each
    tie gets the same (mean) rank, not ranks in the order the search happened to evaluate them."""
    from hwnas.search.gp import mid_ranks

    y = np.array([[3.0, 0.5], [1.0, 0.5], [3.0, 0.5], [2.0, 0.7]])
    r = mid_ranks(y)
    assert r[0, 0] == r[2, 0] == 2.5 / 4 and r[1, 0] == 0.0 and r[3, 0] == 0.25
    assert r[0, 1] == r[1, 1] == r[2, 1] == 1.0 / 4 and r[3, 1] == 0.75
    shuffled = mid_ranks(y[[2, 3, 0, 1]])
    np.testing.assert_array_equal(shuffled, r[[2, 3, 0, 1]])
