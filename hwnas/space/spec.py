"""A search space written as data: the spec (YAML, or the same as dataclasses) and its checks.

    name: my-net
    input: {channels: 3, resolutions: [96, 128, 160]}
    classes: 10
    stem: {block: conv, width: 16, kernel: 3, stride: 2, act: hswish}
    stages:
      - {block: mbconv, width: [16, 24], depth: [1, 2], kernel: [3, 5, 7], expand: [3, 4, 6], stride: 2, se: true}
      - {block: bottleneck, width: [32, 48, 64], depth: [2, 3], expand: [0.2, 0.25, 0.35], stride: 2}
      - {block: conv, width: [32, 48], depth: [1, 2, 3], kernel: [3, 5], stride: 1}
      - {block: cell, width: 64, nodes: 4, ops: [none, skip, conv1x1, conv3x3, avgpool3x3], repeat: 2}
    head: {width: 256, act: hswish, dropout: 0.1}

A list is a choice (elastic), a scalar is fixed. Every stage is `depth` blocks of one type; the
first has the stage's stride. `width` is the stage's output channels (elastic width slices the
channels of shared weights); `expand` is the hidden width over the block's input width (mbconv,
fused_mbconv) or over its output width (bottleneck, as once-for-all's ResNet); `kernel` choices
share the largest kernel through once-for-all's kernel transform. A `cell` stage is `repeat`
(or `depth`) copies of one NAS-Bench-201-style DAG whose every edge chooses one of `ops` (one
choice per edge, shared by the stage's cells); when the stage strides or its width can change, a
ResNet basic block enters it. The head is a global pool, an optional 1x1 conv of `width`
channels, dropout and the classifier.

`width_mult` (default 1) scales every width, the head's included, rounding to a multiple of 8 as
MobileNet does. Every resolution must divide by the strides, unless `input.sizes` is `ceil`: then
a stride-2 block maps a size h to ceil(h / 2), as a 'same'-padded convolution does (20 px -> 10 ->
5 -> 3), and a resolution must be at least the total stride.

A bad spec is an InputError naming the file, the stage and the key before anything is built.
Blocks are the entries of `BLOCKS` (the keys each takes); their modules live in
`hwnas.space.layers` (plain) and `hwnas.supernet.elastic` (weight-sharing).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from hwnas.errors import InputError
from hwnas.io import read_yaml
from hwnas.space.layers import CELL_OPS, make_divisible

# block type -> the stage keys it takes besides block/width/depth/stride
BLOCKS: dict[str, tuple[str, ...]] = {
    "conv": ("kernel", "act"),
    "mbconv": ("kernel", "expand", "se", "act"),
    "fused_mbconv": ("kernel", "expand", "se", "act"),
    "basic": ("kernel", "act"),
    "bottleneck": ("kernel", "expand", "act"),
    "cell": ("nodes", "ops", "edges", "repeat"),
}
# spec activation name -> op-key name
ACTS = {"relu": "relu", "relu6": "relu6", "hswish": "hs", "hs": "hs", "silu": "silu", "swish": "silu",
        "none": "none"}
STAGE_KEYS = ("block", "width", "depth", "stride")
TOP_KEYS = ("name", "input", "classes", "width_mult", "stem", "stages", "head")
SIZES = ("exact", "ceil")


@dataclass(frozen=True)
class InputSpec:
    channels: int
    resolutions: tuple[int, ...]
    sizes: str = "exact"  # 'ceil': a stride-2 block maps h to ceil(h / 2)


@dataclass(frozen=True)
class StageSpec:
    """One stage: `depth` blocks of type `block`; tuples are choices (one element: fixed)."""

    block: str
    width: tuple[int, ...]
    depth: tuple[int, ...] = (1,)
    stride: int = 1
    kernel: tuple[int, ...] = (3,)
    expand: tuple[float, ...] = (1,)
    se: bool = False
    act: str = "relu"
    nodes: int = 4  # cell only
    ops: tuple[str, ...] = ()  # cell only: each edge's choices
    edges: tuple[tuple[int, int], ...] = ()  # cell only: (from, to); default every i < j


@dataclass(frozen=True)
class HeadSpec:
    width: int | None = None
    act: str = "relu"
    dropout: float = 0.0


@dataclass(frozen=True)
class SpaceSpec:
    name: str
    input: InputSpec
    classes: int
    stem: StageSpec
    stages: tuple[StageSpec, ...]
    head: HeadSpec = field(default_factory=HeadSpec)
    width_mult: float = 1.0
    source: str | None = field(default=None, compare=False)  # the file it came from (error messages)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict `parse_spec` reads back (what tables and checkpoints store)."""
        d = asdict(self)
        d.pop("source")
        d["input"]["resolutions"] = list(self.input.resolutions)
        if self.input.sizes == "exact":  # defaults left out: the dicts stored before these keys existed
            d["input"].pop("sizes")
        if self.width_mult == 1:
            d.pop("width_mult")
        d["stages"] = list(d["stages"])
        for stage in [d["stem"], *d["stages"]]:
            for key, value in list(stage.items()):
                if isinstance(value, tuple):
                    stage[key] = [list(v) if isinstance(v, tuple) else v for v in value]
            for key in [k for k in stage if k not in STAGE_KEYS + BLOCKS[stage["block"]]]:
                stage.pop(key)
        return d

    def with_input(self, *, resolutions=None, channels: int | None = None, classes: int | None = None,
                   width_mult: float | None = None) -> SpaceSpec:
        """The same space for other input resolutions, channels, classes or width multiplier (checked again)."""
        d = self.to_dict()
        if width_mult is not None:
            d["width_mult"] = width_mult
        if resolutions is not None:
            d["input"]["resolutions"] = resolutions
        if channels is not None:
            d["input"]["channels"] = channels
        if classes is not None:
            d["classes"] = classes
        return parse_spec(d, source=self.source)

    def all_stages(self) -> tuple[StageSpec, ...]:
        """The stem, then the stages (the stem is stage 0 of an architecture's per-stage lists)."""
        return (self.stem, *self.stages)

    def width(self, base: int) -> int:
        """A width as written, after the width multiplier (rounded to a multiple of 8 unless it is 1)."""
        return base if self.width_mult == 1 else make_divisible(base * self.width_mult)

    def scaled(self) -> SpaceSpec:
        """The same spec with the width multiplier applied to every width (and set to 1)."""
        if self.width_mult == 1:
            return self
        stages = tuple(replace(st, width=tuple(sorted({self.width(w) for w in st.width}))) for st in self.stages)
        head = replace(self.head, width=self.width(self.head.width) if self.head.width else None)
        return replace(self, stem=replace(self.stem, width=tuple(sorted({self.width(w) for w in self.stem.width}))),
                       stages=stages, head=head, width_mult=1.0)


# --- reading ---------------------------------------------------------------------------------
def load_spec(path: str | os.PathLike) -> SpaceSpec:
    """Read and check a YAML (or JSON) spec file."""
    path = Path(path)
    data = read_yaml(path, what="space spec")
    return parse_spec(data, source=str(path))


class _Where:
    """Names a key in error messages: the file, then `stages[2].kernel`."""

    def __init__(self, source: str | None, prefix: str):
        self.source, self.prefix = source, prefix

    def error(self, key: str | None, message: str) -> InputError:
        name = f"{self.prefix}.{key}" if key and self.prefix else (key or self.prefix or None)
        return InputError(message, path=self.source, field=name)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _choices(where: _Where, key: str, value: Any, *, integer: bool = True, odd: bool = False) -> tuple:
    """A scalar or a non-empty list of positive numbers -> sorted tuple without duplicates."""
    values = value if isinstance(value, (list, tuple)) else [value]
    what = "integer" if integer else "number"
    if not values:
        raise where.error(key, f"an empty list of choices; give a positive {what} or a non-empty list of them")
    for v in values:
        if not (_is_int(v) if integer else _is_number(v)) or not v > 0:
            raise where.error(key, f"every choice must be a positive {what}, got {v!r}")
        if odd and v % 2 != 1:
            raise where.error(key, f"a kernel must be odd, got {v!r}")
    return tuple(sorted(set(values)))


def _scalar(where: _Where, key: str, value: Any, check, expected: str) -> Any:
    if isinstance(value, (list, tuple)) or not check(value):
        raise where.error(key, f"expected {expected}, got {value!r}")
    return value


def parse_stage(data: Any, where: _Where) -> StageSpec:
    if not isinstance(data, dict):
        raise where.error(None, f"a stage is a mapping with at least 'block' and 'width', got {data!r}")
    block = data.get("block")
    if not isinstance(block, str) or block not in BLOCKS:
        raise where.error("block", f"unknown block {block!r}; known: {', '.join(BLOCKS)}")
    allowed = STAGE_KEYS + BLOCKS[block]
    for key in data:
        if key not in allowed:
            raise where.error(str(key), f"unknown key for a '{block}' block; it takes: {', '.join(allowed)}")
    if "width" not in data:
        raise where.error("width", "missing; give the stage's output channels (a number or a list of choices)")
    width = _choices(where, "width", data["width"])
    if block == "cell" and "repeat" in data and "depth" in data:
        raise where.error("repeat", "give 'repeat' or 'depth' for a cell stage, not both")
    depth = _choices(where, "depth", data.get("depth", data.get("repeat", 1)))
    stride = _scalar(where, "stride", data.get("stride", 1), lambda v: _is_int(v) and v > 0, "a positive integer")
    if stride > 2:
        raise where.error("stride", f"stride {stride} cannot chain: a block halves the size at most (1 or 2)")
    kernel = _choices(where, "kernel", data.get("kernel", 3), odd=True)
    expand = _choices(where, "expand", data.get("expand", 1), integer=False)
    if block in ("mbconv", "fused_mbconv") and min(expand) < 1:
        raise where.error("expand", f"an inverted bottleneck widens its input: expand >= 1, got {list(expand)}")
    if block == "bottleneck" and max(expand) > 4:
        raise where.error("expand", f"a bottleneck's hidden width is out x expand, expected <= 4, got {list(expand)}")
    se = _scalar(where, "se", data.get("se", False), lambda v: isinstance(v, bool), "true or false")
    act_name = _scalar(where, "act", data.get("act", "relu"), lambda v: v in ACTS, f"one of {', '.join(ACTS)}")
    stage = StageSpec(block=block, width=width, depth=depth, stride=stride, kernel=kernel, expand=expand, se=se,
                      act=ACTS[act_name])
    if block == "cell":
        stage = _parse_cell(data, stage, where)
    return stage


def _parse_cell(data: dict, stage: StageSpec, where: _Where) -> StageSpec:
    nodes = _scalar(where, "nodes", data.get("nodes", 4), lambda v: _is_int(v) and v >= 2, "an integer >= 2")
    ops = data.get("ops")
    if not isinstance(ops, list) or not ops:
        raise where.error("ops", f"a cell needs a non-empty list of edge ops from {', '.join(CELL_OPS)}")
    for op in ops:
        if op not in CELL_OPS:
            raise where.error("ops", f"unknown cell op {op!r}; known: {', '.join(CELL_OPS)}")
    ops_t = tuple(dict.fromkeys(ops))
    if "edges" in data:
        raw = data["edges"]
        if not isinstance(raw, list) or not raw:
            raise where.error("edges", "a non-empty list of [from, to] node pairs")
        edges = []
        for e in raw:
            if (not isinstance(e, (list, tuple)) or len(e) != 2 or not all(_is_int(v) for v in e)
                    or not 0 <= e[0] < e[1] < nodes):
                raise where.error("edges", f"each edge is [from, to] with 0 <= from < to < nodes ({nodes}), got {e!r}")
            edges.append((int(e[0]), int(e[1])))
        if len(set(edges)) != len(edges):
            raise where.error("edges", "an edge is listed twice")
        edges_t = tuple(edges)
    else:  # every earlier node feeds every later one, ordered by target then source (NAS-Bench-201's order)
        edges_t = tuple((i, j) for j in range(1, nodes) for i in range(j))
    if not _has_path(nodes, list(edges_t)) or set(ops_t) == {"none"}:
        raise where.error("edges" if "edges" in data else "ops",
                          "no choice of edge ops connects the cell's input (node 0) to its output "
                          f"(node {nodes - 1})")
    return replace(stage, nodes=nodes, ops=ops_t, edges=edges_t, kernel=(3,), expand=(1,))


def _has_path(nodes: int, edges: list[tuple[int, int]]) -> bool:
    reach = {0}
    for src, dst in sorted(edges, key=lambda e: e[1]):
        if src in reach:
            reach.add(dst)
    return nodes - 1 in reach


def parse_spec(data: Any, *, source: str | None = None) -> SpaceSpec:
    """Check a spec (a dict as read from YAML) and return it as dataclasses; every problem is an
    InputError naming the file (`source`), the stage and the key."""
    top = _Where(source, "")
    if not isinstance(data, dict):
        raise top.error(None, f"a space spec is a mapping with keys {', '.join(TOP_KEYS)}; got {type(data).__name__}")
    for key in data:
        if key not in TOP_KEYS:
            raise top.error(str(key), f"unknown key; a space spec has: {', '.join(TOP_KEYS)}")
    for key in ("name", "input", "stem", "stages"):
        if key not in data:
            raise top.error(key, "missing")
    name = _scalar(top, "name", data["name"], lambda v: isinstance(v, str) and v.strip() != "" and "/" not in v,
                   "a non-empty name without '/'")
    inp = data["input"]
    where_in = _Where(source, "input")
    if not isinstance(inp, dict) or set(inp) - {"channels", "resolutions", "sizes"} or "resolutions" not in inp:
        raise top.error("input", f"expected {{channels: C, resolutions: [R, ...], sizes: exact|ceil}}, got {inp!r}")
    sizes = _scalar(where_in, "sizes", inp.get("sizes", "exact"), lambda v: v in SIZES, f"one of {', '.join(SIZES)}")
    channels = _scalar(where_in, "channels", inp.get("channels", 3), lambda v: _is_int(v) and v > 0,
                       "a positive integer")
    resolutions = _choices(where_in, "resolutions", inp["resolutions"])
    classes = _scalar(top, "classes", data.get("classes", 10), lambda v: _is_int(v) and v > 0, "a positive integer")
    width_mult = _scalar(top, "width_mult", data.get("width_mult", 1.0), lambda v: _is_number(v) and 0.1 <= v <= 4,
                         "a number in [0.1, 4]")
    stem = parse_stage(data["stem"], _Where(source, "stem"))
    if stem.block == "cell" or stem.depth != (1,):
        raise _Where(source, "stem").error("block", "the stem is one block that is not a cell (depth 1)")
    stages_raw = data["stages"]
    if not isinstance(stages_raw, list) or not stages_raw:
        raise top.error("stages", "a non-empty list of stages")
    stages = tuple(parse_stage(s, _Where(source, f"stages[{i}]")) for i, s in enumerate(stages_raw))
    head_raw = data.get("head") or {}
    where_head = _Where(source, "head")
    if not isinstance(head_raw, dict):
        raise top.error("head", f"expected {{width: W, act: A, dropout: P}}, got {head_raw!r}")
    for key in head_raw:
        if key not in ("width", "act", "dropout"):
            raise where_head.error(str(key), "unknown key; the head takes: width, act, dropout")
    head_width = head_raw.get("width")
    if head_width is not None:
        _scalar(where_head, "width", head_width, lambda v: _is_int(v) and v > 0, "a positive integer (fixed)")
    head_act = _scalar(where_head, "act", head_raw.get("act", "relu"), lambda v: v in ACTS, f"one of {', '.join(ACTS)}")
    dropout = _scalar(where_head, "dropout", head_raw.get("dropout", 0.0), lambda v: _is_number(v) and 0 <= v < 1,
                      "a number in [0, 1)")
    spec = SpaceSpec(name=name, input=InputSpec(channels, resolutions, sizes), classes=classes, stem=stem,
                     stages=stages, head=HeadSpec(head_width, ACTS[head_act], float(dropout)),
                     width_mult=float(width_mult), source=source)
    _check_geometry(spec)
    return spec


def _check_geometry(spec: SpaceSpec) -> None:
    """Every resolution divides by the strides, so every stage's size is a whole number of pixels
    (with `sizes: ceil`, every resolution is at least the total stride)."""
    if spec.input.sizes == "ceil":
        total = 1
        for stage in spec.all_stages():
            total *= stage.stride
        for r in spec.input.resolutions:
            if r < total:
                raise _Where(spec.source, "input").error(
                    "resolutions", f"resolution {r} is below the total stride {total}; use resolutions >= {total}")
        return
    total = 1
    for i, stage in enumerate(spec.all_stages()):
        total *= stage.stride
        for r in spec.input.resolutions:
            if r % total:
                where = _Where(spec.source, "stem" if i == 0 else f"stages[{i - 1}]")
                raise where.error("stride", f"resolution {r} does not divide by the total stride {total} up to here; "
                                  f"use resolutions that are multiples of {total}")
