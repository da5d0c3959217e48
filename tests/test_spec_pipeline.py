"""A spec written here (not a built-in) goes through the whole pipeline: profile (onnxruntime, 1 thread)
-> validate -> train (1 epoch on a slice of the shipped subset) -> search under a budget -> export with
ONNX (and TVM where installed) parity against the extracted torch subnet; the CLI takes the spec too.
So does every built-in space (slow: a full table of each), and the MobileNetV3 spec file served by the
generic spec machinery."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import hwnas
from hwnas.cli import main as cli

pytest.importorskip("onnxruntime", reason="onnxruntime profiles and exports here")

# every family in a few hundred microseconds per subnet: a chain, residual blocks, a cell
SPEC = {
    "name": "e2e-tiny",
    "input": {"channels": 1, "resolutions": [16, 24]},
    "classes": 10,
    "stem": {"block": "conv", "width": 8, "kernel": 3, "stride": 2, "act": "relu"},
    "stages": [
        {"block": "mbconv", "width": [8, 16], "depth": [1, 2], "kernel": [3, 5], "expand": [2, 3], "stride": 2,
         "se": True},
        {"block": "basic", "width": [16, 24], "depth": [1, 2], "kernel": 3, "stride": 1},
        {"block": "cell", "width": 16, "nodes": 3, "ops": ["skip", "conv1x1", "avgpool3x3"], "repeat": 1},
    ],
    "head": {"width": 32, "act": "hswish", "dropout": 0.0},
}
PROFILE = """\
name: fast-ort-1t
backend: onnxruntime
options: {threads: 1}
protocol: {warmup: 2, min_repeats: 5, max_repeats: 20, max_seconds: 0.02, rel_ci: 0.2, remeasure: 0, rounds: 1}
"""


def test_a_users_spec_goes_through_profile_validate_train_search_export(tmp_path):
    spec, profile = tmp_path / "e2e.yaml", tmp_path / "fast.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    profile.write_text(PROFILE)
    through_the_pipeline(tmp_path, str(spec), profile, "e2e-tiny")


BUILTIN_SPECS = Path(hwnas.__file__).resolve().parent / "space" / "specs"


@pytest.mark.heavy
@pytest.mark.parametrize("space", ["chain", "resnet", "nb201-supernet", "mbv3-small-input",
                                   str(BUILTIN_SPECS / "mbv3-small-input.yaml")],
                         ids=["chain", "resnet", "nb201-supernet", "mbv3-small-input", "mbv3-small-input.yaml"])
def test_every_builtin_space_goes_through_profile_validate_train_search_export(tmp_path, space):
    profile = tmp_path / "fast.yaml"
    profile.write_text(PROFILE)
    from hwnas.data import load_dataset

    data = load_dataset(None)  # the shipped subset: the space takes its channels and classes, as in the demo
    options = {"in_channels": data.in_channels, "num_classes": data.num_classes}
    through_the_pipeline(tmp_path, space, profile, hwnas.get_space(space).name, options)


def through_the_pipeline(tmp_path, spec: str, profile, name: str, options: dict | None = None) -> None:
    """profile (every op key) -> validate -> train 1 epoch -> search under a budget -> export with parity
    (ONNX, and TVM where installed)."""
    table = tmp_path / "table.json"
    prof = hwnas.profile(profile, spec, table, progress=False, space_options=options)
    space = hwnas.get_space(spec, **(options or {}))
    assert prof.entries == len(space.all_ops()) == prof.measured
    assert json.loads(table.read_text())["space"]["name"] == name

    checked = hwnas.validate(table, 6, calib_n=6, rounds=1, progress=False)
    assert checked.n == 6 and np.isfinite(checked.mape)

    ckpt = tmp_path / "supernet.pt"
    trained = hwnas.train(out=ckpt, space=spec, epochs=1, limit_train=256, batch_size=64, val_size=128,
                          recal_batches=2, recal_batch_size=64, eval_batch_size=128, num_random=1, augment=False,
                          progress=False)
    assert trained.epochs == 1 and 0 <= trained.acc_smallest <= 100 and 0 <= trained.acc_largest <= 100

    predicted = hwnas.latency.predictor.LatencyPredictor.load(table).predict([space.smallest(), space.largest()])
    budget = float(np.mean(predicted))
    run = hwnas.search(spec, table=table, supernet=ckpt, budget_ms=budget, pop_size=8, generations=2,
                       out=tmp_path / "run")
    assert run.n_pareto >= 1 and run.best_under_budget is not None
    doc = json.loads((tmp_path / "run" / "pareto.json").read_text())
    assert doc["uncertainty"]["accuracy"] == {"kind": "binomial standard error", "split": "val", "images": 128}
    for entry in doc["pareto"]:  # each estimate's sampling error on the 128 validation images
        p = entry["objectives"]["accuracy"] / 100
        assert entry["stderr"]["accuracy"] == pytest.approx(100 * np.sqrt(p * (1 - p) / 128), abs=1e-4)
    assert -1 <= doc["accuracy_vs_macs"]["kendall_tau"] <= 1 and doc["accuracy_vs_macs"]["subnets"] > 1

    formats = ("onnx", "tvm") if importlib.util.find_spec("tvm") else ("onnx",)
    bundle = hwnas.export(run.pareto, out=tmp_path / "bundle", formats=formats, profile=profile)
    assert bundle.max_abs_diff <= 1e-4
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["space"]["name"] == name
    parity = manifest.get("parity") or {}
    assert all(p["max_abs_diff"] <= 1e-4 for p in parity.values())
    runtimes = {"onnx": "onnxruntime", "tvm": "tvm"}
    assert {p["runtime"] for p in parity.values()} >= {runtimes[f] for f in formats}, parity


def test_the_cli_verbs_take_a_spec_path(tmp_path, capsys):
    spec, profile = tmp_path / "e2e.yaml", tmp_path / "fast.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    profile.write_text(PROFILE)
    table = tmp_path / "t.json"
    assert cli(["profile", str(profile), "--space", str(spec), "--out", str(table), "--limit", "3",
                "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["measured"] == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SPEC, "stages": [{"block": "lstm", "width": 8}]}))
    assert cli(["profile", str(profile), "--space", str(bad), "--out", str(tmp_path / "u.json"), "--json"]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert "bad.yaml" in error and "stages[0].block" in error
