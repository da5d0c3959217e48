"""NAS-Bench-201 cell space: a 4-node DAG cell with 6 edges, each one of 5 ops.

The cell is stacked 3 stages x `cells_per_stage` times (16, 32, 64 channels at 32, 16, 8
pixels) with a residual reduction block between stages, as in NAS-Bench-201.

Architecture: `{"edges": [op, op, op, op, op, op]}` in the order of the benchmark's
`arch_str`: node1<-0, node2<-0, node2<-1, node3<-0, node3<-1, node3<-2.
"""

from __future__ import annotations

import numpy as np

from hwnas.errors import InputError
from hwnas.space.base import Arch, OpKey, SearchSpace, count_codes, register_space

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# (to_node, from_node) of each edge, in arch_str order
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
N_EDGES = len(EDGES)
# ops from small to large: no computation, identity, parameter-free pooling, then convolutions
GROWTH_ORDER: tuple[str, ...] = ("none", "skip_connect", "avg_pool_3x3", "nor_conv_1x1", "nor_conv_3x3")


def live_mask(X: np.ndarray) -> np.ndarray:
    """Which edges of each row of op indices (n, 6) lie on an input->output path of
    non-'none' edges; the others compute nothing the cell's output sees (their source is
    unreachable or their result feeds only 'none' edges). A row is all False when the cell's
    output is disconnected from its input."""
    X = np.asarray(X, dtype=np.int64).reshape(-1, N_EDGES)
    on = X != OPS.index("none")
    reach = {0: np.ones(len(X), dtype=bool)}  # nodes fed by the input through non-'none' edges
    for node in (1, 2, 3):
        reach[node] = np.any([on[:, e] & reach[src] for e, (dst, src) in enumerate(EDGES) if dst == node], axis=0)
    feeds = {3: np.ones(len(X), dtype=bool)}  # nodes that feed the output through non-'none' edges
    for node in (2, 1, 0):
        feeds[node] = np.any([on[:, e] & feeds[dst] for e, (dst, src) in enumerate(EDGES) if src == node], axis=0)
    return np.stack([on[:, e] & reach[src] & feeds[dst] for e, (dst, src) in enumerate(EDGES)], axis=1)


def live_genes(X: np.ndarray) -> np.ndarray:
    """Rows of op indices with every dead edge set to 'none': rows with equal results compute
    the same function (dead edges may still cost time: a dead convolution is still run)."""
    X = np.asarray(X, dtype=np.int64).reshape(-1, N_EDGES)
    return np.where(live_mask(X), X, OPS.index("none"))


def to_arch_str(arch: Arch) -> str:
    """`{"edges": [...]}` -> `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`."""
    edges = arch["edges"]
    nodes: list[str] = []
    for to_node in (1, 2, 3):
        cells = [f"{edges[i]}~{src}" for i, (dst, src) in enumerate(EDGES) if dst == to_node]
        nodes.append("|" + "|".join(cells) + "|")
    return "+".join(nodes)


def from_arch_str(text: str) -> Arch:
    """Parse the benchmark's `arch_str`; a malformed string is an InputError naming what is wrong."""
    nodes = str(text).strip().split("+")
    if len(nodes) != 3:
        raise InputError(f"expected 3 '+'-separated nodes in arch_str, got {text!r}", field="arch_str")
    edges: list[str] = []
    for to_node, node in enumerate(nodes, start=1):
        cells = [c for c in node.strip().split("|") if c]
        if len(cells) != to_node:
            raise InputError(f"node {to_node} needs {to_node} inputs in arch_str {text!r}", field="arch_str")
        for src, cell in enumerate(cells):
            op, sep, idx = cell.partition("~")
            if not sep or idx != str(src) or op not in OPS:
                raise InputError(
                    f"bad edge {cell!r} in arch_str {text!r}; expected OP~{src} with OP in {', '.join(OPS)}",
                    field="arch_str",
                )
            edges.append(op)
    return {"edges": edges}


def _op_params(op: str, cin: int, cout: int) -> int:
    bn = 2 * cout
    if op in ("nor_conv_3x3", "stem_conv3x3_bn"):
        return 9 * cin * cout + bn
    if op == "nor_conv_1x1":
        return cin * cout + bn
    if op == "resblock_s2":
        return (9 * cin * cout + bn) + (9 * cout * cout + bn) + cin * cout
    if op == "bn_relu_gap_fc":
        return 2 * cin + cin * cout + cout
    return 0  # skip_connect, avg_pool_3x3


@register_space("nb201")
class NB201Space(SearchSpace):
    """The NAS-Bench-201 cell space (15,625 architectures)."""

    name = "nb201"

    def __init__(self, num_classes: int = 10, cells_per_stage: int = 5, resolution: int = 32,
                 channels: int = 16):
        self.num_classes = num_classes
        self.cells_per_stage = cells_per_stage
        self.resolution = resolution
        self.channels = channels

    # --- sampling and variation -------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> Arch:
        return self.decode(rng.integers(0, len(OPS), size=N_EDGES))

    def mutate(self, arch: Arch, rng: np.random.Generator, prob: float = 0.1) -> Arch:
        """Each edge, with probability `prob`, becomes a different op."""
        x = self.encode(arch)
        for i in range(N_EDGES):
            if rng.random() < prob:
                x[i] = (x[i] + rng.integers(1, len(OPS))) % len(OPS)
        return self.decode(x)

    def neighbours(self, arch: Arch) -> list[Arch]:
        """Every architecture that differs from `arch` in exactly one edge's op (24)."""
        x = self.encode(arch)
        out: list[Arch] = []
        for i in range(N_EDGES):
            for op in range(len(OPS)):
                if op != x[i]:
                    y = x.copy()
                    y[i] = op
                    out.append(self.decode(y))
        return out

    def grow(self, arch: Arch) -> list[Arch]:
        """Every architecture with one edge's op one step larger in `GROWTH_ORDER` (for network
        morphism: from 'none' to 'nor_conv_3x3' in four steps)."""
        edges = list(self.validate(arch)["edges"])
        out: list[Arch] = []
        for i, op in enumerate(edges):
            step = GROWTH_ORDER.index(op) + 1
            if step < len(GROWTH_ORDER):
                out.append({"edges": edges[:i] + [GROWTH_ORDER[step]] + edges[i + 1:]})
        return out

    def crossover(self, a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
        """Uniform crossover: each edge from either parent."""
        xa, xb = self.encode(a), self.encode(b)
        return self.decode(np.where(rng.random(N_EDGES) < 0.5, xa, xb))

    # --- encoding ------------------------------------------------------------------------
    def encode(self, arch: Arch) -> np.ndarray:
        edges = arch["edges"]
        if len(edges) != N_EDGES:
            raise ValueError(f"'edges' needs {N_EDGES} ops, got {len(edges)}")
        try:
            return np.array([OPS.index(op) for op in edges], dtype=np.int64)
        except ValueError as exc:
            raise ValueError(f"unknown op in {list(edges)}; ops are {', '.join(OPS)}") from exc

    def decode(self, x: np.ndarray) -> Arch:
        return {"edges": [OPS[int(v)] for v in np.asarray(x).reshape(-1)[:N_EDGES]]}

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(N_EDGES, dtype=np.int64), np.full(N_EDGES, len(OPS) - 1, dtype=np.int64)

    def smallest(self) -> Arch:
        """The cheapest cell: every edge 'none' (the cell outputs zeros)."""
        return {"edges": ["none"] * N_EDGES}

    def largest(self) -> Arch:
        return {"edges": ["nor_conv_3x3"] * N_EDGES}

    # --- what a cell computes -----------------------------------------------------------
    def structure_genes(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Extra integer features of encoded cells for surrogate models, with their upper
        bounds: the cell with its dead edges as 'none'), which is what accuracy depends
        on, while latency may still pay for dead edges."""
        return live_genes(X), np.full(N_EDGES, len(OPS) - 1, dtype=np.int64)

    def surrogate_genes(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integer features a surrogate model adds to the encodings, with their upper bounds:
        the cell without its dead edges (`structure_genes`: what accuracy depends on), then how
        many of its edges run each op, counted over the live edges and over all of them, as
        `count_codes` (so that two cells differ by as much as their counts do). A cell's latency
        is roughly a sum over the ops that run: all of them on a runtime that runs dead edges,
        the live ones on one that prunes them. The Hamming kernel of the genes alone sees two
        cells that differ in one edge as alike whichever ops they swap."""
        X = np.asarray(X, dtype=np.int64).reshape(-1, N_EDGES)
        live = live_genes(X)
        codes = [count_codes(Z, len(OPS)) for Z in (live, X)]
        upper = np.r_[np.full(N_EDGES, len(OPS) - 1), np.ones(sum(c.shape[1] for c in codes))].astype(np.int64)
        return np.hstack([live, *codes]), upper

    def surrogate_views(self) -> list[np.ndarray]:
        """The columns of [genes, `surrogate_genes`] that say what a cell computes: the cell without
        its dead edges and its live op counts. Accuracy depends on them alone; fit on all the
        columns, its model would see two cells differing only in a dead edge as less alike (by up
        to 11 columns) than they are. Latency may not (a runtime may run dead edges)."""
        return [np.arange(N_EDGES, 2 * N_EDGES + N_EDGES * len(OPS))]

    def live_edges(self, arch: Arch) -> list[bool]:
        """Which edges the cell's output depends on (see `live_mask`)."""
        return [bool(v) for v in live_mask(self.encode(arch))[0]]

    def without_dead_edges(self, arch: Arch) -> Arch:
        """The cell with every dead edge set to 'none' (see `live_genes`)."""
        return self.decode(live_genes(self.encode(arch))[0])

    def all_archs(self) -> list[Arch]:
        """Every architecture of the space, in encoding order (5**6 = 15,625)."""
        grid = np.stack(np.meshgrid(*[np.arange(len(OPS))] * N_EDGES, indexing="ij"), -1)
        return [self.decode(x) for x in grid.reshape(-1, N_EDGES)]

    # --- op keys --------------------------------------------------------------------------
    def _stages(self) -> list[tuple[int, int]]:
        return [(self.channels * 2**s, self.resolution // 2**s) for s in range(3)]

    def ops(self, arch: Arch) -> list[OpKey]:
        """Stem, every non-'none' edge of every cell, the reduction blocks and the head."""
        edges = self.validate(arch)["edges"]
        c0, h0 = self._stages()[0]
        keys: list[OpKey] = [f"nb201|stem_conv3x3_bn|i3x{h0}x{h0}|o{c0}x{h0}x{h0}"]
        for s, (c, h) in enumerate(self._stages()):
            if s > 0:
                pc, ph = self._stages()[s - 1]
                keys.append(f"nb201|resblock_s2|i{pc}x{ph}x{ph}|o{c}x{h}x{h}")
            for _ in range(self.cells_per_stage):
                keys.extend(f"nb201|{op}|i{c}x{h}x{h}|o{c}x{h}x{h}" for op in edges if op != "none")
        c, h = self._stages()[-1]
        keys.append(f"nb201|bn_relu_gap_fc|i{c}x{h}x{h}|o{self.num_classes}")
        return keys

    def params(self, arch: Arch) -> int:
        """Trainable parameters of the network (conv and linear weights, biases, BN scale and
        shift), as NAS-Bench-201 builds it: ReLU-conv-BN ops, a residual reduction block
        (two 3x3 convs, a 1x1 shortcut) between stages."""
        total = 0
        for key in self.ops(arch):
            _, op, shape_in, shape_out = key.split("|")
            cin = int(shape_in[1:].split("x")[0])
            cout = int(shape_out[1:].split("x")[0])
            total += _op_params(op, cin, cout)
        return total

    def all_ops(self) -> list[OpKey]:
        everything = self.ops({"edges": ["skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3",
                                          "skip_connect", "skip_connect"]})
        return sorted(set(everything))
