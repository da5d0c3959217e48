"""Backends: real runtimes measuring real (tiny) models; absent ones say so."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from hwnas.device_profile import DeviceProfile, profile_from_dict
from hwnas.errors import InputError, NotAvailableError
from hwnas.runtime.backends import backend_names, get_backend, random_input
from hwnas.runtime.measure import measure, measure_module

FAST = {"warmup": 2, "min_repeats": 5, "max_repeats": 40, "max_seconds": 0.2, "rel_ci": 0.1, "remeasure": 0}
HAS_CUDA = torch.cuda.is_available()
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def make_profile(backend: str, protocol: dict | None = None, **options) -> DeviceProfile:
    return profile_from_dict({"name": f"test-{backend}", "backend": backend, "options": options,
                              "protocol": {**FAST, **(protocol or {})}})


def tiny_conv(cin: int = 4, cout: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.Hardswish()).eval()


def test_registry_lists_backends_and_rejects_unknown_names():
    assert {"onnxruntime", "torch", "tensorrt"} <= set(backend_names())
    bogus = DeviceProfile(name="x", backend="no-such-backend", path="x.yaml")
    with pytest.raises(InputError, match="unknown backend 'no-such-backend'"):
        get_backend(bogus)


def test_random_input_is_normal_of_the_real_shape_and_never_zero():
    x = random_input((2, 3, 8, 8))
    assert tuple(x.shape) == (2, 3, 8, 8) and x.dtype == torch.float32
    assert torch.count_nonzero(x) == x.numel()
    assert abs(float(x.mean())) < 0.3 and 0.7 < float(x.std()) < 1.3
    with pytest.raises(InputError):
        random_input((1, 0, 4))


def test_onnxruntime_measures_a_real_conv_with_fixed_threads():
    prof = make_profile("onnxruntime", threads=1)
    m = measure_module(prof, tiny_conv(), (4, 8, 8))
    assert m.median_ms > 0 and m.n >= 5
    assert m.settings["intra_op_threads"] == 1 and m.settings["inter_op_threads"] == 1
    assert m.settings["provider"] == "CPUExecutionProvider"
    backend = get_backend(make_profile("onnxruntime", threads=2))
    so = backend.session_options()
    assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == 1


def test_onnxruntime_runner_computes_what_the_module_computes():
    module = tiny_conv()
    backend = get_backend(make_profile("onnxruntime"))
    with backend.prepare(module, (1, 4, 8, 8)) as runner:
        runner.run()
        (out,) = runner.outputs()
    with torch.no_grad():
        expected = module(random_input((1, 4, 8, 8))).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_onnxruntime_a_bigger_conv_measures_slower():
    prof = make_profile("onnxruntime", protocol={"min_repeats": 10})
    small = measure_module(prof, tiny_conv(4, 4), (4, 8, 8))
    big = measure_module(prof, tiny_conv(64, 64), (64, 32, 32))  # ~256x the multiply-adds
    assert big.median_ms > 5 * small.median_ms


def test_torch_cpu_measures_and_restores_the_thread_count():
    torch.set_num_threads(1)
    prof = make_profile("torch", device="cpu", threads=2)
    backend = get_backend(prof)
    with backend.prepare(tiny_conv(), (1, 4, 8, 8)) as runner:
        m = measure(runner, prof.protocol)
    assert m.median_ms > 0 and m.settings["threads"] == 2 and m.settings["device"] == "cpu"
    assert torch.get_num_threads() == 1


def test_torch_fp16_on_cpu_is_refused():
    with pytest.raises(InputError, match="fp16 needs device 'cuda'"):
        get_backend(make_profile("torch", device="cpu", precision="fp16"))


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA GPU")
def test_cuda_profiles_without_a_gpu_are_not_available():
    prof = make_profile("torch", protocol={"timing": "cuda_events"}, device="cuda")
    with pytest.raises(NotAvailableError, match="CUDA GPU"):
        get_backend(prof)


@pytest.mark.skipif(HAS_TRT and HAS_CUDA, reason="tensorrt and a GPU are present")
def test_tensorrt_absent_is_reported():
    with pytest.raises(NotAvailableError, match="tensorrt not installed / no GPU"):
        get_backend(make_profile("tensorrt", protocol={"timing": "cuda_events"}))


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    "mode,precision,timing",
    [("eager", "fp32", "cuda_events"), ("graph", "fp16", "cuda_graph"), ("graph", "fp32", "cuda_events"),
     ("eager", "fp32", "wallclock")],
)
def test_torch_cuda_measures(mode, precision, timing):
    prof = make_profile("torch", protocol={"timing": timing}, device="cuda", mode=mode, precision=precision)
    m = measure_module(prof, tiny_conv(16, 16), (16, 32, 32))
    assert m.median_ms > 0 and m.n >= 5
    assert m.settings["timing"] == timing and m.settings["device"] == "cuda"


@pytest.mark.skipif(not (HAS_TRT and HAS_CUDA), reason="needs the tensorrt package and a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_measures_a_conv(precision):
    prof = make_profile("tensorrt", protocol={"timing": "cuda_events"}, precision=precision)
    m = measure_module(prof, tiny_conv(16, 16), (16, 32, 32))
    assert m.median_ms > 0 and m.settings["timing"] == "cuda_events" and m.settings["precision"] == precision
