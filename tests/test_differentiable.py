"""Differentiable search: the exact expected-latency term, the relaxations, and a run on a toy supernet."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from hwnas.device_profile import load_profile
from hwnas.errors import InputError
from hwnas.latency.fingerprint import device_fingerprint
from hwnas.latency.predictor import METHODS, LatencyPredictor
from hwnas.latency.table import LatencyTable
from hwnas.search.differentiable import (
    ArchDistribution,
    DifferentiableSettings,
    ExpectedLatency,
    _weights,
    differentiable_search,
    project_to_budget,
)
from hwnas.space import get_space

TINY = {"width_mult": 0.25, "resolutions": [12, 16]}


def _table(space, path) -> LatencyTable:
    """A complete table whose medians grow with the op's work (MACs) plus a pseudo-random part."""
    from hwnas.space.layers import op_macs  # noqa: F401 - the same notion of work the space uses

    entries = {}
    for k in space.all_ops():
        u = int(hashlib.sha256(k.encode()).hexdigest()[:8], 16) / 2**32
        med = 0.01 + 0.02 * u + 1e-3 * len(k) / 10
        entries[k] = {"median_ms": med, "p25_ms": med, "p75_ms": med, "cv": 0.01, "n": 10}
    table = LatencyTable(space={"name": space.name, "config": space.config()},
                         profile=load_profile("cpu-ort-1t").to_dict(), device=device_fingerprint(),
                         versions={}, protocol={}, entries=entries, expected_entries=len(entries))
    table.save(path)
    return table


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    space = get_space("mbv3-small-input", **TINY)
    table = _table(space, tmp_path_factory.mktemp("table") / "t.json")
    pred = LatencyPredictor(table, space)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(150)]
    sums, n_ops = pred.op_sums(archs)
    truth = 0.05 + sums @ np.linspace(0.6, 1.4, sums.shape[1]) - 0.002 * n_ops  # per-type scales and overhead
    pred.fit(archs, truth * np.exp(np.random.default_rng(1).normal(0, 0.03, len(truth))), methods=["per-type"])
    return pred


@pytest.mark.parametrize("method", METHODS)
def test_linear_costs_reproduce_every_calibration_exactly(predictor, method):
    space = predictor.space
    rng = np.random.default_rng(2)
    archs = [space.sample(rng) for _ in range(40)]
    predictor = LatencyPredictor(predictor.table, space)
    predictor.fit(archs, predictor.predict(archs) * np.exp(rng.normal(0, 0.05, 40)), methods=[method])
    intercept, costs = predictor.linear_costs()
    linear = [intercept + sum(costs[k] for k in space.ops(a)) for a in archs]
    np.testing.assert_allclose(linear, predictor.predict(archs), rtol=1e-10)


def test_expected_latency_is_the_predictor_on_one_hot_distributions(predictor):
    space = predictor.space
    dist, expected = ArchDistribution(space), ExpectedLatency(predictor, space)
    for arch in [space.smallest(), space.largest(), *[space.sample(np.random.default_rng(i)) for i in range(5)]]:
        dist.set_one_hot(arch)
        assert float(expected(dist.probs())) == pytest.approx(float(predictor.predict([arch])[0]), rel=1e-9)


def test_expected_latency_gradient_matches_finite_differences(predictor):
    space = predictor.space
    dist, expected = ArchDistribution(space).double(), ExpectedLatency(predictor, space)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in dist.parameters():
            p.normal_()
    value = expected(dist.probs())
    value.backward()
    h = 1e-6
    for name, index in (("r", (1,)), ("d", (2, 0)), ("k", (5, 2)), ("e", (0, 1)), ("e", (13, 2))):
        param = getattr(dist, name)
        with torch.no_grad():
            param[index] += h
            up = float(expected(dist.probs()))
            param[index] -= 2 * h
            down = float(expected(dist.probs()))
            param[index] += h
        assert float(param.grad[index]) == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-10)


def test_gdas_samples_are_one_hot_with_gradient_to_every_logit():
    logits = torch.randn(6, 3, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    w = _weights(logits, "gdas", 1.0, gen)
    values = w.detach()
    assert torch.all((values == 0) | (torch.abs(values - 1) < 1e-6)) and torch.allclose(values.sum(-1), torch.ones(6))
    (w * torch.arange(3.0)).sum().backward()
    assert torch.all(logits.grad.abs().sum(-1) > 0)


def test_proxyless_gates_one_of_two_sampled_paths():
    logits = torch.randn(8, 3, requires_grad=True)
    w = _weights(logits, "proxyless", 1.0, torch.Generator().manual_seed(0))
    values = w.detach()
    assert torch.all((values.abs() < 1e-6).sum(-1) >= 1)  # at least one path is off in each row
    assert torch.allclose(values.sum(-1), torch.ones(8))
    (w * torch.arange(3.0)).sum().backward()
    assert torch.all((logits.grad != 0).sum(-1) <= 2)  # the gradient reaches the two candidates only


def _toy_supernet():
    from hwnas.supernet import build_supernet
    from hwnas.train.trainer import TrainSettings

    torch.manual_seed(0)
    space = get_space("mbv3-small-input", **TINY)
    meta = {"settings": asdict(TrainSettings(space="mbv3-small-input", space_options=TINY, val_size=300))}
    return build_supernet(space), meta


@pytest.mark.parametrize("relaxation", ["gdas", "proxyless", "darts"])
def test_a_large_lambda_drives_the_search_to_the_fastest_choices(predictor, relaxation):
    supernet, meta = _toy_supernet()
    space = predictor.space
    rng = np.random.default_rng(0)
    fastest = float(predictor.predict([space.smallest(), *[space.sample(rng) for _ in range(2000)]]).min())
    settings = DifferentiableSettings(relaxation=relaxation, steps=6 if relaxation == "darts" else 12,
                                      batch_size=16, lambda_init=200.0,
                                      weight_lr=0.0, arch_lr=0.2, band=0.0, progress=False)
    run = differentiable_search(supernet, meta, predictor, fastest * 0.5, settings)
    assert run.predicted_ms <= fastest * (1 + 1e-9)  # no sampled subnet is faster than what it found
    uniform = float(ExpectedLatency(predictor, space)(ArchDistribution(space).probs()))
    assert run.expected_ms < 0.8 * uniform


def test_the_final_architecture_lands_within_the_budget_band(predictor):
    space = predictor.space
    dist = ArchDistribution(space)
    with torch.no_grad():
        for p in dist.parameters():
            p.normal_(generator=torch.Generator().manual_seed(3))
    lo, hi = (float(predictor.predict([a])[0]) for a in (space.smallest(), space.largest()))
    for budget in np.linspace(lo * 1.1, hi * 0.95, 5):
        arch, moves = project_to_budget(dist, predictor, budget, 0.1)
        assert 0.9 * budget <= float(predictor.predict([arch])[0]) <= 0.95 * budget, moves


def test_darts_is_refused_where_its_paths_would_not_fit():
    space = get_space("mbv3")
    from hwnas.search.differentiable import _estimate_darts_memory_mb

    assert _estimate_darts_memory_mb(space, 256) > 2048
    supernet, meta = _toy_supernet()
    supernet.space = space  # only the memory check runs
    with pytest.raises(InputError, match="gdas or proxyless"):
        differentiable_search(supernet, meta, None, 10.0, DifferentiableSettings(relaxation="darts", batch_size=256))


def test_cli_differentiable_search_writes_a_front_export_can_take(tmp_path, capsys, predictor):
    from hwnas.cli import main
    from hwnas.train import TrainSettings, train

    predictor.save()
    settings = TrainSettings(space="mbv3-small-input", space_options=TINY, epochs=1, batch_size=32, val_size=100,
                             recal_batches=1, recal_batch_size=32, eval_batch_size=256, limit_train=64,
                             num_random=1)
    train(settings, out=tmp_path / "s.pt", progress=False)
    lo, hi = (float(predictor.predict([a])[0]) for a in (predictor.space.smallest(), predictor.space.largest()))
    budget = lo + 0.6 * (hi - lo)
    rc = main(["search", "--space", "mbv3-small-input", "--table", predictor.table.path, "--supernet",
               str(tmp_path / "s.pt"), "--budget-ms", f"{budget:.6f}", "--algo", "differentiable", "--steps", "4",
               "--sweep", "2", "--out", str(tmp_path / "run"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, out
    doc = json.loads((tmp_path / "run" / "pareto.json").read_text())
    assert doc["settings"]["strategy"] == "differentiable" and len(doc["settings"]["strategy_runs"]) == 2
    assert out["evaluations"] == 2 and out["best_under_budget"] is not None
    for entry in doc["pareto"]:
        assert {"accuracy", "latency_ms"} <= set(entry["objectives"]) and entry["objectives"]["latency_ms"] <= budget
