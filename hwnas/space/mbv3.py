"""Elastic MobileNetV3 search spaces (once-for-all style).

Two registered spaces share one structure: a fixed stem, five elastic stages of
inverted-bottleneck blocks (depth {2,3,4} per stage, kernel {3,5,7} and expand ratio
{3,4,6} per block) and a fixed head.

- ``mbv3``: OFA's MobileNetV3 space for ImageNet-sized inputs (resolutions 160-224).
- ``mbv3-small-input``: the same elastic stages with a stride-1 stem and a narrower
  head, for 24-32 px inputs (Fashion-MNIST, CIFAR-10).

An architecture is ``{"r": int, "d": [5 ints], "k": [20 ints], "e": [20 ints]}``: 20
block slots (5 stages x 4); slots beyond a stage's depth are unused and set to the
smallest choice in canonical form, so the encoding is fixed-length and lossless.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from hwnas.errors import InputError
from hwnas.space.base import Arch, OpKey, SearchSpace, register_space
from hwnas.space.layers import OpSpec, build_op_module, conv_out_size, make_divisible, op_macs, op_params

DEPTHS = (2, 3, 4)
KERNELS = (3, 5, 7)
EXPANDS = (3, 4, 6)
MAX_DEPTH = max(DEPTHS)


@dataclass(frozen=True)
class StageLayout:
    """One elastic stage: output width (before the width multiplier), first-block stride, SE, activation."""

    width: int
    stride: int
    se: bool
    act: str


@dataclass(frozen=True)
class NetworkLayout:
    """The fixed parts of the network and its stages (base widths, before the width multiplier)."""

    stem_width: int
    stem_stride: int
    first_block_width: int
    stages: tuple[StageLayout, ...]
    final_expand_width: int
    feature_mix_width: int


# MobileNetV3-Large as in OFA: SE where MobileNetV3-Large has it, h-swish in the last three stages.
MBV3_LAYOUT = NetworkLayout(
    stem_width=16,
    stem_stride=2,
    first_block_width=16,
    stages=(
        StageLayout(24, 2, False, "relu"),
        StageLayout(40, 2, True, "relu"),
        StageLayout(80, 2, False, "hs"),
        StageLayout(112, 1, True, "hs"),
        StageLayout(160, 2, True, "hs"),
    ),
    final_expand_width=960,
    feature_mix_width=1280,
)

# For 24-32 px inputs: stride-1 stem and first block, then stage strides 2,2,2,1,1 (total stride 8:
# 32 px -> 4x4, 24 px -> 3x3 final map), narrow widths (16..96) and head (384, 512); the widest
# stages run at 4x4 so the largest subnet trains in minutes on a CPU.
SMALL_INPUT_LAYOUT = NetworkLayout(
    stem_width=16,
    stem_stride=1,
    first_block_width=16,
    stages=(
        StageLayout(16, 2, False, "relu"),
        StageLayout(24, 2, True, "relu"),
        StageLayout(40, 2, False, "hs"),
        StageLayout(64, 1, True, "hs"),
        StageLayout(96, 1, True, "hs"),
    ),
    final_expand_width=384,
    feature_mix_width=512,
)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


class ElasticMobileNetSpace(SearchSpace):
    """Elastic depth / kernel / expand ratio over a MobileNetV3 layout, at a set of resolutions."""

    depths = DEPTHS
    kernels = KERNELS
    expands = EXPANDS

    def __init__(
        self,
        name: str,
        layout: NetworkLayout,
        resolutions,
        width_mult: float,
        num_classes: int,
        in_channels: int,
        min_resolution: int,
    ):
        self.name = name
        self.layout = layout
        self.resolutions = _check_resolutions(resolutions, min_resolution)
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not 0.1 <= width_mult <= 4:
            raise InputError(f"width_mult must be a number in [0.1, 4], got {width_mult!r}", field="width_mult")
        if not _is_int(num_classes) or num_classes < 1:
            raise InputError(f"num_classes must be a positive integer, got {num_classes!r}", field="num_classes")
        if not _is_int(in_channels) or in_channels < 1:
            raise InputError(f"in_channels must be a positive integer, got {in_channels!r}", field="in_channels")
        self.width_mult = float(width_mult)
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.n_stages = len(layout.stages)
        self.n_slots = self.n_stages * MAX_DEPTH
        # channel widths after the width multiplier
        self.stem_width = make_divisible(layout.stem_width * self.width_mult)
        self.first_block_width = make_divisible(layout.first_block_width * self.width_mult)
        self.stage_widths = [make_divisible(s.width * self.width_mult) for s in layout.stages]
        self.final_expand_width = make_divisible(layout.final_expand_width * self.width_mult)
        self.feature_mix_width = make_divisible(layout.feature_mix_width * self.width_mult)

    # --- description --------------------------------------------------------------------
    def config(self) -> dict:
        """Name and options: `get_space(**space.config())` rebuilds this space."""
        return {
            "name": self.name,
            "resolutions": list(self.resolutions),
            "width_mult": self.width_mult,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
        }

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"get_space({self.name!r}, {opts})"

    def input_shape(self, arch: Arch) -> tuple[int, int, int]:
        """(C, H, W) of the input a subnet takes (without batch)."""
        r = self.validate(arch)["r"]
        return (self.in_channels, r, r)

    def size(self) -> int:
        """Number of distinct subnets at one resolution."""
        per_stage = sum((len(KERNELS) * len(EXPANDS)) ** d for d in DEPTHS)
        return per_stage**self.n_stages

    # --- canonical forms ----------------------------------------------------------------
    def largest(self) -> Arch:
        return self._canonical(max(self.resolutions), [max(DEPTHS)] * self.n_stages,
                               [max(KERNELS)] * self.n_slots, [max(EXPANDS)] * self.n_slots)

    def smallest(self) -> Arch:
        return self._canonical(min(self.resolutions), [min(DEPTHS)] * self.n_stages,
                               [min(KERNELS)] * self.n_slots, [min(EXPANDS)] * self.n_slots)

    def _canonical(self, r: int, d: list[int], k: list[int], e: list[int]) -> Arch:
        k, e = [int(v) for v in k], [int(v) for v in e]
        for slot in range(self.n_slots):
            if not self._active(d, slot):
                k[slot], e[slot] = min(KERNELS), min(EXPANDS)
        return {"r": int(r), "d": [int(v) for v in d], "k": k, "e": e}

    @staticmethod
    def _active(d: list[int], slot: int) -> bool:
        return slot % MAX_DEPTH < d[slot // MAX_DEPTH]

    # --- encoding -----------------------------------------------------------------------
    @property
    def n_genes(self) -> int:
        return 1 + self.n_stages + 2 * self.n_slots

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        xl = np.zeros(self.n_genes, dtype=np.int64)
        xu = np.array(
            [len(self.resolutions) - 1]
            + [len(DEPTHS) - 1] * self.n_stages
            + [len(KERNELS) - 1] * self.n_slots
            + [len(EXPANDS) - 1] * self.n_slots,
            dtype=np.int64,
        )
        return xl, xu

    def encode(self, arch: Arch) -> np.ndarray:
        """Integer vector: [resolution index, 5 depth indices, 20 kernel indices, 20 expand indices]."""
        r, d, k, e = self._check_arch(arch)
        canon = self._canonical(r, d, k, e)
        genes = [self.resolutions.index(canon["r"])]
        genes += [DEPTHS.index(v) for v in canon["d"]]
        genes += [KERNELS.index(v) for v in canon["k"]]
        genes += [EXPANDS.index(v) for v in canon["e"]]
        return np.array(genes, dtype=np.int64)

    def decode(self, x) -> Arch:
        x = np.asarray(x)
        if x.shape != (self.n_genes,):
            raise InputError(f"encoded architecture must have shape ({self.n_genes},), got {x.shape}", field="x")
        if not np.issubdtype(x.dtype, np.number):
            raise InputError(f"encoded architecture must be numeric, got dtype {x.dtype}", field="x")
        xi = np.rint(x).astype(np.int64)
        xl, xu = self.bounds
        if not np.allclose(x, xi) or np.any(xi < xl) or np.any(xi > xu):
            raise InputError(f"encoded architecture must be integers within bounds [xl, xu], got {x.tolist()}",
                             field="x")
        s, n = self.n_stages, self.n_slots
        return self._canonical(
            self.resolutions[xi[0]],
            [DEPTHS[i] for i in xi[1 : 1 + s]],
            [KERNELS[i] for i in xi[1 + s : 1 + s + n]],
            [EXPANDS[i] for i in xi[1 + s + n :]],
        )

    def validate(self, arch: Arch) -> Arch:
        """`arch` in canonical form, or InputError naming the bad field."""
        r, d, k, e = self._check_arch(arch)
        return self._canonical(r, d, k, e)

    def _check_arch(self, arch: Arch) -> tuple[int, list[int], list[int], list[int]]:
        if not isinstance(arch, dict):
            raise InputError(f"an architecture of space '{self.name}' is a dict with keys r, d, k, e; "
                             f"got {type(arch).__name__}", field="arch")
        if set(arch) != {"r", "d", "k", "e"}:
            raise InputError(f"an architecture of space '{self.name}' has exactly the keys r, d, k, e; "
                             f"got {sorted(map(str, arch))}", field="arch")
        r = arch["r"]
        if not _is_int(r) or int(r) not in self.resolutions:
            raise InputError(f"resolution must be one of {list(self.resolutions)}, got {r!r}", field="arch.r")
        out = [int(r)]
        for name, length, choices in (("d", self.n_stages, DEPTHS), ("k", self.n_slots, KERNELS),
                                      ("e", self.n_slots, EXPANDS)):
            values = arch[name]
            if not isinstance(values, (list, tuple, np.ndarray)) or len(values) != length:
                raise InputError(f"'{name}' must be a list of {length} integers from {list(choices)}, "
                                 f"got {values!r}", field=f"arch.{name}")
            for i, v in enumerate(values):
                if not _is_int(v) or int(v) not in choices:
                    raise InputError(f"must be one of {list(choices)}, got {v!r}", field=f"arch.{name}[{i}]")
            out.append([int(v) for v in values])
        return out[0], out[1], out[2], out[3]

    # --- sampling and variation ---------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> Arch:
        return self._canonical(
            self.resolutions[rng.integers(len(self.resolutions))],
            [DEPTHS[i] for i in rng.integers(len(DEPTHS), size=self.n_stages)],
            [KERNELS[i] for i in rng.integers(len(KERNELS), size=self.n_slots)],
            [EXPANDS[i] for i in rng.integers(len(EXPANDS), size=self.n_slots)],
        )

    def mutate(self, arch: Arch, rng: np.random.Generator, prob: float = 0.1) -> Arch:
        """Resample each choice with probability `prob`; slots a deeper stage newly uses are sampled fresh."""
        a = self.validate(arch)
        r = self.resolutions[rng.integers(len(self.resolutions))] if rng.random() < prob else a["r"]
        d = [DEPTHS[rng.integers(len(DEPTHS))] if rng.random() < prob else v for v in a["d"]]
        k, e = list(a["k"]), list(a["e"])
        for slot in range(self.n_slots):
            fresh = self._active(d, slot) and not self._active(a["d"], slot)
            if fresh or rng.random() < prob:
                k[slot] = KERNELS[rng.integers(len(KERNELS))]
            if fresh or rng.random() < prob:
                e[slot] = EXPANDS[rng.integers(len(EXPANDS))]
        return self._canonical(r, d, k, e)

    def crossover(self, a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
        """Uniform crossover; a used slot inherits from a parent that uses it (sampled if neither does)."""
        pa, pb = self.validate(a), self.validate(b)
        r = pa["r"] if rng.random() < 0.5 else pb["r"]
        d = [va if rng.random() < 0.5 else vb for va, vb in zip(pa["d"], pb["d"], strict=True)]
        k, e = [min(KERNELS)] * self.n_slots, [min(EXPANDS)] * self.n_slots
        for slot in range(self.n_slots):
            if not self._active(d, slot):
                continue
            donors = [p for p in (pa, pb) if self._active(p["d"], slot)]
            if donors:
                k[slot] = donors[rng.integers(len(donors))]["k"][slot]
                e[slot] = donors[rng.integers(len(donors))]["e"][slot]
            else:
                k[slot] = KERNELS[rng.integers(len(KERNELS))]
                e[slot] = EXPANDS[rng.integers(len(EXPANDS))]
        return self._canonical(r, d, k, e)

    # --- structure ----------------------------------------------------------------------
    def blocks(self, arch: Arch) -> list[tuple[int, int]]:
        """(stage, block index) of every block the architecture uses, in order."""
        a = self.validate(arch)
        return [(s, j) for s in range(self.n_stages) for j in range(a["d"][s])]

    def ops(self, arch: Arch) -> list[OpKey]:
        """Op keys from stem to classifier: stem conv, first block, elastic blocks, final expand
        conv, global pool, feature-mix conv, classifier."""
        a = self.validate(arch)
        r = a["r"]
        blocks = [self._slot_key(r, s, j, a["k"][s * MAX_DEPTH + j], a["e"][s * MAX_DEPTH + j])
                  for s, j in self.blocks(a)]
        return self._stem_keys(r) + blocks + self._head_keys(r)

    def all_ops(self) -> list[OpKey]:
        """Every op key of any subnet at any of the space's resolutions (sorted, no duplicates)."""
        keys: set[OpKey] = set()
        for r in self.resolutions:
            keys.update(self._stem_keys(r))
            keys.update(self._head_keys(r))
            for s in range(self.n_stages):
                for j in range(MAX_DEPTH):
                    keys.update(self._slot_key(r, s, j, k, e) for k in KERNELS for e in EXPANDS)
        return sorted(keys)

    def _geometry(self, r: int) -> tuple[int, list[int]]:
        """Spatial size after the stem, and the size entering each stage (depth never changes them)."""
        h = conv_out_size(r, self.layout.stem_stride)
        sizes = []
        for stage in self.layout.stages:
            sizes.append(h)
            h = conv_out_size(h, stage.stride)
        return h, sizes

    def _stem_keys(self, r: int) -> list[OpKey]:
        h = conv_out_size(r, self.layout.stem_stride)
        stem = OpSpec("conv", (self.in_channels, r, r), (self.stem_width, h, h), kernel=3,
                      stride=self.layout.stem_stride, act="hs")
        return [stem.key, _block_key(self.stem_width, h, self.first_block_width, 3, 1, 1, False, "relu")]

    def _slot_key(self, r: int, s: int, j: int, k: int, e: int) -> OpKey:
        stage = self.layout.stages[s]
        h = self._geometry(r)[1][s]
        if j == 0:
            cin = self.stage_widths[s - 1] if s > 0 else self.first_block_width
            return _block_key(cin, h, self.stage_widths[s], k, e, stage.stride, stage.se, stage.act)
        h = conv_out_size(h, stage.stride)
        return _block_key(self.stage_widths[s], h, self.stage_widths[s], k, e, 1, stage.se, stage.act)

    def _head_keys(self, r: int) -> list[OpKey]:
        h = self._geometry(r)[0]
        c, f = self.stage_widths[-1], self.final_expand_width
        return [
            OpSpec("conv", (c, h, h), (f, h, h), kernel=1, act="hs").key,
            OpSpec("pool", (f, h, h), (f, 1, 1)).key,
            OpSpec("conv", (f, 1, 1), (self.feature_mix_width, 1, 1), kernel=1, act="hs", bn=False).key,
            OpSpec("linear", (self.feature_mix_width, 1, 1), (self.num_classes,)).key,
        ]

    # --- modules and cost ---------------------------------------------------------------
    def build_op(self, key: OpKey) -> tuple[nn.Module, tuple[int, ...]]:
        """Standalone module (random weights, eval mode) for an op key, and its input shape (C,H,W)."""
        return build_op_module(key)

    def build(self, arch: Arch) -> nn.Sequential:
        """Plain network with random weights: exactly `build_op(k)` for k in `ops(arch)`, in order."""
        return nn.Sequential(*[build_op_module(k)[0] for k in self.ops(arch)]).eval()

    def params(self, arch: Arch) -> int:
        """Trainable parameters of the subnet (conv/linear weights and biases, BN scale and shift)."""
        return sum(op_params(k) for k in self.ops(arch))

    def flops(self, arch: Arch) -> int:
        """Multiply-accumulates (MACs) of the subnet's conv and linear layers for one image."""
        return sum(op_macs(k) for k in self.ops(arch))


def _block_key(cin: int, h: int, cout: int, k: int, e: int, stride: int, se: bool, act: str) -> OpKey:
    ho = conv_out_size(h, stride)
    return OpSpec("mbconv", (cin, h, h), (cout, ho, ho), kernel=k, expand=e, stride=stride, se=se, act=act,
                  residual=stride == 1 and cin == cout).key


def _check_resolutions(resolutions, min_resolution: int) -> tuple[int, ...]:
    if isinstance(resolutions, (int, np.integer)):
        resolutions = [resolutions]
    if not isinstance(resolutions, (list, tuple)) or not resolutions:
        raise InputError(f"resolutions must be a non-empty list of integers, got {resolutions!r}",
                         field="resolutions")
    for r in resolutions:
        if not _is_int(r) or not min_resolution <= r <= 1024:
            raise InputError(f"each resolution must be an integer in [{min_resolution}, 1024], got {r!r}",
                             field="resolutions")
    return tuple(sorted({int(r) for r in resolutions}))


OPTIONS = ("resolutions", "width_mult", "num_classes", "in_channels")


def _reject_unknown(name: str, unknown: dict) -> None:
    if unknown:
        raise InputError(f"unknown option(s) {', '.join(sorted(unknown))} for space '{name}'; "
                         f"known: {', '.join(OPTIONS)}", field=sorted(unknown)[0])


@register_space("mbv3")
def mbv3_space(
    resolutions=(160, 176, 192, 208, 224), width_mult: float = 1.0, num_classes: int = 1000, in_channels: int = 3,
    **unknown,
) -> ElasticMobileNetSpace:
    """OFA's MobileNetV3 space: 5 elastic stages (24, 40, 80, 112, 160 channels x width_mult)."""
    _reject_unknown("mbv3", unknown)
    return ElasticMobileNetSpace("mbv3", MBV3_LAYOUT, resolutions, width_mult, num_classes, in_channels,
                                 min_resolution=32)


@register_space("mbv3-small-input")
def mbv3_small_input_space(
    resolutions=(20, 24, 28), width_mult: float = 0.5, num_classes: int = 10, in_channels: int = 1, **unknown
) -> ElasticMobileNetSpace:
    """MobileNetV3 elastic stages for 20-32 px inputs (16, 24, 40, 64, 96 channels x width_mult).

    The defaults (half width, 20-28 px) train on the shipped Fashion-MNIST subset in minutes on
    a 2-core CPU; `width_mult=1.0, resolutions=(24, 28, 32)` suits CIFAR-10.
    """
    _reject_unknown("mbv3-small-input", unknown)
    return ElasticMobileNetSpace("mbv3-small-input", SMALL_INPUT_LAYOUT, resolutions, width_mult, num_classes,
                                 in_channels, min_resolution=8)
