"""Deployable bundles: ONNX, TVM library (local, cross-compiled, timed over RPC), TensorRT engine, manifest.

    from hwnas.export import export, export_selection, select_from_run
    export(subnet, (3, 128, 128), "deploy/D", formats=("onnx", "tvm"))
    export_selection(select_from_run("runs/R/pareto.json", "best-under-budget"), "deploy/D")

Calling the package, `hwnas.export("runs/R/pareto.json", out="deploy/D")`, is the library verb
(`hwnas.pipeline.export`). The formats are exporters registered by name (`hwnas.export.formats`;
a plugin adds one through the entry-point group `hwnas.exporters`).
"""

from hwnas.export.bundle import ExportResult, export, export_selection, parse_formats
from hwnas.export.formats import ExportContext, ExportError, register_exporter
from hwnas.export.source import Selection, parse_arch, select_from_run

__all__ = [
    "ExportContext",
    "ExportError",
    "ExportResult",
    "Selection",
    "export",
    "export_selection",
    "parse_arch",
    "parse_formats",
    "register_exporter",
    "select_from_run",
]


from hwnas.verb_module import make_verb  # noqa: E402

make_verb(__name__, "hwnas.pipeline:export")  # hwnas.export(...) is the library verb
