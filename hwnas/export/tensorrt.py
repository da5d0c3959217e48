"""TensorRT engine from the exported ONNX model (fp32 or fp16), where tensorrt and a CUDA GPU exist.

Elsewhere every entry point raises NotAvailableError (the CLI exits 2 when the tensorrt
format was asked for). The engine is built for the fixed input shape of the bundle; its
output is compared with ONNX Runtime's on the same random input (fp16 engines get a looser
tolerance, relative to the output's magnitude).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.export.onnx import ParityCheck, compare_outputs, random_inputs, run_ort

# fp16 keeps ~3 significant digits: the tolerance scales with the largest output magnitude
FP16_REL_TOLERANCE = 2e-2
FP32_TOLERANCE = 1e-3  # TensorRT may pick TF32 / reordered reductions even in fp32


@dataclass
class EngineExport:
    path: str
    precision: str
    workspace_mb: int
    input_shape: list[int]
    parity: ParityCheck
    tensorrt_version: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["parity"] = self.parity.to_dict()
        return d


def check_available() -> None:
    """NotAvailableError unless the tensorrt package and a CUDA GPU are both present."""
    from hwnas.errors import NotAvailableError
    from hwnas.runtime.backends import require_cuda
    from hwnas.runtime.backends.tensorrt import _NOT_AVAILABLE, _import_tensorrt

    _import_tensorrt()
    try:
        require_cuda("a TensorRT engine")
    except NotAvailableError as exc:
        raise NotAvailableError(f"{_NOT_AVAILABLE}: {exc}") from exc


def export_engine(onnx_model: bytes, input_shape: Sequence[int], path: str | os.PathLike, *,
                  precision: str = "fp16", workspace_mb: int = 1024) -> EngineExport:
    """Build a serialized engine from ONNX bytes (fixed shape), check it against ONNX Runtime, write it."""
    import torch

    from hwnas.runtime.backends.tensorrt import TensorRTRunner, _import_tensorrt, build_engine

    check_available()
    trt = _import_tensorrt()
    if precision not in ("fp16", "fp32"):
        from hwnas.errors import InputError

        raise InputError(f"expected fp16 or fp32, got {precision!r}", field="precision")
    engine = build_engine(onnx_model, precision=precision, workspace_mb=workspace_mb)
    from hwnas.export.onnx import onnx_input_dtype

    x = random_inputs(input_shape, 1, dtype=onnx_input_dtype(onnx_model))[0]
    runner = TensorRTRunner(engine, torch.from_numpy(x), "cuda_events", 0, {"precision": precision})
    try:
        runner.run()
        outputs = [b for name, b in runner.buffers.items()
                   if runner.engine.get_tensor_mode(name) != trt.TensorIOMode.INPUT]
        got = [outputs[0].float().cpu().numpy()]
    finally:
        runner.close()
    reference = run_ort(onnx_model, [x])
    scale = float(np.max(np.abs(reference[0]))) or 1.0
    tolerance = FP16_REL_TOLERANCE * scale if precision == "fp16" else FP32_TOLERANCE
    parity = compare_outputs(reference, got, reference_name="onnxruntime", runtime=f"tensorrt-{precision}",
                             tolerance=tolerance)
    if not parity.passed:
        raise RuntimeError(f"TensorRT ({precision}) output differs from ONNX Runtime by {parity.max_abs_diff:.3g} "
                           f"(> {tolerance:.3g})")
    path = Path(path)
    path.write_bytes(engine)
    return EngineExport(path=str(path), precision=precision, workspace_mb=workspace_mb,
                        input_shape=[int(d) for d in input_shape], parity=parity, tensorrt_version=trt.__version__)
