"""Elastic MobileNetV3 search spaces (once-for-all style), configured by their spec files.

Two registered spaces share one structure: a fixed stem and first block, elastic stages of
inverted-bottleneck blocks (depth, kernel and expand ratio choices shared by every stage) and a
fixed head. Their layouts, choices and defaults are the built-in specs (`hwnas/space/specs/`):

- ``mbv3`` (mbv3.yaml): OFA's MobileNetV3 space for ImageNet-sized inputs (resolutions 160-224).
- ``mbv3-small-input`` (mbv3-small-input.yaml): the same elastic stages with a stride-1 stem and a
  narrower head, for 20-32 px inputs (Fashion-MNIST, CIFAR-10).

The generic spec machinery builds the same networks from those files (the same op keys and, given
the same weights, the same outputs); this class keeps OFA's architecture dict, encoding and supernet
parameter names, which latency tables, checkpoints and accuracy predictors store.

An architecture is ``{"r": int, "d": [5 ints], "k": [20 ints], "e": [20 ints]}``: 20
block slots (5 stages x 4); slots beyond a stage's depth are unused and set to the smallest
choice in canonical form, so the encoding is fixed-length and lossless.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from hwnas.errors import InputError
from hwnas.space.base import Arch, OpKey, SearchSpace, register_space
from hwnas.space.catalog import builtin_spec_path
from hwnas.space.layers import OpSpec, build_op_module, conv_out_size, op_macs, op_params
from hwnas.space.spec import SpaceSpec, load_spec


@dataclass(frozen=True)
class StageLayout:
    """One elastic stage: output width (before the width multiplier), first-block stride, SE, activation."""

    width: int
    stride: int
    se: bool
    act: str


@dataclass(frozen=True)
class NetworkLayout:
    """The fixed parts of the network and its stages (base widths, before the width multiplier), and
    the choices every elastic stage shares."""

    stem_width: int
    stem_stride: int
    first_block_width: int
    stages: tuple[StageLayout, ...]
    final_expand_width: int
    feature_mix_width: int
    depths: tuple[int, ...]
    kernels: tuple[int, ...]
    expands: tuple[int, ...]


def mobilenet_layout(spec: SpaceSpec) -> NetworkLayout:
    """The MobileNetV3 layout a spec describes, or InputError naming the stage that does not fit it:
    a conv stem (kernel 3, h-swish), a fixed mbconv first block (kernel 3, expand 1, stride 1, ReLU),
    elastic mbconv stages of fixed width sharing one set of depth / kernel / expand choices, a fixed
    1x1 conv (h-swish) and a head conv (h-swish, no dropout)."""
    where = spec.source or spec.name

    def refuse(key: str, message: str) -> InputError:
        return InputError(f"not a MobileNetV3 layout: {message}", path=where, field=key)

    stem, stages = spec.stem, spec.stages
    if stem.block != "conv" or stem.kernel != (3,) or len(stem.width) != 1 or stem.act != "hs":
        raise refuse("stem", "the stem is one fixed 3x3 conv with h-swish")
    if len(stages) < 3:
        raise refuse("stages", "a first block, elastic stages and a final 1x1 conv")
    first, elastic, final = stages[0], stages[1:-1], stages[-1]
    if (first.block != "mbconv" or first.depth != (1,) or first.kernel != (3,) or first.expand != (1,)
            or first.stride != 1 or first.se or first.act != "relu" or len(first.width) != 1):
        raise refuse("stages[0]", "the first block is one fixed mbconv (kernel 3, expand 1, stride 1, ReLU)")
    choices = {(st.depth, st.kernel, st.expand) for st in elastic}
    for i, st in enumerate(elastic, start=1):
        if st.block != "mbconv" or len(st.width) != 1 or len(choices) != 1 or not all(e == int(e) for e in st.expand):
            raise refuse(f"stages[{i}]", "elastic stages are mbconv stages of fixed width sharing one set of "
                         "depth / kernel / integer expand choices")
    if (final.block != "conv" or final.kernel != (1,) or final.depth != (1,) or len(final.width) != 1
            or final.act != "hs"):
        raise refuse(f"stages[{len(stages) - 1}]", "the last stage is one fixed 1x1 conv with h-swish")
    if not spec.head.width or spec.head.act != "hs" or spec.head.dropout:
        raise refuse("head", "the head is a 1x1 conv of fixed width with h-swish and no dropout")
    depths, kernels, expands = choices.pop()
    return NetworkLayout(
        stem_width=stem.width[0], stem_stride=stem.stride, first_block_width=first.width[0],
        stages=tuple(StageLayout(st.width[0], st.stride, st.se, st.act) for st in elastic),
        final_expand_width=final.width[0], feature_mix_width=spec.head.width,
        depths=tuple(depths), kernels=tuple(kernels), expands=tuple(int(e) for e in expands))


MBV3_SPEC = load_spec(builtin_spec_path("mbv3"))
SMALL_INPUT_SPEC = load_spec(builtin_spec_path("mbv3-small-input"))
MBV3_LAYOUT = mobilenet_layout(MBV3_SPEC)
SMALL_INPUT_LAYOUT = mobilenet_layout(SMALL_INPUT_SPEC)
# the choices of the built-in layouts (importers that predate per-space choices)
DEPTHS, KERNELS, EXPANDS = MBV3_LAYOUT.depths, MBV3_LAYOUT.kernels, MBV3_LAYOUT.expands
MAX_DEPTH = max(DEPTHS)
if (SMALL_INPUT_LAYOUT.depths, SMALL_INPUT_LAYOUT.kernels, SMALL_INPUT_LAYOUT.expands) != (DEPTHS, KERNELS, EXPANDS):
    raise InputError("the MobileNetV3 spaces share one set of depth / kernel / expand choices",
                     path=SMALL_INPUT_SPEC.source, field="stages")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


class ElasticMobileNetSpace(SearchSpace):
    """Elastic depth / kernel / expand ratio over a MobileNetV3 layout, at a set of resolutions."""

    depths = DEPTHS
    kernels = KERNELS
    expands = EXPANDS

    def __init__(self, spec: SpaceSpec, resolutions=None, width_mult: float | None = None,
                 num_classes: int | None = None, in_channels: int | None = None):
        """The space of a MobileNetV3-layout spec; the options override the spec's input, classes and
        width multiplier (a resolution must be at least the total stride)."""
        layout = mobilenet_layout(spec)
        if (layout.depths, layout.kernels, layout.expands) != (DEPTHS, KERNELS, EXPANDS):
            raise InputError(f"elastic stages choose depth from {list(DEPTHS)}, kernel from {list(KERNELS)} and "
                             f"expand ratio from {list(EXPANDS)}", path=spec.source, field="stages")
        resolutions = spec.input.resolutions if resolutions is None else resolutions
        width_mult = spec.width_mult if width_mult is None else width_mult
        num_classes = spec.classes if num_classes is None else num_classes
        in_channels = spec.input.channels if in_channels is None else in_channels
        self.name = spec.name
        self.layout = layout
        total_stride = layout.stem_stride * int(np.prod([st.stride for st in layout.stages]))
        self.resolutions = _check_resolutions(resolutions, total_stride)
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not 0.1 <= width_mult <= 4:
            raise InputError(f"width_mult must be a number in [0.1, 4], got {width_mult!r}", field="width_mult")
        if not _is_int(num_classes) or num_classes < 1:
            raise InputError(f"num_classes must be a positive integer, got {num_classes!r}", field="num_classes")
        if not _is_int(in_channels) or in_channels < 1:
            raise InputError(f"in_channels must be a positive integer, got {in_channels!r}", field="in_channels")
        self.width_mult = float(width_mult)
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        # the spec of exactly this space (the generic spec machinery builds the same networks from it)
        self.spec = spec.with_input(resolutions=list(self.resolutions), channels=self.in_channels,
                                    classes=self.num_classes, width_mult=self.width_mult)
        self.n_stages = len(layout.stages)
        self.n_slots = self.n_stages * MAX_DEPTH
        # channel widths after the width multiplier (the spec's rounding)
        width = self.spec.width
        self.stem_width = width(layout.stem_width)
        self.first_block_width = width(layout.first_block_width)
        self.stage_widths = [width(s.width) for s in layout.stages]
        self.final_expand_width = width(layout.final_expand_width)
        self.feature_mix_width = width(layout.feature_mix_width)

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

    # --- slot decomposition: what cost tables over choices read (estimate.features,
    # search.differentiable); a space that has these three has a subnet's op keys as the fixed ones
    # plus one per block slot in use, each a function of the slot's own choices only ------------
    def fixed_ops(self, r: int) -> list[OpKey]:
        """The op keys every subnet at resolution `r` has (stem, first block, head)."""
        return self._stem_keys(r) + self._head_keys(r)

    def slot_op(self, r: int, slot: int, kernel: int, expand: int) -> OpKey:
        """The op key of block slot `slot` (stage slot // max depth) with these choices at resolution `r`."""
        return self._slot_key(r, slot // MAX_DEPTH, slot % MAX_DEPTH, kernel, expand)

    def stage_sizes(self, r: int) -> list[int]:
        """The spatial size entering each elastic stage at resolution `r` (depth never changes them)."""
        return self._geometry(r)[1]

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
    """Sorted distinct resolutions, each at least `min_resolution` (the total stride)."""
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
def mbv3_space(resolutions=None, width_mult: float | None = None, num_classes: int | None = None,
               in_channels: int | None = None, **unknown) -> ElasticMobileNetSpace:
    """OFA's MobileNetV3 space (specs/mbv3.yaml): 5 elastic stages (24, 40, 80, 112, 160 channels x
    width_mult), 160-224 px, 1000 classes, 3 channels unless the options say otherwise."""
    _reject_unknown("mbv3", unknown)
    return ElasticMobileNetSpace(MBV3_SPEC, resolutions, width_mult, num_classes, in_channels)


@register_space("mbv3-small-input")
def mbv3_small_input_space(resolutions=None, width_mult: float | None = None, num_classes: int | None = None,
                           in_channels: int | None = None, **unknown) -> ElasticMobileNetSpace:
    """MobileNetV3 elastic stages for 20-32 px inputs (specs/mbv3-small-input.yaml: 16, 24, 40, 64, 96
    channels x width_mult).

    The defaults (half width, 20-28 px, 1 channel, 10 classes) train on the shipped Fashion-MNIST
    subset in minutes on a 2-core CPU; `width_mult=1.0, resolutions=(24, 28, 32), in_channels=3`
    suits CIFAR-10.
    """
    _reject_unknown("mbv3-small-input", unknown)
    return ElasticMobileNetSpace(SMALL_INPUT_SPEC, resolutions, width_mult, num_classes, in_channels)
