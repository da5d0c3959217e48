"""A compiled model ready to be timed: `Runner`, and the runners for synchronous calls and CUDA work.

A backend's `prepare` returns a Runner; `hwnas.runtime.measure.measure(runner, protocol)` times it.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any


def time_calls(fn: Callable[[], Any], n: int) -> list[float]:
    """Host-clock latency (ms) of `n` calls of a synchronous `fn`, one sample per call."""
    samples = []
    clock = time.perf_counter_ns
    for _ in range(n):
        start = clock()
        fn()
        samples.append((clock() - start) / 1e6)
    return samples


class Runner(ABC):
    """A compiled model bound to an input of its real shape, ready to be timed.

    Subclasses provide `run` (one inference that has finished when it returns); runners
    whose work is asynchronous override `time` to use device-side timing.
    """

    timing: str = "wallclock"

    @abstractmethod
    def run(self) -> None:
        """One inference, finished (synchronised) when this returns."""

    def warmup(self, n: int) -> None:
        for _ in range(n):
            self.run()

    def time(self, n: int) -> list[float]:
        """`n` timed inferences, one latency in milliseconds each."""
        return time_calls(self.run, n)

    def close(self) -> None:
        """Release what `prepare` allocated (sessions, device memory)."""
        return None

    def describe(self) -> dict[str, Any]:
        """Settings that identify how this runner times (recorded with each measurement)."""
        return {"timing": self.timing}

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CallableRunner(Runner):
    """Times any synchronous Python callable (a model already bound to its input, a kernel)."""

    def __init__(self, fn: Callable[[], Any]):
        self.fn = fn

    def run(self) -> None:
        self.fn()


class CudaRunner(Runner):
    """Times asynchronous CUDA work.

    `launch` enqueues one inference on the current stream and returns without waiting; it
    runs on `stream` (a torch.cuda.Stream). With `graph_runs` > 0, `launch` is captured that
    many times into one CUDA graph and each replay counts as `graph_runs` inferences (launch
    overhead amortised, as in a deployment with graphs). timing "cuda_events": a pair of
    device events around each launch or replay; "wallclock": the host clock around a launch
    or replay followed by a stream synchronise.
    """

    def __init__(self, launch: Callable[[], Any], stream: Any, *, graph_runs: int = 0, timing: str = "cuda_events"):
        import torch

        if timing not in ("cuda_events", "wallclock"):
            raise ValueError(f"CudaRunner times with 'cuda_events' or 'wallclock', got {timing!r}")
        self.torch = torch
        self.launch = launch
        self.stream = stream
        self.event_timing = timing
        self.graph_runs = graph_runs
        self.graph = None
        # the module and input were placed by the default stream; work on `stream` must follow it
        stream.wait_stream(torch.cuda.current_stream())
        if graph_runs > 0:
            self._capture()

    @property
    def timing(self) -> str:  # type: ignore[override]
        if self.event_timing == "cuda_events" and self.graph_runs > 1:
            return "cuda_graph"
        return self.event_timing

    def _capture(self) -> None:
        torch = self.torch
        # eager runs on the capture stream first: lazy initialisation (cuDNN, allocator) must not be captured
        with torch.cuda.stream(self.stream):
            for _ in range(3):
                self.launch()
        self.stream.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=self.stream):
            for _ in range(self.graph_runs):
                self.launch()
        self.stream.synchronize()

    def _enqueue(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self.launch()

    def _per_enqueue(self) -> int:
        return max(1, self.graph_runs)

    def run(self) -> None:
        with self.torch.cuda.stream(self.stream):
            self._enqueue()
        self.stream.synchronize()

    def warmup(self, n: int) -> None:
        for _ in range(max(1, math.ceil(n / self._per_enqueue()))):
            self.run()

    def time(self, n: int) -> list[float]:
        per = self._per_enqueue()
        enqueues = max(1, math.ceil(n / per))
        if self.event_timing == "wallclock":
            per_enqueue = Runner.time(self, enqueues)
        else:
            torch = self.torch
            starts = [torch.cuda.Event(enable_timing=True) for _ in range(enqueues)]
            ends = [torch.cuda.Event(enable_timing=True) for _ in range(enqueues)]
            with torch.cuda.stream(self.stream):
                for start, end in zip(starts, ends, strict=True):
                    start.record(self.stream)
                    self._enqueue()
                    end.record(self.stream)
            self.stream.synchronize()
            per_enqueue = [s.elapsed_time(e) for s, e in zip(starts, ends, strict=True)]
        # one sample per inference, so sample counts mean the same for every timing method
        return [ms / per for ms in per_enqueue for _ in range(per)][:n]

    def describe(self) -> dict[str, Any]:
        return {"timing": self.timing, "device": "cuda", "graph_runs": self.graph_runs}

    def close(self) -> None:
        self.graph = None
