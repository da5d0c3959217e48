"""TensorRT backend: an engine built from the module's ONNX export, timed with CUDA events.

`precision: fp16` lets the builder pick fp16 kernels (inputs and outputs stay fp32);
`workspace_mb` caps the builder's scratch memory. Inputs and outputs are torch CUDA
tensors whose addresses are bound to the execution context once; each inference is one
`execute_async_v3` on a dedicated stream, timed between two CUDA events. Where the
`tensorrt` package or a CUDA GPU is absent the backend raises NotAvailableError.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hwnas.device_profile import Option
from hwnas.errors import NotAvailableError
from hwnas.runtime.backends import (
    Backend,
    export_onnx_bytes,
    module_example,
    random_input,
    register_backend,
    require_cuda,
)
from hwnas.runtime.runner import CudaRunner, Runner

_NOT_AVAILABLE = "tensorrt not installed / no GPU"
GRAPH_RUNS = 10


def _import_tensorrt():
    try:
        import tensorrt
    except ImportError as exc:
        raise NotAvailableError(f"{_NOT_AVAILABLE}: the 'tensorrt' package is not installed "
                                "(pip install tensorrt, on a machine with an NVIDIA GPU)") from exc
    return tensorrt


def build_engine(onnx_model: bytes, *, precision: str = "fp16", workspace_mb: int = 1024) -> bytes:
    """Build a serialized TensorRT engine from ONNX bytes (fixed shapes)."""
    trt = _import_tensorrt()
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt, "NetworkDefinitionCreationFlag") and hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        # TensorRT 8 needs explicit batch asked for; in 10 it is the only mode (and the flag is deprecated)
        if int(trt.__version__.split(".")[0]) < 10:
            flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_model):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build an engine for this model")
    return bytes(serialized)


class TensorRTRunner(CudaRunner):
    """A deserialized engine with bound device buffers; one launch is one `execute_async_v3`."""

    def __init__(self, engine_bytes: bytes, example: Any, timing: str, graph_runs: int, settings: dict[str, Any]):
        import torch

        trt = _import_tensorrt()
        self.trt_runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        self.engine = self.trt_runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine")
        self.context = self.engine.create_execution_context()
        self.buffers: dict[str, Any] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = torch.from_numpy(np.empty(0, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))).dtype
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                buf = example.to(device="cuda", dtype=dtype).reshape(shape).contiguous()
            else:
                buf = torch.empty(shape, dtype=dtype, device="cuda")
            self.buffers[name] = buf
            self.context.set_tensor_address(name, buf.data_ptr())
        self.settings = settings
        stream = torch.cuda.Stream()
        super().__init__(self._launch, stream, graph_runs=graph_runs, timing=timing)

    def _launch(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.settings}

    def close(self) -> None:
        super().close()
        self.context = None
        self.engine = None
        self.buffers = {}


@register_backend("tensorrt")
class TensorRTBackend(Backend):
    packages = ("tensorrt", "torch", "onnx")
    options_schema = {
        "precision": Option((str,), ("fp32", "fp16"), "fp16"),
        "workspace_mb": Option((int,), None, 1024),
    }
    cuda_always = True

    def check_available(self) -> None:
        _import_tensorrt()
        try:
            require_cuda("the tensorrt backend")
        except NotAvailableError as exc:
            raise NotAvailableError(f"{_NOT_AVAILABLE}: {exc}") from exc

    def prepare(self, module: Any, input_shape: Sequence[int]) -> Runner:
        return self.prepare_onnx(export_onnx_bytes(module, module_example(module, input_shape)), input_shape)

    def prepare_onnx(self, onnx_model: bytes, input_shape: Sequence[int]) -> Runner:
        precision = self.options.get("precision", "fp16")
        workspace_mb = self.options.get("workspace_mb", 1024)
        engine = build_engine(onnx_model, precision=precision, workspace_mb=workspace_mb)
        timing = "wallclock" if self.profile.protocol.timing == "wallclock" else "cuda_events"
        # timing "cuda_graph": the enqueues are captured into a CUDA graph and its replays timed
        graph_runs = GRAPH_RUNS if self.profile.protocol.timing == "cuda_graph" else 0
        settings = {"precision": precision, "workspace_mb": workspace_mb}
        from hwnas.runtime.backends import onnx_input_dtype

        example = random_input(input_shape, dtype=onnx_input_dtype(onnx_model))
        return TensorRTRunner(engine, example, timing, graph_runs, settings)
