"""ONNX Runtime backend: the module is exported to ONNX (opset 17) and run by an InferenceSession.

Threads are fixed: `intra_op_num_threads` = the profile's threads, one inter-op thread,
sequential execution. The input is bound once (I/O binding) so a timed run is the session
run alone; `Run` returns when the outputs are ready, so the host clock around it is honest
for the CPU and the CUDA execution providers alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hwnas.device_profile import THREADS, Option
from hwnas.errors import NotAvailableError
from hwnas.runtime.backends import Backend, export_onnx_bytes, module_example, random_input, register_backend
from hwnas.runtime.runner import Runner

_GRAPH_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                 "all": "ORT_ENABLE_ALL"}


class OrtRunner(Runner):
    timing = "wallclock"

    def __init__(self, session: Any, input_array: Any, device: str, settings: dict[str, Any]):
        import onnxruntime as ort

        self.session = session
        self.binding = session.io_binding()
        self.input_value = ort.OrtValue.ortvalue_from_numpy(input_array, device, 0)
        self.binding.bind_ortvalue_input(session.get_inputs()[0].name, self.input_value)
        for out in session.get_outputs():
            self.binding.bind_output(out.name, device)
        self.settings = settings

    def run(self) -> None:
        self.session.run_with_iobinding(self.binding)

    def outputs(self) -> list[Any]:
        """The outputs of the last run, as numpy arrays."""
        return self.binding.copy_outputs_to_cpu()

    def describe(self) -> dict[str, Any]:
        return {"timing": self.timing, **self.settings}

    def close(self) -> None:
        self.binding = None
        self.session = None


@register_backend("onnxruntime")
class OnnxRuntimeBackend(Backend):
    packages = ("onnxruntime", "onnxruntime-gpu", "onnx", "torch")
    options_schema = {
        "threads": THREADS,
        "execution_provider": Option((str,), ("CPUExecutionProvider", "CUDAExecutionProvider"),
                                     "CPUExecutionProvider"),
        "graph_optimization": Option((str,), ("disable", "basic", "extended", "all"), "all"),
        "precision": Option((str,), ("fp32",), "fp32"),
    }

    def check_available(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise NotAvailableError("onnxruntime is not installed (pip install onnxruntime)") from exc
        provider = self.options.get("execution_provider", "CPUExecutionProvider")
        if provider not in ort.get_available_providers():
            raise NotAvailableError(
                f"execution provider {provider} is not available in this onnxruntime "
                f"(available: {', '.join(ort.get_available_providers())})"
            )

    def session_options(self) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.profile.threads()
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        level = _GRAPH_LEVELS[self.options.get("graph_optimization", "all")]
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        so.log_severity_level = 3  # errors only: warnings would interleave with the progress bar
        return so

    def session(self, onnx_model: bytes) -> Any:
        """An InferenceSession for serialized ONNX, with this profile's threads and provider."""
        import onnxruntime as ort

        provider = self.options.get("execution_provider", "CPUExecutionProvider")
        return ort.InferenceSession(onnx_model, self.session_options(), providers=[provider])

    def prepare(self, module: Any, input_shape: Sequence[int]) -> OrtRunner:
        return self.prepare_onnx(export_onnx_bytes(module, module_example(module, input_shape)), input_shape)

    def prepare_onnx(self, onnx_model: bytes, input_shape: Sequence[int]) -> OrtRunner:
        """A runner for an already exported ONNX model (e.g. an exported bundle's model.onnx)."""
        session = self.session(onnx_model)
        provider = self.options.get("execution_provider", "CPUExecutionProvider")
        device = "cuda" if provider == "CUDAExecutionProvider" else "cpu"
        settings = {
            "provider": provider,
            "intra_op_threads": self.profile.threads(),
            "inter_op_threads": 1,
            "graph_optimization": self.options.get("graph_optimization", "all"),
        }
        dtype = "uint8" if session.get_inputs()[0].type == "tensor(uint8)" else "float32"
        return OrtRunner(session, random_input(input_shape, dtype=dtype).numpy(), device, settings)
