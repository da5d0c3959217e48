"""The package's layers: every import goes down (or across one layer), and no module imports itself back.

The order is the one `hwnas/__init__.py` describes; LAYERS below is where it is enforced. Imports
inside functions count too: a lazy import still ties the two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import hwnas

PACKAGE = Path(hwnas.__file__).resolve().parent

# lowest first; a module belongs to the first prefix that names it or a package above it
LAYERS: list[tuple[str, ...]] = [
    ("hwnas.errors", "hwnas.io", "hwnas.protocols", "hwnas.registry", "hwnas.verb_module", "hwnas.stats",
     "hwnas.resources", "hwnas.device_profile", "hwnas.space", "hwnas.data"),
    ("hwnas.runtime",),
    ("hwnas.latency", "hwnas.supernet"),
    ("hwnas.export", "hwnas.estimate", "hwnas.train", "hwnas.search"),
    ("hwnas.pipeline",),
    ("hwnas.commands", "hwnas.demo", "hwnas.cli", "hwnas.__main__", "hwnas"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> int:
    best = None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (i, len(prefix))
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[0]


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The hwnas modules `module` imports (anywhere in it), each import resolved to a module."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "hwnas"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "hwnas":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    found.add(sub)
                elif not (base == "hwnas" and alias.name == "__version__"):  # the version is everyone's
                    found.add(base)
    found.discard(module)
    return {m for m in found if m in modules}


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def test_every_import_goes_down_the_layers():
    graph = import_graph()
    upward = sorted(f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
                    for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))
    assert not upward, "imports from a lower layer into a higher one:\n" + "\n".join(upward)


def test_no_import_cycles():
    graph = import_graph()
    cycles = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_lazy_imports_and_resolves_submodules(tmp_path):
    modules = {"hwnas.a": tmp_path / "a.py", "hwnas.b": tmp_path / "b.py", "hwnas.b.c": tmp_path / "c.py"}
    src = tmp_path / "a.py"
    src.write_text("def f():\n    from hwnas.b import c\n    from hwnas.b import thing\n    import hwnas.a\n")
    assert imports_of("hwnas.a", src, modules) == {"hwnas.b.c", "hwnas.b"}


def test_the_front_door_exposes_the_verbs():
    import hwnas

    for name in ("profile", "validate", "fit_latency", "train", "search", "export", "demo", "get_space",
                 "load_profile", "LatencyTable"):
        assert callable(getattr(hwnas, name)), name
