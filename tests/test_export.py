"""Bundle export: ONNX and TVM parity, the manifest, the CLI, and failures that leave nothing behind."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from hwnas.cli import main
from hwnas.errors import InputError
from hwnas.runtime.measure import rounds_settled

pytest.importorskip("onnxruntime", reason="onnxruntime is needed for ONNX parity")
torch.set_num_threads(1)

FAST_PROFILE = """\
name: test-ort-fast
backend: onnxruntime
options: {threads: 1}
protocol: {warmup: 2, min_repeats: 5, max_repeats: 20, max_seconds: 0.05, remeasure: 0}
"""


def _subnet():
    """The smallest subnet with BatchNorm statistics estimated on random inputs (non-trivial ones to fold)."""
    from hwnas.export.source import untrained_subnet
    from hwnas.space import get_space

    space = get_space("mbv3-small-input")
    arch = space.smallest()
    return space, arch, untrained_subnet(space, arch)


def test_subnet_exports_to_onnx_and_tvm_with_parity(tmp_path):
    from hwnas.export import export

    pytest.importorskip("tvm", reason="apache-tvm is not installed")
    space, arch, module = _subnet()
    result = export(module, space.input_shape(arch), tmp_path / "bundle", formats="onnx,tvm", arch=arch,
                    space=space.config(), measure_latency=False, progress=False)
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert set(result.files) == {"onnx", "tvm_so", "predict", "manifest"}
    assert manifest["arch"] == arch and manifest["space"]["name"] == "mbv3-small-input"
    onnx_info = manifest["formats"]["onnx"]
    assert onnx_info["bn_folded"] and "BatchNormalization" not in onnx_info["op_counts"]
    for name in ("onnxruntime_vs_torch", "tvm_vs_torch"):
        assert manifest["parity"][name]["passed"] and manifest["parity"][name]["max_abs_diff"] <= 1e-4
    for entry in manifest["files"].values():
        data = (tmp_path / "bundle" / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]

    # the library runs here and reproduces torch on fresh raw images that make a difference to the output;
    # without training data the contract is images at the network's resolution, scaled to [0, 1] only
    from hwnas.export.onnx import random_inputs
    from hwnas.runtime.tvm import run_library

    assert manifest["input"]["dtype"] == "uint8" and manifest["input"]["inside_graph"][1]["mean"] == [0.0]
    xs = random_inputs([1, *space.input_shape(arch)], 2, seed=7, dtype="uint8")
    tvm_out = run_library(tmp_path / "bundle" / "model.so", xs)
    with torch.no_grad():
        torch_out = [module(torch.from_numpy(x).float() / 255.0).numpy() for x in xs]
    assert np.abs(torch_out[0] - torch_out[1]).max() > 1e-3
    assert max(np.abs(a - b).max() for a, b in zip(tvm_out, torch_out, strict=True)) <= 1e-4


def test_dynamic_batch_onnx_runs_at_other_batch_sizes(tmp_path):
    from hwnas.export.onnx import export_onnx, random_inputs, run_ort

    space, arch, module = _subnet()
    info = export_onnx(module, [1, *space.input_shape(arch)], tmp_path / "m.onnx", dynamic_batch=True)
    assert info.parity.inputs == 4 and info.parity.output_shapes[-1][0] == 3
    out = run_ort(tmp_path / "m.onnx", random_inputs([5, *space.input_shape(arch)], 1))
    assert out[0].shape == (5, space.num_classes)


class _Unexportable(nn.Module):
    def forward(self, x):
        return torch.linalg.svd(x)[1]


def test_failure_leaves_no_partial_bundle_and_keeps_the_old_one(tmp_path):
    from hwnas.export import export

    space, arch, module = _subnet()
    out = tmp_path / "bundle"
    export(module, space.input_shape(arch), out, formats="onnx", measure_latency=False, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(InputError, match="opset 17"):
        export(_Unexportable(), (1, 4, 4), out, formats="onnx", measure_latency=False, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(InputError):
        export(_Unexportable(), (1, 4, 4), tmp_path / "new", formats="onnx", measure_latency=False, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_refuses_to_overwrite_a_folder_that_is_not_a_bundle(tmp_path):
    from hwnas.export import export

    (tmp_path / "notes.txt").write_text("mine")
    space, arch, module = _subnet()
    with pytest.raises(InputError, match="no bundle"):
        export(module, space.input_shape(arch), tmp_path, formats="onnx", measure_latency=False, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def _pareto(tmp_path: Path) -> Path:
    from hwnas.space import get_space

    space = get_space("mbv3-small-input")
    archs = [space.smallest(), space.sample(np.random.default_rng(3))]
    entries = [{"arch": a, "objectives": {"accuracy": 70.0 + i, "latency_ms": 1.0 + i},
                "constraints": {"latency_ms": 1.0 + i}, "feasible": True} for i, a in enumerate(archs)]
    run = tmp_path / "run" / "pareto.json"
    run.parent.mkdir()
    run.write_text(json.dumps({"space": "mbv3-small-input", "space_options": {}, "supernet": None,
                               "table": None, "budget_ms": 1.5, "pareto": entries,
                               "best_under_budget": entries[0]}))
    return run


def test_cli_exports_the_best_subnet_under_budget_with_measured_latency(tmp_path, capsys):
    run = _pareto(tmp_path)
    profile = tmp_path / "fast.yaml"
    profile.write_text(FAST_PROFILE)
    rc = main(["export", str(run), "--pick", "best-under-budget", "--format", "onnx", "--untrained",
               "--profile", str(profile), "--out", str(tmp_path / "D"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, out
    assert {"files", "max_abs_diff", "predicted_ms", "measured_ms"} <= set(out)
    assert out["predicted_ms"] == 1.0 and out["max_abs_diff"] <= 1e-4 and out["measured_ms"] > 0
    manifest = json.loads((tmp_path / "D" / "manifest.json").read_text())
    assert manifest["accuracy"]["estimate"]["percent"] == 70.0 and manifest["accuracy"]["test"] is None
    assert manifest["latency"]["profile"] == "test-ort-fast"
    ort = manifest["latency"]["measured"]["onnxruntime"]
    assert ort["n"] >= 5 and ort["median_ms"] == min(ort["round_medians_ms"])
    # settled: the two lowest rounds agree; otherwise the bundle says so in its notes
    assert ort["settled"] == rounds_settled(ort["round_medians_ms"])
    assert ort["settled"] or any("unsettled" in n for n in manifest["notes"])
    # measured_ms is the network alone (what the table predicts); the bundle's model.onnx, preprocessing
    # included, is timed beside it
    latency = manifest["latency"]
    assert latency["measured_ms"] == latency["measured"]["onnxruntime_network"]["median_ms"] == out["measured_ms"]
    assert latency["artifact_ms"]["onnxruntime"] == ort["median_ms"]
    assert manifest["source"]["pick"] == "best-under-budget" and manifest["source"]["weights"]["trained"] is False


@pytest.mark.parametrize("pick,match", [("7", "outside the Pareto set"), ("fastest", "best-under-budget")])
def test_cli_bad_pick_exits_2(tmp_path, capsys, pick, match):
    rc = main(["export", str(_pareto(tmp_path)), "--pick", pick, "--untrained", "--out", str(tmp_path / "D"),
               "--json"])
    assert rc == 2 and match in json.loads(capsys.readouterr().out)["error"]
    assert not (tmp_path / "D").exists()


def test_cli_without_weights_says_how_to_get_them(tmp_path, capsys):
    rc = main(["export", str(_pareto(tmp_path)), "--pick", "0", "--format", "onnx", "--out", str(tmp_path / "D"),
               "--json"])
    assert rc == 2 and "--supernet" in json.loads(capsys.readouterr().out)["error"]


def test_requested_tensorrt_without_it_exits_2_and_writes_nothing(tmp_path, capsys):
    try:
        from hwnas.export.tensorrt import check_available

        check_available()
        pytest.skip("tensorrt and a CUDA GPU are present here: the engine would be built")
    except InputError:
        pass
    from hwnas.space import get_space

    arch = get_space("mbv3-small-input").smallest()
    rc = main(["export", "--arch", json.dumps(arch), "--space", "mbv3-small-input", "--untrained",
               "--format", "onnx,tensorrt", "--out", str(tmp_path / "D"), "--json"])
    err = json.loads(capsys.readouterr().out)["error"]
    assert rc == 2 and "tensorrt" in err.lower()
    assert list(tmp_path.iterdir()) == []


def test_a_prediction_off_by_more_than_ten_percent_is_noted():
    from hwnas.export.bundle import prediction_miss

    assert prediction_miss(1.0, 1.05) is None and prediction_miss(1.0, 0.91) is None
    assert prediction_miss(None, 1.0) is None and prediction_miss(1.0, None) is None
    note = prediction_miss(0.172, 0.086)
    assert note is not None and "-50 %" in note and "predicted 0.172 ms" in note
    assert "+69 %" in prediction_miss(1.0, 1.69)
