"""Accuracy estimators: features, the MLP predictor, zero-cost proxies, supernet evaluation, registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hwnas.data import Dataset, load_dataset
from hwnas.errors import InputError
from hwnas.estimate import AccuracyPredictor, ZeroCostEstimator, arch_features, get_estimator
from hwnas.estimate.features import cost_features
from hwnas.estimate.predictor import GP_GRID
from hwnas.space.base import get_space
from hwnas.stats import kendall_tau
from hwnas.supernet import build_supernet
from hwnas.train.checkpoint import save_checkpoint
from hwnas.train.trainer import TrainSettings

TINY = {"width_mult": 0.25, "resolutions": [8, 12]}

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def space():
    return get_space("mbv3-small-input", **TINY)


def synthetic_accuracy(space, archs):
    """A known function of the architecture: depth, kernels and expands of used slots, resolution."""
    out = []
    for a in archs:
        used = [i for i in range(space.n_slots) if i % 4 < a["d"][i // 4]]
        out.append(70 + 0.3 * sum(a["d"]) + 0.05 * sum(a["k"][i] for i in used)
                   + 0.08 * sum(a["e"][i] for i in used) + 0.2 * a["r"])
    return np.array(out)


def test_features_zero_unused_slots_and_are_one_hot(space):
    small = space.smallest()
    f = arch_features(space, [small, space.largest()])
    assert f.shape[0] == 2 and set(np.unique(f)) <= {0.0, 1.0}
    # 2 blocks used in each of 5 stages: 10 slots x (one kernel + one expand) + 5 depths + 1 resolution
    assert f[0].sum() == 10 * 2 + 5 + 1
    assert f[1].sum() == 20 * 2 + 5 + 1


def test_predictor_fits_a_known_function_and_round_trips(space, tmp_path):
    rng = np.random.default_rng(0)
    train = [space.sample(rng) for _ in range(400)]
    held_out = [space.sample(rng) for _ in range(200)]
    pred = AccuracyPredictor(space, epochs=300).fit(train, synthetic_accuracy(space, train))
    metrics = pred.score(held_out, synthetic_accuracy(space, held_out))
    assert metrics["kendall_tau"] > 0.8 and metrics["rmse"] < 1.0
    for name in ("p.json", "p.pt"):
        pred.save(tmp_path / name)
        again = AccuracyPredictor.load(tmp_path / name)
        np.testing.assert_allclose(again.predict(held_out), pred.predict(held_out), rtol=1e-6)
    via_registry = get_estimator("predictor", predictor_path=tmp_path / "p.pt", space=space)
    np.testing.assert_allclose(via_registry.predict(held_out[:5]), pred.predict(held_out[:5]), rtol=1e-6)


def test_cost_features_are_log_macs_and_params(space):
    rng = np.random.default_rng(2)
    archs = [space.sample(rng) for _ in range(50)] + [space.smallest(), space.largest()]
    expected = np.log([[space.flops(a), space.params(a)] for a in archs])
    np.testing.assert_allclose(cost_features(space, archs), expected, rtol=1e-6)


def test_predictor_cost_features_and_ensemble_round_trip(space, tmp_path):
    rng = np.random.default_rng(1)
    train = [space.sample(rng) for _ in range(200)]
    held_out = [space.sample(rng) for _ in range(100)]
    # accuracy that follows log MACs: the cost inputs carry it directly
    target = lambda archs: np.array([60 + 3 * np.log(space.flops(a)) for a in archs])  # noqa: E731
    pred = AccuracyPredictor(space, epochs=200, ensemble=3).fit(train, target(train))
    assert pred.x_mean is not None and len(pred.x_mean) == 2
    assert pred.score(held_out, target(held_out))["kendall_tau"] > 0.8
    plain = AccuracyPredictor(space, epochs=20, use_cost=False).fit(train, target(train))
    assert plain.x_mean is None
    for p, name in ((pred, "e.pt"), (pred, "e.json"), (plain, "p.json")):
        p.save(tmp_path / name)
        again = AccuracyPredictor.load(tmp_path / name)
        assert again.ensemble == p.ensemble and (again.x_mean is None) == (p.x_mean is None)
        np.testing.assert_allclose(again.predict(held_out), p.predict(held_out), rtol=1e-5)
    with pytest.raises(InputError, match="ensemble"):
        AccuracyPredictor(space, ensemble=0).fit(train, target(train))


def test_predictor_rejects_foreign_files_and_unfitted_use(space, tmp_path):
    foreign = tmp_path / "f.json"
    foreign.write_text('{"format": "something-else"}')
    with pytest.raises(InputError, match="format"):
        AccuracyPredictor.load(foreign)
    with pytest.raises(InputError, match="not fitted"):
        AccuracyPredictor(space).predict([space.largest()])


def test_kendall_tau_orders():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_synflow_ranks_the_largest_subnet_above_the_smallest(space):
    est = ZeroCostEstimator(space, proxy="synflow")
    big, small = est.predict([space.largest(), space.smallest()])
    assert np.isfinite(big) and big > small
    assert est.predict([space.largest()])[0] == big  # deterministic


def test_naswot_scores_a_fixed_batch_deterministically(space):
    data = load_dataset(None)
    batch = data.normalize(data.train_x[:16])
    est = ZeroCostEstimator(space, proxy="naswot", batch=batch)
    a = est.predict([space.largest(), space.smallest()])
    assert np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, est.predict([space.largest(), space.smallest()]))


def test_registry_errors():
    with pytest.raises(InputError, match="unknown accuracy estimator"):
        get_estimator("oracle")
    with pytest.raises(InputError, match="predictor_path"):
        get_estimator("predictor")
    with pytest.raises(InputError, match="space"):
        get_estimator("zero-cost")
    with pytest.raises(InputError, match="proxy"):
        get_estimator("zero-cost", space=get_space("mbv3-small-input", **TINY), proxy="magic")
    with pytest.raises(InputError, match="checkpoint"):
        get_estimator("supernet")


def _checkpoint_and_data(space, tmp_path, val_size: int, n_train: int, n_test: int):
    """An untrained supernet's checkpoint (seed 0) and a slice of the shipped subset."""
    torch.manual_seed(0)
    net = build_supernet(space)
    settings = TrainSettings(space_options=TINY, val_size=val_size)
    ckpt = tmp_path / "s.pt"
    save_checkpoint(ckpt, {"space": space.name, "space_config": {k: v for k, v in space.config().items()
                                                                  if k != "name"},
                           "model": net.state_dict(), "settings": vars(settings), "epoch": 0, "history": []})
    full = load_dataset(None)
    data = Dataset(name="t", train_x=full.train_x[:n_train], train_y=full.train_y[:n_train],
                   test_x=full.test_x[:n_test], test_y=full.test_y[:n_test], classes=full.classes,
                   mean=full.mean, std=full.std)
    return ckpt, data


def test_supernet_estimator_measures_on_the_validation_split(space, tmp_path):
    ckpt, data = _checkpoint_and_data(space, tmp_path, val_size=40, n_train=200, n_test=50)
    est = get_estimator("supernet", supernet_checkpoint=ckpt, data=data, recal_batches=1, recal_batch_size=32)
    assert len(est.eval_data.test_y) == 40  # held out of the training images, not the test set
    acc = est.predict([space.largest(), space.smallest(), space.largest()])
    assert np.all((acc >= 0) & (acc <= 100)) and acc[0] == acc[2]
    assert np.all(acc * 40 / 100 == np.round(acc * 40 / 100))  # whole images correct out of 40
    correct, loss = est.outcomes(space.largest())  # per validation image, same recalibration
    assert correct.shape == loss.shape == (40,) and 100 * correct.mean() == acc[0] and np.all(loss > 0)
    other = get_estimator("supernet", supernet_checkpoint=ckpt, data=data, recal_batches=1, recal_batch_size=32,
                          recal_seed=est.recal_seed + 1)
    assert not np.array_equal(other.recal[0], est.recal[0])  # another draw of recalibration images
    with pytest.raises(InputError, match="split"):
        get_estimator("supernet", supernet_checkpoint=ckpt, data=data, split="train")


def test_estimator_refuses_a_checkpoint_of_other_space_options(space, tmp_path):
    ckpt = tmp_path / "s.pt"
    save_checkpoint(ckpt, {"space": space.name, "space_config": {k: v for k, v in space.config().items()
                                                                  if k != "name"},
                           "model": build_supernet(space).state_dict(), "settings": {}, "epoch": 0, "history": []})
    other = get_space("mbv3-small-input", width_mult=0.5, resolutions=[8, 12])
    with pytest.raises(InputError, match="trained on space"):
        get_estimator("supernet", supernet_checkpoint=ckpt, space=other)


def test_fused_measurement_matches_the_dynamic_supernet_path(space, tmp_path):
    """The fast path (extracted subnet, BN folded into convs, inputs prepared once per resolution)
    measures what evaluating through the dynamic supernet does, and leaves the supernet's shared BN
    statistics recalibrated for the subnet as before (export extracts right after `accuracy`)."""
    from hwnas.estimate.supernet import fused_subnet

    ckpt, data = _checkpoint_and_data(space, tmp_path, val_size=60, n_train=300, n_test=10)
    kw = dict(supernet_checkpoint=ckpt, data=data, recal_batches=2, recal_batch_size=32, eval_batch_size=16)
    fast, ref = get_estimator("supernet", **kw), get_estimator("supernet", fused=False, **kw)
    assert fast.fused and not ref.fused
    rng = np.random.default_rng(0)
    for arch in [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(3)]:
        c1, l1 = fast.outcomes(arch)
        c2, l2 = ref.outcomes(arch)
        assert c1.shape == (60,) and np.array_equal(c1, c2)
        np.testing.assert_allclose(l1, l2, rtol=1e-4, atol=1e-5)
        assert fast.accuracy(arch) == 100.0 * float(c2.mean())
        model = fused_subnet(fast.supernet, arch)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    # `accuracy` recalibrated the supernet's statistics for the last arch: extraction sees them
    arch = space.sample(rng)
    fast.accuracy(arch)
    before = fast.supernet.extract(arch).eval().state_dict()
    from hwnas.supernet import recalibrate_bn

    recalibrate_bn(ref.supernet, ref.recal, arch=arch)
    after = ref.supernet.extract(arch).eval().state_dict()
    for k, v in before.items():
        if "running" in k:
            torch.testing.assert_close(v, after[k])


def test_ordinal_features_are_the_choices_as_numbers_masked_by_depth(space):
    from hwnas.estimate.features import ordinal_features, ordinal_names

    small, large = space.smallest(), space.largest()
    f = ordinal_features(space, [small, large])
    names = ordinal_names(space)
    assert f.shape == (2, len(names)) == (2, 2 + 3 * space.n_stages + 2 * space.n_slots)
    col = {n: i for i, n in enumerate(names)}
    assert f[0, col["r"]] == min(space.resolutions) and f[1, col["r"]] == max(space.resolutions)
    assert f[0, col["depth"]] == min(space.depths) * space.n_stages
    assert f[1, col["esum0"]] == max(space.depths) * max(space.expands)
    # a slot the stage's depth skips counts as 0, whatever its (canonical) choice
    per_stage = space.n_slots // space.n_stages
    assert f[0, col[f"k{per_stage - 1}"]] == 0 and f[0, col["k0"]] == min(space.kernels)
    assert f[1, col[f"e{per_stage - 1}"]] == max(space.expands)


def test_predictor_with_ordinal_features_round_trips(space, tmp_path):
    rng = np.random.default_rng(3)
    train = [space.sample(rng) for _ in range(200)]
    held_out = [space.sample(rng) for _ in range(100)]
    pred = AccuracyPredictor(space, epochs=200, ordinal=True).fit(train, synthetic_accuracy(space, train))
    assert pred.dense == ("cost", "ordinal") and len(pred.x_mean) == 2 + pred._dense([space.largest()],
                                                                                     ("ordinal",)).shape[1]
    assert pred.score(held_out, synthetic_accuracy(space, held_out))["kendall_tau"] > 0.8
    for name in ("o.pt", "o.json"):
        pred.save(tmp_path / name)
        again = AccuracyPredictor.load(tmp_path / name)
        assert again.dense == pred.dense and again.ordinal
        np.testing.assert_allclose(again.predict(held_out), pred.predict(held_out), rtol=1e-5)
    # a file written before ordinal features (no "dense" entry) loads as cost features only
    d = AccuracyPredictor(space, epochs=5).fit(train, synthetic_accuracy(space, train)).to_dict()
    del d["dense"]
    torch.save(d, tmp_path / "old.pt")
    old = AccuracyPredictor.load(tmp_path / "old.pt")
    assert old.dense == ("cost",) and not old.ordinal
    d["x_mean"] = d["x_mean"] + [0.0]
    torch.save(d, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="x_mean"):
        AccuracyPredictor.load(tmp_path / "bad.pt")


def test_extreme_features_measure_closeness_to_the_sandwich_ends(space):
    from hwnas.estimate.features import extreme_features, extreme_names

    small, large = space.smallest(), space.largest()
    f = extreme_features(space, [small, large])
    names = extreme_names(space)
    assert f.shape == (2, len(names)) == (2, 26 * (1 + len(space.resolutions)))
    col = {n: i for i, n in enumerate(names)}
    for end, row, other in (("small", 0, 1), ("large", 1, 0)):
        assert f[row, col[f"{end}:d"]] == f[row, col[f"{end}:k"]] == f[row, col[f"{end}:e"]] == 1
        assert f[row, col[f"{end}:k3"]] == 1 and f[other, col[f"{end}:k3"]] == 0
    r_small, r_large = min(space.resolutions), max(space.resolutions)
    assert f[0, col[f"r={r_small}*small:k"]] == 1 and f[0, col[f"r={r_large}*small:k"]] == 0
    assert f[1, col[f"r={r_large}*large:e2"]] == 1
    # only used blocks count: change a skipped slot of the smallest and nothing changes
    odd = dict(small, k=list(small["k"]))
    odd["k"][3] = max(space.kernels)  # slot 3 of stage 0 is skipped at depth 2 (canonical form resets it)
    np.testing.assert_array_equal(extreme_features(space, [odd]), f[:1])


def test_gp_predictor_chooses_its_kernel_by_cross_validation_and_round_trips(space, tmp_path):
    rng = np.random.default_rng(4)
    train = [space.sample(rng) for _ in range(150)]
    held_out = [space.sample(rng) for _ in range(100)]
    pred = AccuracyPredictor(space, kind="gp", ordinal=True, extreme=True, by_resolution=True).fit(
        train, synthetic_accuracy(space, train))
    assert pred.dense == ("cost", "ordinal", "extreme")
    assert tuple(pred.metrics["kernel"][k] for k in ("ell", "noise", "lin")) in set(GP_GRID)
    assert len(pred.metrics["kernel_cv_kendall_tau"]) == len(GP_GRID)
    assert pred.score(held_out, synthetic_accuracy(space, held_out))["kendall_tau"] > 0.8
    for name in ("g.pt", "g.json"):
        pred.save(tmp_path / name)
        again = AccuracyPredictor.load(tmp_path / name)
        assert again.kind == "gp" and again.dense == pred.dense and again.by_resolution
        np.testing.assert_allclose(again.predict(held_out), pred.predict(held_out), rtol=1e-9)
    with pytest.raises(InputError, match="kind"):
        AccuracyPredictor(space, kind="forest").fit(train, synthetic_accuracy(space, train))
    # a grid of its own: the CV scores those triples only
    mine = AccuracyPredictor(space, kind="gp", kernel_grid=((0.7, 0.1, 1.0), (1.0, 0.3, 0.0))).fit(
        train, synthetic_accuracy(space, train))
    assert set(mine.metrics["kernel_cv_kendall_tau"]) == {"0.7,0.1,1.0", "1.0,0.3,0.0"}
    assert (mine.metrics["kernel"]["ell"], mine.metrics["kernel"]["noise"]) in {(0.7, 0.1), (1.0, 0.3)}
    for grid in ((), ((0.7, 0.0, 1.0),), ((0.7, 0.1),)):
        with pytest.raises(InputError, match="kernel grid"):
            AccuracyPredictor(space, kind="gp", kernel_grid=grid).fit(train, synthetic_accuracy(space, train))


def test_by_resolution_features_repeat_the_code_at_its_resolution_only(space):
    from hwnas.estimate.features import by_resolution_features

    archs = [space.smallest(), space.largest()]
    code, f = arch_features(space, archs), by_resolution_features(space, archs)
    n, width = len(space.resolutions), code.shape[1]
    assert f.shape == (2, n * width)
    np.testing.assert_array_equal(f[0, :width], code[0]) and np.testing.assert_array_equal(f[0, width:], 0)
    np.testing.assert_array_equal(f[1, -width:], code[1]) and np.testing.assert_array_equal(f[1, :-width], 0)


def test_predictor_estimator_fits_the_kernel_predictor_once_and_reuses_it(space, tmp_path):
    from hwnas.estimate import default_predictor_path

    ckpt, data = _checkpoint_and_data(space, tmp_path, val_size=40, n_train=200, n_test=50)
    est = get_estimator("predictor", supernet_checkpoint=ckpt, space=space, n_train=12, progress=False,
                        data=data, recal_batches=1, recal_batch_size=32)
    assert est.kind == "gp" and est.ordinal and est.extreme and est.by_resolution
    assert default_predictor_path(ckpt).is_file()
    again = get_estimator("predictor", supernet_checkpoint=ckpt, space=space)  # read back, not refitted
    archs = [space.sample(np.random.default_rng(5)) for _ in range(4)]
    np.testing.assert_allclose(again.predict(archs), est.predict(archs), rtol=1e-9)


def test_signal_benchmark_rescores_every_evaluated_subnet_on_the_test_split(space, tmp_path):
    """`--test-evaluated`: pareto.json's evaluated subnets are scored on the test split with the same
    shared weights; tau with MACs and with the search's estimates come from those test accuracies."""
    import json

    from hwnas.demo import _test_evaluated
    from hwnas.estimate.supernet import SupernetEstimator

    ckpt, _ = _checkpoint_and_data(space, tmp_path, val_size=40, n_train=200, n_test=50)
    rng = np.random.default_rng(1)
    archs = [space.largest(), space.smallest(), *(space.sample(rng) for _ in range(4))]
    estimates = [71.0, 65.0, 70.0, 66.5, 69.0, 67.0]
    evaluated = [{"arch": a, "objectives": {"accuracy": v, "latency_ms": 1.0}}
                 for a, v in zip(archs, estimates, strict=True)]
    doc = tmp_path / "pareto.json"
    doc.write_text(json.dumps({"supernet": str(ckpt), "evaluated": evaluated}))
    got = _test_evaluated(doc)
    on_test = SupernetEstimator(ckpt, split="test")
    test = [on_test.accuracy(a) for a in archs]
    assert got["test_images"] == on_test.eval_size > 0
    assert got["kendall_tau_test_macs"] == round(kendall_tau(test, [space.flops(a) for a in archs]), 4)
    assert got["kendall_tau_estimate_test"] == round(kendall_tau(estimates, test), 4)
    # a pareto.json without the evaluated subnets is refused, naming the file and the field
    doc.write_text(json.dumps({"supernet": str(ckpt)}))
    with pytest.raises(InputError, match="evaluated") as caught:
        _test_evaluated(doc)
    assert caught.value.path == str(doc)


def test_signal_benchmark_refuses_a_missing_table_before_running_anything(tmp_path):
    from hwnas.demo import signal_benchmark

    with pytest.raises(InputError, match="not found") as caught:
        signal_benchmark(tmp_path / "out", [0], table=tmp_path / "none.json")
    assert caught.value.field == "table" and not (tmp_path / "out").exists()
