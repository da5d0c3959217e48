"""The compiled-library cache: a second compile of the same network, target and records is a cache hit
that runs the same code, and any change in what determines the binary is a miss."""

from __future__ import annotations

import numpy as np
import pytest
import torch.nn as nn

from hwnas.device_profile import profile_from_dict

pytest.importorskip("tvm", reason="apache-tvm is not installed")

QUICK = {"warmup": 1, "min_repeats": 3, "max_repeats": 5, "max_seconds": 0.2, "rounds": 1}


def _backend():
    from hwnas.runtime.backends import get_backend

    return get_backend(profile_from_dict({"name": "tvm-cache-test", "backend": "tvm",
                                          "options": {"target": "llvm", "threads": 1}, "protocol": QUICK}))


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 4)).eval()


def test_a_second_compile_is_a_cache_hit_with_the_same_outputs(tmp_path, monkeypatch):
    from hwnas.runtime import tvm_cache

    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "cache"))
    compiles = []
    import hwnas.runtime.tvm as tvm_module

    real = tvm_module.compile_model

    def spy(*args, **kwargs):
        compiles.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(tvm_module, "compile_model", spy)
    net = _net()
    with _backend().prepare(net, (1, 3, 8, 8)) as first:
        first.input.copyfrom(np.ones((1, 3, 8, 8), np.float32))
        expected = first.outputs()[0]
        assert first.time(3)
    assert len(compiles) == 1
    entries = sorted(p.name for p in (tmp_path / "cache" / "tvm").iterdir())
    assert len(entries) == 2 and entries[0].endswith(".json") and entries[1].endswith(".so")
    with _backend().prepare(net, (1, 3, 8, 8)) as second:  # another backend object: as in a new process
        second.input.copyfrom(np.ones((1, 3, 8, 8), np.float32))
        np.testing.assert_array_equal(second.outputs()[0], expected)
        assert second.settings["target"] == first.settings["target"]
    assert len(compiles) == 1  # nothing compiled: the library came from the cache
    # another input shape is another binary
    with _backend().prepare(net, (1, 3, 10, 10)):
        pass
    assert len(compiles) == 2
    # a key names every input of the binary
    onnx = b"model"
    base = tvm_cache.cache_key(onnx, (1, 3, 8, 8), "llvm -mcpu=x", None)
    assert len({base, tvm_cache.cache_key(onnx + b" ", (1, 3, 8, 8), "llvm -mcpu=x", None),
                tvm_cache.cache_key(onnx, (1, 3, 8, 9), "llvm -mcpu=x", None),
                tvm_cache.cache_key(onnx, (1, 3, 8, 8), "llvm -mcpu=y", None),
                tvm_cache.cache_key(onnx, (1, 3, 8, 8), "llvm -mcpu=x", "ab12")}) == 5


def test_the_cache_can_be_turned_off(tmp_path, monkeypatch):
    from hwnas.runtime import tvm_cache

    monkeypatch.setenv("HWNAS_CACHE_DIR", "off")
    assert tvm_cache.cache_dir() is None
    with _backend().prepare(_net(), (1, 3, 8, 8)) as runner:
        assert runner.time(2)
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path))
    assert tvm_cache.cache_dir() == tmp_path / "tvm"
    assert not (tmp_path / "tvm").exists()
