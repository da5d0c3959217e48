"""TVM: target parsing, aarch64 cross-compilation, the tvm latency backend locally and over a real
RPC server on loopback."""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn as nn

from hwnas.device_profile import profile_from_dict
from hwnas.errors import InputError, NotAvailableError

pytest.importorskip("tvm", reason="apache-tvm is not installed")
torch.set_num_threads(1)

AARCH64 = "llvm -mtriple=aarch64-linux-gnu -mattr=+neon"
QUICK = {"warmup": 2, "min_repeats": 5, "max_repeats": 30, "max_seconds": 0.05, "remeasure": 0}


class TinyMBConv(nn.Module):
    """Expand 1x1, depthwise 3x3, project 1x1 with a residual: the shape of the space's blocks."""

    def __init__(self, c: int = 8, e: int = 3):
        super().__init__()
        h = c * e
        self.body = nn.Sequential(
            nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.Hardswish(),
            nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU(),
            nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c),
        )
        gen = torch.Generator().manual_seed(0)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
        self.eval()

    def forward(self, x):
        return x + self.body(x)


SHAPE = (1, 8, 12, 12)


def test_parse_target_reads_the_command_line_form():
    from hwnas.runtime.tvm import is_cross_target, parse_target

    target = parse_target(AARCH64)
    assert target == {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}
    assert is_cross_target(target) != (platform.machine() == "aarch64")
    assert parse_target('{"kind": "llvm", "num-cores": 2}')["num-cores"] == 2
    with pytest.raises(InputError, match="-key=value"):
        parse_target("llvm mtriple")


def test_cross_compiles_for_aarch64(tmp_path):
    from hwnas.export.onnx import onnx_bytes
    from hwnas.runtime.tvm import compile_model, export_library, import_onnx

    mod = import_onnx(onnx_bytes(TinyMBConv(), SHAPE), SHAPE)
    files = export_library(compile_model(mod, AARCH64), tmp_path / "model")
    # the objects for the device to link are always written, with no cross linker needed here
    assert files.tar and os.path.getsize(files.tar) > 0
    if shutil.which("aarch64-linux-gnu-gcc") is None:
        assert files.so is None and "aarch64-linux-gnu-gcc" in files.notes[0]
        pytest.skip("no aarch64-linux-gnu-gcc here: only the .tar was checked")
    header = open(files.so, "rb").read(20)
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64


def _profile(**options):
    return profile_from_dict({"name": "tvm-test", "backend": "tvm", "options": {"target": "llvm", **options},
                              "protocol": QUICK})


def test_tvm_backend_times_locally_and_matches_torch():
    from hwnas.runtime.backends import get_backend
    from hwnas.runtime.measure import measure

    module = TinyMBConv()
    with get_backend(_profile(threads=1)).prepare(module, SHAPE) as runner:
        m = measure(runner, runner_protocol())
        out = runner.outputs()[0]
        with torch.no_grad():
            ref = module(torch.from_numpy(runner.input.numpy())).numpy()
    assert m.n >= 5 and m.median_ms > 0 and m.p25_ms <= m.median_ms <= m.p75_ms
    assert m.settings["timing"] == "tvm_time_evaluator" and m.settings["device"] == "local"
    assert np.abs(out - ref).max() <= 1e-4


def runner_protocol():
    return _profile().protocol


def test_cross_target_without_rpc_is_not_available_here():
    from hwnas.runtime.backends import get_backend

    if platform.machine() == "aarch64":
        pytest.skip("aarch64 is this machine's own architecture")
    with pytest.raises(NotAvailableError, match="rpc_host"):
        get_backend(_profile(target=AARCH64))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def rpc_server():
    pytest.importorskip("cloudpickle", reason="TVM's RPC server needs cloudpickle")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port),
                             "--port-end", str(port + 1)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own process group: the server's worker goes with it
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("the TVM RPC server did not start")
                time.sleep(0.2)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_rpc_loopback_uploads_and_times_with_time_evaluator(rpc_server):
    from hwnas.runtime.backends import get_backend
    from hwnas.runtime.measure import measure

    module = TinyMBConv()
    backend = get_backend(_profile(threads=1, rpc_host="127.0.0.1", rpc_port=rpc_server))
    with backend.prepare(module, SHAPE) as runner:
        m = measure(runner, runner_protocol())
        out = runner.outputs()[0]
        x = runner.input.numpy()
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    assert m.settings["device"] == f"rpc 127.0.0.1:{rpc_server}" and m.n >= 5 and m.median_ms > 0
    assert np.abs(out - ref).max() <= 1e-4


def test_unreachable_rpc_device_is_an_input_error():
    from hwnas.runtime.tvm import RpcAddress, connect

    with pytest.raises(InputError, match="rpc_server"):
        connect(RpcAddress("127.0.0.1", _free_port()))


@pytest.mark.slow
def test_tuned_library_matches_onnxruntime_or_tuning_is_reported_unavailable(tmp_path):
    from hwnas.export.onnx import onnx_bytes, random_inputs, run_ort
    from hwnas.runtime.tvm import compile_model, export_library, import_onnx, run_library

    pytest.importorskip("psutil", reason="MetaSchedule needs psutil")
    data = onnx_bytes(TinyMBConv(), SHAPE)
    try:
        compiled = compile_model(import_onnx(data, SHAPE), "llvm", tune_trials=4, tune_dir=tmp_path / "tune")
    except NotAvailableError as exc:
        assert "MetaSchedule" in str(exc)
        pytest.skip(f"tuning unavailable here: {exc}")
    files = export_library(compiled, tmp_path / "model")
    xs = random_inputs(SHAPE, 2)
    diff = max(np.abs(a - b).max() for a, b in zip(run_ort(data, xs), run_library(files.so, xs), strict=True))
    # every candidate built and was timed (a build timeout records a failed candidate instead)
    assert compiled.tuning["measured"] == compiled.tuning["records"] > 0
    assert diff <= 1e-4
