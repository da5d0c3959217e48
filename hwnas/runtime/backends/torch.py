"""PyTorch backend: eager on the CPU; eager or CUDA graphs on a CUDA GPU; fp32 or fp16.

CPU: `torch.set_num_threads(threads)` for the duration of each timed call, synchronous
runs under `inference_mode`, timed by the host clock. CUDA: the module and input live on
the GPU; runs are enqueued on a dedicated stream and timed with CUDA events (timing
"cuda_events"), or captured several at a time into a CUDA graph whose replays are timed
with events (mode "graph", timing "cuda_graph").
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from hwnas.device_profile import THREADS, Option
from hwnas.errors import InputError
from hwnas.runtime.backends import Backend, module_example, register_backend, require_cuda
from hwnas.runtime.runner import CudaRunner, Runner
from hwnas.runtime.runner import time_calls as _time_calls

GRAPH_RUNS = 10  # inferences captured in one CUDA graph when timing "cuda_graph"


class TorchCpuRunner(Runner):
    timing = "wallclock"

    def __init__(self, module: Any, example: Any, threads: int, precision: str):
        import torch

        self.torch = torch
        self.module = module
        self.example = example
        self.threads = threads
        self.precision = precision

    def _with_threads(self, fn):
        previous = self.torch.get_num_threads()
        self.torch.set_num_threads(self.threads)
        try:
            with self.torch.inference_mode():
                return fn()
        finally:
            self.torch.set_num_threads(previous)

    def _forward(self) -> None:
        self.module(self.example)

    def run(self) -> None:
        self._with_threads(self._forward)

    def warmup(self, n: int) -> None:
        self._with_threads(lambda: [self._forward() for _ in range(n)])

    def time(self, n: int) -> list[float]:
        # the thread setting and inference mode are entered once, outside the timed region
        return self._with_threads(lambda: _time_calls(self._forward, n))

    def describe(self) -> dict[str, Any]:
        return {"timing": self.timing, "device": "cpu", "threads": self.threads, "precision": self.precision}


@register_backend("torch")
class TorchBackend(Backend):
    packages = ("torch",)
    options_schema = {
        "device": Option((str,), ("cpu", "cuda"), "cpu"),
        "mode": Option((str,), ("eager", "graph"), "eager"),
        "precision": Option((str,), ("fp32", "fp16"), "fp32"),
        "threads": THREADS,
    }

    @classmethod
    def check_settings(cls, options: dict[str, Any], protocol: Any) -> tuple[str, str] | None:
        if options["device"] == "cpu" and options["mode"] == "graph":
            return "options.mode", "CUDA-graph mode needs options.device: cuda"
        return super().check_settings(options, protocol)

    def check_available(self) -> None:
        device = self.options.get("device", "cpu")
        if device == "cuda":
            require_cuda("the torch backend with device 'cuda'")
        elif self.options.get("precision", "fp32") != "fp32":
            raise InputError("fp16 needs device 'cuda'; the CPU path measures fp32", path=self.profile.path,
                             field="options.precision")

    def prepare(self, module: Any, input_shape: Sequence[int]) -> Runner:
        import torch

        device = self.options.get("device", "cpu")
        precision = self.options.get("precision", "fp32")
        example = module_example(module, input_shape)
        if device == "cpu":
            return TorchCpuRunner(module.eval(), example, self.profile.threads(), precision)

        # a copy: moving to the GPU and casting must not change the caller's module
        module = copy.deepcopy(module).eval()

        dtype = torch.float16 if precision == "fp16" else torch.float32
        module = module.to(device="cuda", dtype=dtype)
        # raw uint8 images stay uint8: a model with its preprocessing inside casts them itself
        example = example.to(device="cuda", dtype=dtype if example.is_floating_point() else example.dtype)
        timing = self.profile.protocol.timing
        mode = self.options.get("mode", "eager")
        if mode == "eager" and timing == "cuda_graph":
            raise InputError("timing 'cuda_graph' needs options.mode: graph", path=self.profile.path,
                             field="protocol.timing")
        stream = torch.cuda.Stream()
        # the input tensor stays put: a captured graph reads fixed addresses
        outputs: list[Any] = [None]

        def launch() -> None:
            with torch.inference_mode():
                outputs[0] = module(example)

        graph_runs = 0 if mode == "eager" else (GRAPH_RUNS if timing == "cuda_graph" else 1)
        event_timing = "wallclock" if timing == "wallclock" else "cuda_events"
        return CudaRunner(launch, stream, graph_runs=graph_runs, timing=event_timing)
