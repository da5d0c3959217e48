"""The search space a spec describes (`hwnas.space.spec`): encoding, variation, op keys, cost, modules.

An architecture is

    {"r": 128, "d": [per stage], "w": [per stage], "k": [per block slot], "e": [per block slot],
     "c": [per stage: the cell's edge ops, [] for other stages]}

Stage 0 is the stem. A stage has max(depth) block slots; a slot beyond the stage's depth is
unused and holds the smallest kernel and expand ratio in canonical form, so the integer encoding
(one gene per choice, its index in the sorted choices) is fixed-length and lossless.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from hwnas.errors import InputError
from hwnas.space.base import Arch, OpKey, SearchSpace, count_codes
from hwnas.space.layers import (
    Cell,
    Classifier,
    ConvLayer,
    OpSpec,
    build_op_module,
    cell_live_nodes,
    cell_op_kernel,
    conv_out_size,
    op_macs,
    op_params,
)
from hwnas.space.spec import SpaceSpec, StageSpec, load_spec, parse_spec

# cell edges that compute nothing: no op key (timed alone, an identity measures only the runtime's
# per-call overhead, which in a 15-cell network summed to 15x the whole network's latency); what a
# skip edge costs is its term in the node's sum (a `cellsum` key)
UNTIMED_CELL_OPS = ("none", "skip")
# spec block -> op-key kind
_KIND = {"conv": "conv", "mbconv": "mbconv", "fused_mbconv": "fmbconv", "basic": "basic", "bottleneck": "bottleneck"}


@dataclass(frozen=True)
class Block:
    """One block of a subnet, with its choices resolved: what op keys, modules and the supernet read."""

    stage: int
    slot: int  # index among the stage's block slots; -1 for a cell stage's entry block
    kind: str  # op-key kind ('conv', 'mbconv', 'fmbconv', 'basic', 'bottleneck') or 'cell'
    cin: int
    cout: int
    size: int  # input height and width
    stride: int
    kernel: int
    expand: float
    se: bool
    act: str
    ops: tuple[str, ...] = ()  # cell: each edge's op

    @property
    def out_size(self) -> int:
        return conv_out_size(self.size, self.stride)

    def keys(self, stage: StageSpec) -> list[OpKey]:
        i, o = (self.cin, self.size, self.size), (self.cout, self.out_size, self.out_size)
        if self.kind == "cell":
            return cell_keys(stage, self.ops, i)
        changes = self.stride != 1 or self.cin != self.cout
        return [OpSpec(self.kind, i, o, kernel=self.kernel, stride=self.stride, expand=self.expand, se=self.se,
                       act=self.act, residual=not changes, shortcut=changes).key]

    def module(self, stage: StageSpec) -> nn.Module:
        """The plain module (random weights) the supernet's weights for this block load into."""
        if self.kind == "cell":
            return Cell(self.cin, stage.nodes, stage.edges, list(self.ops))
        return build_op_module(self.keys(stage)[0])[0]


def cell_keys(stage: StageSpec, ops, shape: tuple[int, int, int]) -> list[OpKey]:
    """Op keys of one cell, node by node: each incoming edge that computes (not 'none' or 'skip'), then
    the node's sum of its terms (`cellsum|..|nN`: N - 1 additions; n0: a node without terms, x * 0).
    The keys are what the exported graph computes: nodes that reach no output are dead code and have
    none, and computations the exporter merges (a parameter-free op on the same value, an identical
    partial sum, the zero node) are counted once; a ReLU shared by conv edges is not merged here."""
    keys: list[OpKey] = []
    live = cell_live_nodes(stage.nodes, stage.edges, ops)  # an exported graph has only these
    value: dict[int, tuple] = {0: ("input",)}  # what each node computes, so equal computations compare equal
    seen: set[tuple] = set()
    for node in range(1, stage.nodes):
        if node not in live:
            continue
        terms = []
        for i, ((src, dst), op) in enumerate(zip(stage.edges, ops, strict=True)):
            if dst != node or op == "none":
                continue
            if op == "skip":
                terms.append(value[src])
                continue
            term = ("edge", i) if cell_op_kernel(op) else (op, value[src])  # a conv has its own weights
            if term not in seen:
                seen.add(term)
                keys.append(OpSpec("cellop", shape, shape, op=op).key)
            terms.append(term)
        if not terms:
            value[node] = ("zero",)
            if value[node] not in seen:
                seen.add(value[node])
                keys.append(OpSpec("cellsum", shape, shape, terms=0).key)
            continue
        total, adds = terms[0], 0
        for term in terms[1:]:
            total = ("add", total, term)
            if total not in seen:
                seen.add(total)
                adds += 1
        value[node] = total
        if adds:
            keys.append(OpSpec("cellsum", shape, shape, terms=adds + 1).key)
    return keys


def cell_sum_keys(stage: StageSpec, shape: tuple[int, int, int]) -> set[OpKey]:
    """Every `cellsum` key a cell of this stage can have: per node, each count of incoming edges that
    compute (0 up to the node's in-degree where 'none' is a choice, else the in-degree), except 1."""
    keys = set()
    for node in range(1, stage.nodes):
        degree = sum(1 for _, dst in stage.edges if dst == node)
        for terms in range(0 if "none" in stage.ops else degree, degree + 1):
            if terms != 1:
                keys.add(OpSpec("cellsum", shape, shape, terms=terms).key)
    return keys


class SpecNet(nn.Module):
    """A plain subnet: its stages' blocks in order, then the head (pool, [1x1 conv], dropout, classifier)."""

    def __init__(self, stages: list[list[nn.Module]], head: nn.Module):
        super().__init__()
        self.stages = nn.ModuleList(nn.Sequential(*blocks) for blocks in stages)
        self.head = head

    def forward(self, x):
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


class SpecSpace(SearchSpace):
    """The search space of a `SpaceSpec`."""

    def __init__(self, spec: SpaceSpec):
        self.spec = spec
        self.name = spec.name
        scaled = spec.scaled()  # widths after the width multiplier
        self.stages = scaled.all_stages()
        self.head = scaled.head
        self.resolutions = spec.input.resolutions
        self.in_channels = spec.input.channels
        self.num_classes = spec.classes
        self.n_stages = len(self.stages)
        self.slots = [(s, j) for s, st in enumerate(self.stages) for j in range(max(st.depth))]
        self.n_slots = len(self.slots)
        self.cell_stages = [s for s, st in enumerate(self.stages) if st.block == "cell"]
        # the choices behind every gene, in encoding order: (group, index, choices)
        genes: list[tuple[str, int, tuple]] = [("r", 0, self.resolutions)]
        genes += [("d", s, st.depth) for s, st in enumerate(self.stages)]
        genes += [("w", s, st.width) for s, st in enumerate(self.stages)]
        genes += [("k", m, self.stages[s].kernel) for m, (s, _) in enumerate(self.slots)]
        genes += [("e", m, self.stages[s].expand) for m, (s, _) in enumerate(self.slots)]
        genes += [("c", s, self.stages[s].ops) for s in self.cell_stages for _ in self.stages[s].edges]
        self.genes = genes

    # --- description ----------------------------------------------------------------------
    def config(self) -> dict:
        """`get_space(**space.config())` rebuilds this space (the spec travels with tables and checkpoints)."""
        return {"name": self.name, "spec": self.spec.to_dict()}

    def __repr__(self) -> str:
        return f"SpecSpace({self.name!r}, {len(self.resolutions)} resolutions, {self.n_stages} stages)"

    def input_shape(self, arch: Arch) -> tuple[int, int, int]:
        r = self.validate(arch)["r"]
        return (self.in_channels, r, r)

    def size(self) -> int:
        """Number of distinct subnets (all resolutions)."""
        total = len(self.resolutions)
        for st in self.stages:
            per_block = len(st.kernel) * len(st.expand)
            cells = len(st.ops) ** len(st.edges) if st.block == "cell" else 1
            total *= len(st.width) * cells * sum(per_block**d for d in st.depth)
        return total

    # --- canonical forms and encoding -----------------------------------------------------
    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.zeros(len(self.genes), dtype=np.int64),
                np.array([len(c) - 1 for _, _, c in self.genes], dtype=np.int64))

    def _canonical_genes(self, x: np.ndarray) -> np.ndarray:
        x = np.array(x, dtype=np.int64)
        n = 1 + 2 * self.n_stages
        for m, (s, j) in enumerate(self.slots):
            if j >= self.stages[s].depth[x[1 + s]]:
                x[n + m] = x[n + self.n_slots + m] = 0
        return x

    def decode(self, x) -> Arch:
        x = np.asarray(x)
        xl, xu = self.bounds
        if x.shape != xl.shape or not np.issubdtype(x.dtype, np.number):
            raise InputError(f"encoded architecture must be {len(xl)} integers, got shape {x.shape}", field="x")
        xi = np.rint(x).astype(np.int64)
        if not np.allclose(x, xi) or np.any(xi < xl) or np.any(xi > xu):
            raise InputError(f"encoded architecture must be integers within bounds [xl, xu], got {x.tolist()}",
                             field="x")
        xi = self._canonical_genes(xi)
        arch: Arch = {"r": 0, "d": [], "w": [], "k": [], "e": [], "c": [[] for _ in self.stages]}
        for (group, index, choices), g in zip(self.genes, xi, strict=True):
            value = choices[g]
            if group == "r":
                arch["r"] = int(value)
            elif group == "c":
                arch["c"][index].append(value)
            else:
                arch[group].append(value if group == "e" else int(value))
        return arch

    def surrogate_genes(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Integer features a surrogate model adds to rows of encodings, with their upper bounds;
        None for a space without cell stages. Per cell stage: each edge's op where the edge is built
        (not 'none', into a node that reaches the output: `cell_live_nodes`), else 'none'; then how
        many built edges run each op. A cell's cost is roughly a sum over the ops it runs, which the
        Hamming kernel of the edge genes alone does not see (as NAS-Bench-201's `surrogate_genes`)."""
        if not self.cell_stages:
            return None
        X = np.asarray(X, dtype=np.int64).reshape(-1, len(self.genes))
        columns, upper = [], []
        for s in self.cell_stages:
            stage = self.stages[s]
            idx = [i for i, (group, index, _) in enumerate(self.genes) if group == "c" and index == s]
            none = stage.ops.index("none") if "none" in stage.ops else -1
            built = np.empty((len(X), len(idx)), dtype=np.int64)
            for row, genes in enumerate(X[:, idx]):
                live = cell_live_nodes(stage.nodes, stage.edges, [stage.ops[g] for g in genes])
                built[row] = [g if dst in live and g != none else none
                              for g, (_, dst) in zip(genes, stage.edges, strict=True)]
            columns.append(np.where(built < 0, len(stage.ops), built))  # no 'none' choice: a value of its own
            upper += [len(stage.ops)] * len(idx)
            columns.append(count_codes(built, len(stage.ops)))
            upper += [1] * (len(idx) * len(stage.ops))
        return np.hstack(columns), np.array(upper, dtype=np.int64)

    def surrogate_views(self) -> list[np.ndarray]:
        """With cell stages, the columns of [genes, `surrogate_genes`] that say what the network
        computes: every gene but the cells' raw edge ops, then the cells' built edges and their op
        counts (accuracy depends on them alone; latency may not, a runtime may run dead edges)."""
        if not self.cell_stages:
            return []
        n_extra = sum(len(self.stages[s].edges) * (1 + len(self.stages[s].ops)) for s in self.cell_stages)
        own = [i for i, (group, _, _) in enumerate(self.genes) if group != "c"]
        return [np.r_[own, len(self.genes) + np.arange(n_extra)].astype(np.int64)]

    def encode(self, arch: Arch) -> np.ndarray:
        """One gene per choice: [r, d per stage, w per stage, k per slot, e per slot, cell edge ops]."""
        self._check_keys(arch)
        values: list = [arch["r"]]
        for group in ("d", "w", "k", "e"):
            values += list(self._list(arch, group, self.n_slots if group in "ke" else self.n_stages))
        cells = self._list(arch, "c", self.n_stages)
        for s in self.cell_stages:
            ops = cells[s]
            if not isinstance(ops, (list, tuple)) or len(ops) != len(self.stages[s].edges):
                raise InputError(f"stage {s} is a cell with {len(self.stages[s].edges)} edges: give that many ops",
                                 field=f"arch.c[{s}]")
            values += list(ops)
        genes = []
        for (group, index, choices), v in zip(self.genes, values, strict=True):
            ok = v in choices and not isinstance(v, bool) if group != "c" else v in choices
            if not ok:
                raise InputError(f"must be one of {list(choices)}, got {v!r}", field=f"arch.{group}[{index}]")
            genes.append(choices.index(v))
        return self._canonical_genes(np.array(genes, dtype=np.int64))

    def _check_keys(self, arch: Arch) -> None:
        if not isinstance(arch, dict) or set(arch) != {"r", "d", "w", "k", "e", "c"}:
            got = sorted(map(str, arch)) if isinstance(arch, dict) else type(arch).__name__
            raise InputError(f"an architecture of space '{self.name}' is a dict with keys r, d, w, k, e, c; got {got}",
                             field="arch")

    @staticmethod
    def _list(arch: Arch, group: str, length: int) -> list:
        values = arch[group]
        if not isinstance(values, (list, tuple)) or len(values) != length:
            raise InputError(f"'{group}' must be a list of {length} choices, got {values!r}", field=f"arch.{group}")
        return list(values)

    def validate(self, arch: Arch) -> Arch:
        return self.decode(self.encode(arch))

    def largest(self) -> Arch:
        return self.decode(self.bounds[1] if not self.cell_stages else self._largest_genes())

    def _largest_genes(self) -> np.ndarray:
        x = self.bounds[1].copy()
        # the largest cell: every edge its costliest op (the widest convolution)
        for g, (group, _, choices) in enumerate(self.genes):
            if group == "c":
                x[g] = max(range(len(choices)), key=lambda i: (_op_rank(choices[i]), i))
        return x

    def smallest(self) -> Arch:
        x = np.zeros(len(self.genes), dtype=np.int64)
        for g, (group, _, choices) in enumerate(self.genes):
            if group == "c":  # the cheapest cell that still connects input to output
                x[g] = min(range(len(choices)), key=lambda i: (choices[i] == "none", _op_rank(choices[i]), i))
        return self.decode(x)

    # --- sampling and variation -------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> Arch:
        xu = self.bounds[1]
        return self.decode(np.array([rng.integers(u + 1) for u in xu], dtype=np.int64))

    def mutate(self, arch: Arch, rng: np.random.Generator, prob: float = 0.1) -> Arch:
        """Resample each gene with probability `prob`; slots a deeper stage newly uses are sampled fresh."""
        x = self.encode(arch)
        xu = self.bounds[1]
        y = np.array([rng.integers(u + 1) if rng.random() < prob else v for v, u in zip(x, xu, strict=True)])
        fresh = self._active_slots(y) & ~self._active_slots(x)
        for m in np.flatnonzero(fresh):
            for g in self._slot_genes(m):
                y[g] = rng.integers(xu[g] + 1)
        return self.decode(y)

    def crossover(self, a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
        """Uniform crossover; a used slot inherits from a parent that uses it (sampled if neither does)."""
        xa, xb = self.encode(a), self.encode(b)
        y = np.where(rng.random(len(xa)) < 0.5, xa, xb)
        active_a, active_b, active = self._active_slots(xa), self._active_slots(xb), self._active_slots(y)
        xu = self.bounds[1]
        for m in np.flatnonzero(active):
            donors = [x for x, act in ((xa, active_a), (xb, active_b)) if act[m]]
            for g in self._slot_genes(m):
                y[g] = donors[rng.integers(len(donors))][g] if donors else rng.integers(xu[g] + 1)
        return self.decode(y)

    def _active_slots(self, x: np.ndarray) -> np.ndarray:
        return np.array([j < self.stages[s].depth[x[1 + s]] for s, j in self.slots], dtype=bool)

    def _slot_genes(self, m: int) -> tuple[int, int]:
        n = 1 + 2 * self.n_stages
        return n + m, n + self.n_slots + m

    # --- structure --------------------------------------------------------------------------
    def needs_entry(self, s: int) -> bool:
        """Whether cell stage `s` starts with a basic block (its stride or width can change the shape)."""
        stage = self.stages[s]
        widths = set(stage.width) | set(self.in_widths(s))
        return stage.stride != 1 or len(widths) > 1

    def in_widths(self, s: int) -> tuple[int, ...]:
        return (self.in_channels,) if s == 0 else self.stages[s - 1].width

    def blocks(self, arch: Arch) -> list[list[Block]]:
        """The blocks of each stage of a subnet, in order, with their choices resolved."""
        a = self.validate(arch)
        size, cin = a["r"], self.in_channels
        out: list[list[Block]] = []
        slot = 0
        for s, stage in enumerate(self.stages):
            width, blocks = a["w"][s], []
            if stage.block == "cell":
                if self.needs_entry(s):
                    blocks.append(Block(s, -1, "basic", cin, width, size, stage.stride, 3, 1, False, "relu"))
                    size, cin = conv_out_size(size, stage.stride), width
                blocks += [Block(s, j, "cell", width, width, size, 1, 3, 1, False, "relu", tuple(a["c"][s]))
                           for j in range(a["d"][s])]
            else:
                for j in range(a["d"][s]):
                    stride = stage.stride if j == 0 else 1
                    blocks.append(Block(s, j, _KIND[stage.block], cin, width, size, stride, a["k"][slot + j],
                                        a["e"][slot + j], stage.se, stage.act))
                    size, cin = conv_out_size(size, stride), width
            slot += max(stage.depth)
            out.append(blocks)
        return out

    def _head_keys(self, channels: int, size: int) -> list[OpKey]:
        head = self.head
        keys = [OpSpec("pool", (channels, size, size), (channels, 1, 1)).key]
        if head.width:
            keys.append(OpSpec("conv", (channels, 1, 1), (head.width, 1, 1), kernel=1, act=head.act, bn=False).key)
            channels = head.width
        return keys + [OpSpec("linear", (channels, 1, 1), (self.num_classes,)).key]

    def _final_shape(self, blocks: list[list[Block]]) -> tuple[int, int]:
        last = blocks[-1][-1]
        return last.cout, last.out_size

    # --- op keys ----------------------------------------------------------------------------
    def ops(self, arch: Arch) -> list[OpKey]:
        """Op keys from stem to classifier: every block (a cell: each edge that computes, not 'none' or
        'skip'), pool,
        [head conv], classifier."""
        blocks = self.blocks(arch)
        keys = [k for stage in blocks for b in stage for k in b.keys(self.stages[b.stage])]
        return keys + self._head_keys(*self._final_shape(blocks))

    def all_ops(self) -> list[OpKey]:
        """Every op key of any subnet (sorted, no duplicates), enumerated per stage and block slot
        over the choices that reach it (the input width, the block's own choices)."""
        keys: set[OpKey] = set()
        for r in self.resolutions:
            size = r
            for s, stage in enumerate(self.stages):
                cins = self.in_widths(s)
                if stage.block == "cell":
                    if self.needs_entry(s):
                        for cin in cins:
                            for w in stage.width:
                                keys.update(Block(s, -1, "basic", cin, w, size, stage.stride, 3, 1, False,
                                                  "relu").keys(stage))
                        size = conv_out_size(size, stage.stride)
                    for w in stage.width:
                        keys.update(OpSpec("cellop", (w, size, size), (w, size, size), op=op).key
                                    for op in stage.ops if op not in UNTIMED_CELL_OPS)
                        keys.update(cell_sum_keys(stage, (w, size, size)))
                    continue
                for j in range(max(stage.depth)):
                    stride = stage.stride if j == 0 else 1
                    for cin in (cins if j == 0 else stage.width):
                        for w in stage.width:
                            for k in stage.kernel:
                                for e in stage.expand:
                                    keys.update(Block(s, j, _KIND[stage.block], cin, w, size, stride, k, e,
                                                      stage.se, stage.act).keys(stage))
                    size = conv_out_size(size, stride)
            for w in self.stages[-1].width:
                keys.update(self._head_keys(w, size))
        return sorted(keys)

    # --- modules and cost ---------------------------------------------------------------------
    def build_op(self, key: OpKey) -> tuple[nn.Module, tuple[int, ...]]:
        """Standalone module (random weights, eval mode) for an op key, and its input shape (C,H,W)."""
        return build_op_module(key)

    def build(self, arch: Arch) -> SpecNet:
        """The plain subnet with random weights (what `Supernet.extract` fills with shared weights)."""
        blocks = self.blocks(arch)
        stages = [[b.module(self.stages[b.stage]) for b in stage] for stage in blocks]
        channels, _ = self._final_shape(blocks)
        head = self.head
        parts = OrderedDict(pool=nn.AdaptiveAvgPool2d(1))
        parts["mix"] = ConvLayer(channels, head.width, 1, 1, head.act, bn=False) if head.width else nn.Identity()
        parts["dropout"] = nn.Dropout(head.dropout)
        parts["classifier"] = Classifier(head.width or channels, self.num_classes)
        return SpecNet(stages, nn.Sequential(parts)).eval()

    def params(self, arch: Arch) -> int:
        """Trainable parameters of the subnet (conv/linear weights and biases, BN scale and shift)."""
        return sum(op_params(k) for k in self.ops(arch))

    def flops(self, arch: Arch) -> int:
        """Multiply-accumulates (MACs) of the subnet's conv and linear layers for one image."""
        return sum(op_macs(k) for k in self.ops(arch))


def _op_rank(op: str) -> tuple[int, int]:
    """How costly a cell op is: none < skip < pools < convs by kernel."""
    order = {"none": 0, "skip": 1, "avgpool3x3": 2, "maxpool3x3": 2}
    return (3, cell_op_kernel(op)) if op.startswith("conv") else (order.get(op, 2), 0)


def spec_space(spec: SpaceSpec | dict | str | os.PathLike, *, resolutions=None, in_channels: int | None = None,
               num_classes: int | None = None, width_mult: float | None = None) -> SpecSpace:
    """The space of a spec (dataclasses, a dict as read from YAML, or a file path); `resolutions`,
    `in_channels`, `num_classes` and `width_mult` override the spec's (a profile's resolutions, a
    dataset's channels and classes)."""
    if isinstance(spec, (str, os.PathLike)):
        spec = load_spec(Path(spec))
    elif isinstance(spec, dict):
        spec = parse_spec(spec)
    if not isinstance(spec, SpaceSpec):
        raise InputError(f"expected a space spec (a YAML path, a dict or a SpaceSpec), got {type(spec).__name__}",
                         field="space")
    if resolutions is not None or in_channels is not None or num_classes is not None or width_mult is not None:
        if isinstance(resolutions, int):
            resolutions = [resolutions]
        spec = spec.with_input(resolutions=list(resolutions) if resolutions is not None else None,
                               channels=in_channels, classes=num_classes, width_mult=width_mult)
    return SpecSpace(spec)
