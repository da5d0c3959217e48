"""The deployable bundle used without hwnas: its input / output contract, predict.py in an
interpreter where hwnas cannot be imported, and the test accuracy its manifest states."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is needed to run the bundle")

TINY = {"width_mult": 0.25, "resolutions": [12, 16]}
HAS_TVM = True
try:
    import tvm  # noqa: F401
except ImportError:
    HAS_TVM = False


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small supernet trained for one epoch on part of the shipped subset, and one subnet's bundle."""
    from hwnas.export.bundle import export_selection
    from hwnas.export.source import Selection
    from hwnas.space import get_space
    from hwnas.train import TrainSettings, train

    root = tmp_path_factory.mktemp("bundle")
    settings = TrainSettings(space="mbv3-small-input", space_options=TINY, epochs=1, batch_size=64, val_size=300,
                             recal_batches=2, recal_batch_size=64, eval_batch_size=256, limit_train=4096, lr=0.4,
                             warmup_epochs=0.1,
                             num_random=1, seed=0)
    torch.manual_seed(0)
    train(settings, out=root / "supernet.pt", progress=False)
    space = get_space("mbv3-small-input", **TINY)
    arch = space.largest()
    selection = Selection(arch=arch, space_name="mbv3-small-input", space_options=TINY,
                          supernet=str(root / "supernet.pt"))
    formats = "onnx,tvm" if HAS_TVM else "onnx"
    export_selection(selection, root / "bundle", formats=formats, measure_latency=False, progress=False)
    return root, arch


@pytest.fixture(scope="module")
def test_pngs(trained):
    """The shipped subset's 2,000 test images as PNG files (what a user would have), and their labels."""
    from PIL import Image

    from hwnas.data.datasets import load_fmnist_subset

    data = load_fmnist_subset()
    folder = trained[0] / "images"
    folder.mkdir()
    paths = []
    for i, x in enumerate(data.test_x.numpy()):
        path = folder / f"{i:04d}.png"
        Image.fromarray(x[0]).save(path)
        paths.append(str(path))
    return paths, data.test_y.numpy()


def _isolated_site(tmp: Path) -> Path:
    """A folder holding only onnxruntime, numpy and Pillow (links into this interpreter's site-packages)."""
    import numpy
    import onnxruntime
    import PIL

    site = tmp / "site"
    site.mkdir(exist_ok=True)
    for module in (onnxruntime, numpy, PIL):
        pkg = Path(module.__file__).parent
        for path in [pkg, *pkg.parent.glob(f"{pkg.name.lower()}.libs"), *pkg.parent.glob("pillow.libs")]:
            if not (site / path.name).exists():
                (site / path.name).symlink_to(path)
    return site


def _run_isolated(site: Path, script: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`python -I -S` (no site-packages, no environment, no current folder on the path) with only `site`."""
    boot = ("import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); script = sys.argv[1]; sys.argv = sys.argv[1:]; "
            "runpy.run_path(script, run_name='__main__')")
    return subprocess.run([sys.executable, "-I", "-S", "-c", boot, str(site), str(script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def _parse(stdout: str) -> dict[str, tuple[int, str, float]]:
    rows = {}
    for line in stdout.splitlines():
        path, index, name, score = line.split("\t")
        rows[path] = (int(index), name, float(score))
    return rows


def test_predict_script_without_hwnas_reproduces_the_manifest_test_accuracy(trained, test_pngs, tmp_path):
    root, _ = trained
    paths, labels = test_pngs
    deploy = tmp_path / "elsewhere"
    shutil.copytree(root / "bundle", deploy)
    site = _isolated_site(tmp_path)
    probe = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); import hwnas"],
        capture_output=True, text=True, cwd=deploy)
    assert probe.returncode != 0 and "No module named 'hwnas'" in probe.stderr

    result = _run_isolated(site, deploy / "predict.py", paths, deploy)
    assert result.returncode == 0, result.stderr
    rows = _parse(result.stdout)
    assert list(rows) == paths  # one line per image, in order, the path as given
    predicted = np.array([rows[p][0] for p in paths])
    accuracy = 100.0 * float((predicted == labels).mean())

    manifest = json.loads((deploy / "manifest.json").read_text())
    test = manifest["accuracy"]["test"]
    assert test["split"] == "test" and test["images"] == len(paths) and test["stderr"] > 0
    assert abs(accuracy - test["percent"]) <= 0.5
    assert accuracy > 30.0  # a trained network, far above the 10 % of chance
    names = manifest["output"]["class_names"]
    assert names[0] == "T-shirt/top" and all(rows[p][1] == names[rows[p][0]] for p in paths)
    assert all(0.0 < rows[p][2] <= 1.0 for p in paths)


def test_the_manifest_contract_alone_gives_predict_scripts_answers(trained, test_pngs, tmp_path):
    """A deployment written from the manifest's words (not hwnas code) agrees with predict.py."""
    import onnxruntime as ort
    from PIL import Image

    root, _ = trained
    paths = test_pngs[0][:300]
    bundle = root / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    contract = manifest["input"]
    assert contract["dtype"] == "uint8" and contract["layout"] == "NCHW" and contract["colour_mode"] == "L"
    assert contract["size"] == {"height": 28, "width": 28} and contract["value_range"] == [0, 255]
    steps = {s["op"]: s for s in contract["inside_graph"]}
    assert steps["resize"]["to"] == [16, 16] and steps["resize"]["method"] == "bilinear"
    assert steps["standardise"]["mean"][0] == pytest.approx(0.286, abs=0.01)
    assert manifest["output"]["kind"] == "logits" and manifest["output"]["num_classes"] == 10

    session = ort.InferenceSession(str(bundle / manifest["files"]["onnx"]["path"]), providers=["CPUExecutionProvider"])
    (h, w), mode = (contract["size"]["height"], contract["size"]["width"]), contract["colour_mode"]
    mine = []
    for path in paths:
        with Image.open(path) as im:
            x = np.asarray(im.convert(mode).resize((w, h)), dtype=np.uint8)[None, None]
        mine.append(int(session.run(None, {contract["name"]: x})[0].argmax()))
    result = subprocess.run([sys.executable, str(bundle / "predict.py"), *paths], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert [v[0] for v in _parse(result.stdout).values()] == mine


def test_exported_artifacts_match_the_torch_subnet_on_raw_images(trained):
    from hwnas.data.datasets import load_fmnist_subset
    from hwnas.export.onnx import run_ort
    from hwnas.export.preprocess import InputContract, RawImageModel
    from hwnas.export.source import trained_subnet

    root, arch = trained
    bundle = root / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    sub = trained_subnet(root / "supernet.pt", arch)
    model = RawImageModel(sub.module, InputContract.from_dataset(sub.data, arch["r"])).eval()
    images = [np.ascontiguousarray(x[None]) for x in load_fmnist_subset().test_x.numpy()[:16]]
    with torch.no_grad():
        reference = [model(torch.from_numpy(x)).numpy() for x in images]
    assert np.abs(reference[0] - reference[1]).max() > 1e-2  # the images make a difference
    onnx_out = run_ort(bundle / "model.onnx", images)
    assert max(np.abs(a - b).max() for a, b in zip(onnx_out, reference, strict=True)) <= 1e-4
    assert manifest["parity"]["onnxruntime_vs_torch"]["max_abs_diff"] <= 1e-4
    assert manifest["parity"]["onnxruntime_vs_torch"]["inputs"] >= 7  # 3 random and 4 real images
    if HAS_TVM:
        from hwnas.runtime.tvm import run_library

        tvm_out = run_library(bundle / "model.so", images)
        assert max(np.abs(a - b).max() for a, b in zip(tvm_out, reference, strict=True)) <= 1e-4
        assert manifest["parity"]["tvm_vs_torch"]["max_abs_diff"] <= 1e-4


def test_manifest_accuracy_figures_name_their_split_and_size(trained):
    manifest = json.loads((trained[0] / "bundle" / "manifest.json").read_text())
    estimate, test = manifest["accuracy"]["estimate"], manifest["accuracy"]["test"]
    assert estimate["split"] == "val" and estimate["images"] == 300
    assert estimate["stderr"] == pytest.approx(100 * np.sqrt(estimate["percent"] / 100 *
                                                             (1 - estimate["percent"] / 100) / 300), abs=1e-3)
    assert test["split"] == "test" and test["images"] == 2000 and test["dataset"] == "fmnist-subset"
    assert "output_shapes" in manifest["parity"]["onnxruntime_vs_torch"]
    assert manifest["files"]["predict"]["path"] == "predict.py"


@pytest.mark.skipif(not HAS_TVM, reason="apache-tvm is not installed")
def test_predict_script_runs_the_tvm_library_with_the_same_answers(trained, test_pngs):
    bundle = trained[0] / "bundle"
    paths = test_pngs[0][:50]
    runs = [subprocess.run([sys.executable, str(bundle / "predict.py"), *flag, "--top-k", "3", *paths],
                           capture_output=True, text=True, timeout=300) for flag in ([], ["--tvm"])]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    onnx_lines, tvm_lines = (r.stdout.splitlines() for r in runs)
    assert len(onnx_lines) == 50
    for a, b in zip(onnx_lines, tvm_lines, strict=True):
        fa, fb = a.split("\t"), b.split("\t")
        assert len(fa) == 1 + 3 * 3 and fa[1::3] == fb[1::3]  # the same top-3 classes in the same order
        assert np.allclose([float(v) for v in fa[3::3]], [float(v) for v in fb[3::3]], atol=1e-4)


def test_predict_script_reports_an_unreadable_image_and_classifies_the_rest(trained, test_pngs, tmp_path):
    bundle = trained[0] / "bundle"
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"this is text")
    colour = tmp_path / "photo.jpg"  # an RGB photo of another size: converted and resized by the contract
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 60, 3), dtype=np.uint8)).save(colour)
    good = test_pngs[0][0]
    result = subprocess.run([sys.executable, str(bundle / "predict.py"), good, str(bad), str(colour)],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 2
    assert str(bad) in result.stderr and "cannot read" in result.stderr and "Traceback" not in result.stderr
    assert list(_parse(result.stdout)) == [good, str(colour)]


def test_demo_report_names_the_split_of_every_accuracy(trained, tmp_path):
    from hwnas.demo import _summary, _write_report

    bundle = trained[0] / "bundle"
    steps = {"search": {"best_under_budget": {"objectives": {"accuracy": 61.0}}},
             "export": {"predicted_ms": 0.1, "measured_ms": 0.12, "files": {}},
             "train": {"acc_largest": 70.0, "acc_smallest": 60.0},
             "extremes": {name: {"macs": 1, "val": {"percent": p, "stderr": 1.5, "split": "val", "images": 300},
                                 "test": {"percent": p - 1, "stderr": 1.0, "split": "test", "images": 2000}}
                          for name, p in (("largest", 72.0), ("smallest", 58.0))},
             "validate": {"n": 10, "within_10pct": 0.9, "kendall_tau": 0.9, "mape": 5.0}}
    summary = _summary(steps, 0.15, bundle)
    assert summary["accuracy_estimate_split"].startswith("val, 300 images, standard error")
    assert summary["accuracy_test_split"].startswith("test, 2000 images, standard error")
    report = _write_report(tmp_path, steps, summary, 1.0).read_text()
    assert "used by the search (val, 300 images" in report and "model.onnx (test, 2000 images" in report
    # one table, a column per split: the exported subnet's val estimate sits beside the extremes' val figures
    section = report.split("## Accuracy by split")[1].split("\n## ")[0]
    table = [line for line in section.splitlines() if line.startswith("| ")][1:]  # rows, header left out
    assert report.count("| subnet | val (search's estimate) | test |") == 1
    assert [row.split("|")[1].strip() for row in table] == ["exported (best under the budget)", "largest subnet",
                                                           "smallest subnet"]
    assert "| 72 ± 1.5 % (300 images) | 71 ± 1 % (2000 images)" in table[1]
    estimate = summary["estimate"]  # the bundle's record of the search's estimate, with its split and size
    assert estimate["split"] == "val" and estimate["images"] == 300
    assert table[0].split("|")[2].strip().startswith(f"{estimate['percent']:.4g} ± {estimate['stderr']:.2g} %")
    assert "(2000 images), the bundle's model.onnx" in table[0]
    agreement = summary["estimate_vs_test"]
    # the stated uncertainty is the 95 % interval: 1.96 combined standard errors
    assert agreement["interval95"] == pytest.approx(1.96 * agreement["stderr"], abs=1e-3)
    assert agreement["within"] == (abs(agreement["difference"]) <= agreement["interval95"])
    assert agreement["within_1se"] == (abs(agreement["difference"]) <= agreement["stderr"])
    assert ("within the 95 % interval" in report) == agreement["within"]


@pytest.mark.skipif(not HAS_TVM, reason="apache-tvm is not installed")
def test_the_tvm_runner_times_the_library_on_raw_images(trained):
    """Latency measurement feeds a uint8 library uint8 images (the dtype read off the Relax module)."""
    from hwnas.device_profile import profile_from_dict
    from hwnas.runtime.backends import get_backend
    from hwnas.runtime.tvm import compile_model, import_onnx

    bundle = trained[0] / "bundle"
    compiled = compile_model(import_onnx(bundle / "model.onnx", [1, 1, 28, 28]), "llvm")
    assert compiled.input_dtype == "uint8"
    profile = profile_from_dict({"name": "t-tvm", "backend": "tvm", "options": {"target": "llvm", "threads": 1}})
    with get_backend(profile).prepare_compiled(compiled, [1, 1, 28, 28]) as runner:
        runner.run()
        assert runner.outputs()[0].shape == (1, 10)
