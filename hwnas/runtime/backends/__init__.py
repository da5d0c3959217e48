"""Latency backends, looked up by the profile's `backend` name: `get_backend(profile)`.

A backend compiles once and is then timed: `backend.prepare(module, input_shape)` turns a
torch module and the input shape *with* batch into a `Runner` (an ONNX Runtime session, a
TensorRT engine, a TVM library, a torch module on its device) bound to a random-normal
input of that shape; `hwnas.runtime.measure.measure(runner, protocol)` times it. Per-op
profiling and end-to-end measurement of a whole subnet go through this same path.

A new backend is one file in this folder named after the backend, whose class is
decorated with `@register_backend("<name>")` and declares `options_schema` (what a profile may
set); it is imported when a profile names it. A plugin package adds one through the entry-point
group `hwnas.backends` (see `hwnas.registry`).
Packages a backend needs are imported inside it, so an absent one raises
NotAvailableError only when that backend is asked for.
"""

from __future__ import annotations

import io
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

from hwnas.device_profile import DeviceProfile, MeasurementProtocol, Option
from hwnas.errors import InputError, NotAvailableError
from hwnas.registry import BACKENDS
from hwnas.runtime.runner import Runner

ONNX_OPSET = 17
INPUT_SEED = 0


class Backend(ABC):
    """Compiles a model for one device profile and hands back a Runner to time it."""

    name: str = ""
    # distributions whose versions are recorded with every table this backend measures
    packages: tuple[str, ...] = ()
    # the options a device profile may set for this backend (validated on load)
    options_schema: dict[str, Option] = {}
    # whether this backend times on a CUDA device whatever its options (else: options["device"] says)
    cuda_always: bool = False

    def __init__(self, profile: DeviceProfile):
        self.profile = profile
        self.options = dict(profile.options)

    def check_available(self) -> None:
        """Raise NotAvailableError (naming what is missing) when this backend cannot run here."""
        return None

    @abstractmethod
    def prepare(self, module: Any, input_shape: Sequence[int]) -> Runner:
        """Compile `module` for an input of `input_shape` (batch included) and bind a random input."""

    @classmethod
    def check_settings(cls, options: dict[str, Any], protocol: MeasurementProtocol) -> tuple[str, str] | None:
        """(field, what is wrong) when a profile's options and protocol do not go together, else None."""
        if protocol.timing != "wallclock" and not (cls.cuda_always or options.get("device") == "cuda"):
            return "protocol.timing", f"{protocol.timing!r} needs a CUDA device; use 'wallclock' on a CPU"
        return None

    def prepare_op(self, key: str, module: Any, input_shape: Sequence[int]) -> Runner:
        """`prepare` for one op key of a space while profiling (a backend that tunes per op names its
        records after the key)."""
        return self.prepare(module, input_shape)

    def attach_table(self, table: Any, *, profiling: bool = False) -> None:
        """Compile as `table`'s entries were measured (e.g. with its tuning records); `profiling`: the
        table is being measured now, and what the backend adds to it is saved by `table_record`."""
        return None

    def table_record(self) -> dict[str, Any] | None:
        """Save what the backend keeps beside the table being profiled; the record the table holds of it."""
        return None

    def versions(self) -> dict[str, str]:
        return package_versions(self.packages)

    def describe(self) -> dict[str, Any]:
        """The settings this backend measures under (recorded in the table)."""
        return {"backend": self.name, "options": self.options, "threads": self.profile.threads()}


def register_backend(name: str) -> Callable[[type[Backend]], type[Backend]]:
    """Decorator: register a Backend class under `name` (it gets `cls.name = name`)."""
    return BACKENDS.register(name)


def backend_names() -> list[str]:
    """Every backend: a module of this folder (none of their packages imported) or a plugin's."""
    return BACKENDS.names()


def get_backend(profile: DeviceProfile, table: Any = None) -> Backend:
    """The profile's backend, checked against `BackendLike`, ready to prepare models (compiling as the
    latency `table`'s entries were measured, when one is given); NotAvailableError if it cannot run here."""
    backend = BACKENDS.create(profile.backend, profile, path=profile.path)
    backend.check_available()
    if table is not None and hasattr(backend, "attach_table"):  # a plugin's backend may not have it
        backend.attach_table(table)
    return backend


def package_versions(names: Sequence[str]) -> dict[str, str]:
    """Installed versions of the given distributions (absent ones are left out)."""
    found = {}
    for dist in names:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def random_input(input_shape: Sequence[int], *, seed: int = INPUT_SEED, dtype: str = "float32"):
    """A tensor of the real shape, reproducible: standard-normal float32 (never all zeros), or for
    "uint8" (a model with its image preprocessing inside) pixels drawn from 0-255."""
    import torch

    if not input_shape or any(int(d) < 1 for d in input_shape):
        raise InputError(f"expected an input shape of positive integers, got {tuple(input_shape)}", field="input_shape")
    gen = torch.Generator().manual_seed(seed)
    shape = tuple(int(d) for d in input_shape)
    if dtype == "uint8":
        return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
    return torch.randn(shape, generator=gen, dtype=torch.float32)


def module_example(module: Any, input_shape: Sequence[int]):
    """A random input of the dtype `module` takes (uint8 for a model with its preprocessing inside)."""
    import torch

    dtype = "uint8" if getattr(module, "input_dtype", None) == torch.uint8 else "float32"
    return random_input(input_shape, dtype=dtype)


def export_onnx_bytes(module: Any, example: Any, *, opset: int = ONNX_OPSET) -> bytes:
    """Export a torch module to ONNX (TorchScript exporter, fixed shapes) in memory.

    The single input is named "input" and the single output "output".
    """
    import torch

    module = module.eval()
    buf = io.BytesIO()
    threads = torch.get_num_threads()
    # one torch thread: idle OpenMP workers left spinning would steal cores from the next timed runs
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # the TorchScript exporter announces its deprecation on every call
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=UserWarning)
            torch.onnx.export(
                module,
                (example,),
                buf,
                opset_version=opset,
                dynamo=False,
                input_names=["input"],
                output_names=["output"],
                do_constant_folding=True,
            )
    finally:
        torch.set_num_threads(threads)
    return buf.getvalue()


def onnx_input_dtype(model: bytes | str | os.PathLike) -> str:
    """The numpy dtype name of an ONNX model's first input ("float32", "uint8", ...)."""
    import numpy as np
    import onnx
    from onnx import helper

    proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model))
    return np.dtype(helper.tensor_dtype_to_np_dtype(proto.graph.input[0].type.tensor_type.elem_type)).name


def require_cuda(what: str) -> None:
    """NotAvailableError unless torch sees a CUDA GPU."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a dependency
        raise NotAvailableError(f"{what} needs torch with CUDA; torch is not installed") from exc
    if not torch.cuda.is_available():
        raise NotAvailableError(f"{what} needs a CUDA GPU; torch sees none on this machine")


__all__ = [
    "Backend",
    "backend_names",
    "export_onnx_bytes",
    "onnx_input_dtype",
    "get_backend",
    "module_example",
    "package_versions",
    "random_input",
    "register_backend",
    "require_cuda",
]
