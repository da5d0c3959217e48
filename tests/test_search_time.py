"""Searches that end: the wall-clock budget, defaults sized from the measured cost, a truthful
time left, and one strategy name in the progress line, the plot and pareto.json."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from test_search import nb201_metrics

from hwnas.cli import main
from hwnas.errors import InputError
from hwnas.search import SearchBudget, get_strategy, search
from hwnas.search.artifact import pareto_document
from hwnas.search.planning import SearchProgress, default_budget, parse_duration, plan_evaluations
from hwnas.space import get_space


def slow(metric, seconds):
    def wrapped(archs):
        time.sleep(seconds * len(archs))
        return metric(archs)

    return wrapped


def test_durations_parse_with_units_and_bad_ones_are_input_errors():
    assert parse_duration("90") == parse_duration("90s") == parse_duration("1.5m") == 90
    assert parse_duration("10m") == 600 and parse_duration("2h") == 7200
    for bad in ("", "ten minutes", "-5m", "0s", "5d"):
        with pytest.raises(InputError, match="--max-time"):
            parse_duration(bad)


def test_a_search_stops_when_its_wall_clock_budget_is_spent():
    metrics = nb201_metrics()
    metrics["latency_ms"] = slow(metrics["latency_ms"], 0.01)
    result = search(get_space("nb201"), metrics, strategy="nsga2", generations=100, pop_size=50, seed=0,
                    progress=False, max_seconds=1.0)
    # at 10 ms a subnet, 100 x 50 would take 50 s; the clock is read every 4 subnets
    assert 1.0 <= result.seconds < 1.0 + 0.5
    assert result.settings["stopped_on_time"] and 20 <= result.evaluations < 200
    assert len(result.evaluated) == result.evaluations and result.pareto
    assert result.hypervolume_history[-1] == result.hypervolume > 0


def test_the_time_left_is_known_from_the_first_generation_and_capped_by_the_deadline():
    progress = SearchProgress("x", planned=1000, deadline=None, start=0.0, enabled=False)
    rate, left = progress.estimate(done=50, now=10.0)  # one generation: 50 subnets in 10 s
    assert rate == 5.0 and left == pytest.approx(950 / 5.0)
    progress = SearchProgress("x", planned=1000, deadline=60.0, start=0.0, enabled=False)
    assert progress.estimate(done=50, now=10.0)[1] == pytest.approx(50.0)
    assert SearchProgress("x", None, None, 0.0, enabled=False).estimate(10, 1.0)[1] == np.inf


def test_default_budget_is_sized_from_the_measured_cost():
    metrics = nb201_metrics()
    metrics["accuracy"] = slow(metrics["accuracy"], 0.02)
    evaluations, generations, plan = default_budget(get_space("nb201"), metrics, 5.0, pop_size=None,
                                                    generations=None, evaluations=None)
    assert generations is None and plan is not None and 0.02 <= plan.seconds_per_evaluation < 0.04
    assert evaluations == plan.evaluations and 100 <= evaluations <= 200  # 80 % of 5 s at ~20-40 ms
    assert default_budget(get_space("nb201"), metrics, 5.0, pop_size=20, generations=None,
                          evaluations=None) == (None, 100, None)
    assert plan_evaluations(600, 2.0).evaluations == 240  # a supernet estimator's cost: minutes, not hours


@pytest.mark.parametrize("evaluations, ran", [(None, "nsga2"), (200, "pareto-local-search")])
def test_one_strategy_name_for_what_ran(evaluations, ran, tmp_path):
    assert get_strategy("pareto-local-search").strategy_ran(SearchBudget(evaluations, 3)) == ran
    result = search(get_space("nb201"), nb201_metrics(), evaluations=evaluations, generations=3, pop_size=20,
                    seed=0, progress=False)
    doc = pareto_document(result, budget_ms=10.0, metadata={})
    assert result.settings["strategy_ran"] == doc["strategy_ran"] == ran
    assert doc["settings"]["strategy_pop_size"] == 20


def test_search_cli_rejects_a_bad_max_time(tmp_path, capsys):
    status = main(["search", "--json", "--space", "nb201", "--table", str(tmp_path / "t.json"), "--budget-ms", "5",
                   "--out", str(tmp_path / "r"), "--max-time", "soon"])
    assert status == 2 and "--max-time" in json.loads(capsys.readouterr().out)["error"]
