"""ONNX export of an extracted subnet, checked against the torch module it came from.

The module is exported in eval mode with the TorchScript exporter (opset 17, constant
folding on): BatchNorm after a convolution is folded into the convolution's weights and
bias, so the graph holds no BatchNormalization node. `export_onnx` then runs
`onnx.checker` and compares ONNX Runtime's output with torch's on random inputs; the
largest absolute difference is recorded and must stay within `tolerance`.
"""

from __future__ import annotations

import collections
import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import InputError, NotAvailableError

ONNX_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"
PARITY_TOLERANCE = 1e-4
PARITY_SEED = 1234


@dataclass
class ParityCheck:
    """How closely one runtime reproduces a reference on the same random inputs."""

    reference: str
    runtime: str
    max_abs_diff: float
    max_rel_diff: float  # relative to the reference output's largest magnitude
    inputs: int
    output_shapes: list[list[int]]
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(self.max_abs_diff <= self.tolerance)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


@dataclass
class OnnxExport:
    """What `export_onnx` wrote and how it was checked."""

    path: str
    opset: int
    input_name: str
    output_name: str
    input_shape: list[int]  # the batch dimension included (1 unless asked otherwise)
    dynamic_batch: bool
    bn_folded: bool  # no BatchNormalization node left in the graph
    op_counts: dict[str, int]
    parity: ParityCheck
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["parity"] = self.parity.to_dict()
        return d


def random_inputs(input_shape: Sequence[int], n: int, *, seed: int = PARITY_SEED,
                  dtype: str = "float32") -> list[np.ndarray]:
    """`n` reproducible arrays of `input_shape`: standard-normal float32 (never zeros), or for "uint8"
    images with every value 0-255 possible (what a model with its preprocessing inside takes)."""
    rng = np.random.default_rng(seed)
    if dtype == "uint8":
        return [rng.integers(0, 256, size=tuple(input_shape), dtype=np.uint8) for _ in range(n)]
    return [rng.standard_normal(tuple(input_shape)).astype(np.float32) for _ in range(n)]


def module_input_dtype(module: Any) -> str:
    """"uint8" for a module that takes raw images (`RawImageModel`), else "float32"."""
    import torch

    return "uint8" if getattr(module, "input_dtype", None) == torch.uint8 else "float32"


def compare_outputs(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], *, reference_name: str,
                    runtime: str, tolerance: float = PARITY_TOLERANCE) -> ParityCheck:
    """Largest absolute (and relative) difference between paired outputs."""
    max_abs = 0.0
    max_rel = 0.0
    shapes = []
    for ref, out in zip(reference, candidate, strict=True):
        ref = np.asarray(ref, dtype=np.float64)
        out = np.asarray(out, dtype=np.float64)
        if ref.shape != out.shape:
            raise RuntimeError(f"{runtime} output shape {out.shape} differs from {reference_name}'s {ref.shape}")
        diff = float(np.max(np.abs(ref - out))) if ref.size else 0.0
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        max_abs = max(max_abs, diff)
        max_rel = max(max_rel, diff / scale if scale > 0 else diff)
        shapes.append(list(ref.shape))
    return ParityCheck(reference=reference_name, runtime=runtime, max_abs_diff=max_abs, max_rel_diff=max_rel,
                       inputs=len(shapes), output_shapes=shapes, tolerance=tolerance)


def onnx_bytes(module: Any, input_shape: Sequence[int], *, dynamic_batch: bool = False,
               opset: int = ONNX_OPSET) -> bytes:
    """Serialize `module` (put in eval mode) to ONNX with BN folded; input "input", output "output"."""
    import torch

    module = module.eval()
    example = torch.from_numpy(random_inputs(input_shape, 1, dtype=module_input_dtype(module))[0])
    buf = io.BytesIO()
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript exporter announces its deprecation on every call
        for category in (DeprecationWarning, FutureWarning, UserWarning):
            warnings.simplefilter("ignore", category=category)
        try:
            torch.onnx.export(module, (example,), buf, opset_version=opset, dynamo=False,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes=dynamic_axes, do_constant_folding=True)
        except Exception as exc:  # noqa: BLE001 - an unsupported op is reported with what to do
            raise InputError(f"torch.onnx.export failed ({type(exc).__name__}: {exc}); the module uses "
                             f"an op opset {opset} cannot express: export a subnet of standard layers",
                             field="module") from exc
    return buf.getvalue()


def ort_session(model: bytes | str | os.PathLike, *, threads: int = 1) -> Any:
    """A CPU ONNX Runtime session with fixed threads (all graph optimisations on)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise NotAvailableError("onnxruntime is not installed (pip install onnxruntime)") from exc
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if not isinstance(model, bytes):
        model = str(model)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def run_ort(model: bytes | str | os.PathLike, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    session = ort_session(model)
    name = session.get_inputs()[0].name
    return [session.run(None, {name: x})[0] for x in inputs]


def run_torch(module: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    import torch

    module = module.eval()
    with torch.no_grad():
        return [module(torch.from_numpy(x)).numpy() for x in inputs]


def export_onnx(module: Any, input_shape: Sequence[int], path: str | os.PathLike, *, dynamic_batch: bool = False,
                opset: int = ONNX_OPSET, parity_inputs: int = 3,
                tolerance: float = PARITY_TOLERANCE) -> OnnxExport:
    """Write `module` as ONNX to `path`, check it, and compare ONNX Runtime with torch.

    `input_shape` includes the batch dimension. With `dynamic_batch` the batch axis is
    symbolic and parity is also checked at batch 3. A parity failure raises RuntimeError
    (nothing is written then).
    """
    import onnx

    input_shape = [int(d) for d in input_shape]
    data = onnx_bytes(module, input_shape, dynamic_batch=dynamic_batch, opset=opset)
    model = onnx.load_from_string(data)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise RuntimeError(f"onnx.checker rejected the exported model: {exc}") from exc
    op_counts = dict(sorted(collections.Counter(n.op_type for n in model.graph.node).items()))
    dtype = module_input_dtype(module)
    inputs = random_inputs(input_shape, parity_inputs, dtype=dtype)
    if dynamic_batch:
        inputs += random_inputs([3, *input_shape[1:]], 1, seed=PARITY_SEED + 1, dtype=dtype)
    parity = compare_outputs(run_torch(module, inputs), run_ort(data, inputs), reference_name="torch",
                             runtime="onnxruntime", tolerance=tolerance)
    if not parity.passed:
        raise RuntimeError(f"ONNX Runtime output differs from torch by {parity.max_abs_diff:.3g} "
                           f"(> {tolerance:g}) on random inputs")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    notes = []
    bn_folded = "BatchNormalization" not in op_counts
    if not bn_folded:
        notes.append("BatchNormalization nodes remain (a BN not preceded by a convolution cannot be folded)")
    return OnnxExport(path=str(path), opset=opset, input_name=INPUT_NAME, output_name=OUTPUT_NAME,
                      input_shape=input_shape, dynamic_batch=dynamic_batch, bn_folded=bn_folded,
                      op_counts=op_counts, parity=parity, notes=notes)
