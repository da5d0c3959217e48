"""Op keys and the plain torch modules they name.

An op key is a canonical string naming one measurable unit of a network: its type,
input shape (CxHxW), output shape and hyper-parameters, e.g.

    conv|i3x224x224|o16x112x112|k3|s2|bn1|hs          conv + (BN) + activation
    mbconv|i24x56x56|o40x28x28|k5|e4|s2|se1|relu|res0  inverted-bottleneck block
    pool|i960x7x7|o960x1x1                               global average pool
    linear|i1280x1x1|o1000                               flatten + linear classifier
    fmbconv|i24x56x56|o40x28x28|k3|e4|s2|se0|relu|res0 fused inverted bottleneck (kxk expand, 1x1 project)
    basic|i64x56x56|o128x28x28|k3|s2|relu|sc1           ResNet basic block (sc: 1x1-conv shortcut)
    bottleneck|i64x56x56|o256x56x56|k3|e0.25|s1|relu|sc1 ResNet bottleneck (hidden = out x e)
    cellop|i16x32x32|o16x32x32|conv3x3                   one edge of a cell (NAS-Bench-201 style)
    cellsum|i16x32x32|o16x32x32|n3                       a cell node's sum of its n incoming edges
                                                         (n - 1 additions; n0: no edge, the node is zero)

The key alone determines the module (channel counts inside a block are derived from
the input width and the expand ratio), so two networks containing the same key
contain the same computation. `build_op_module(key)` builds it with random weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hwnas.errors import InputError

ACTIVATIONS = ("relu", "relu6", "hs", "silu", "none")
OP_TYPES = ("conv", "mbconv", "fmbconv", "basic", "bottleneck", "cellop", "cellsum", "pool", "linear")
# what an edge of a cell can compute ('none': no edge); convs are ReLU-conv-BN as in NAS-Bench-201
CELL_OPS = ("none", "skip", "conv1x1", "conv3x3", "conv5x5", "avgpool3x3", "maxpool3x3")


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of `divisor`, never more than 10 % below it (as OFA)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


def conv_out_size(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded odd-kernel conv (padding k//2): ceil(size / stride)."""
    return (size - 1) // stride + 1


def expanded_channels(in_channels: int, expand: float) -> int:
    """Hidden width of an inverted-bottleneck block (OFA's rule); of a ResNet bottleneck it is
    `expanded_channels(out_channels, expand)` (OFA's ResNet rule, expand < 1)."""
    return in_channels if expand == 1 else make_divisible(round(in_channels * expand))


def format_number(value: float) -> str:
    """A choice as it appears in an op key: 4 -> '4', 0.25 -> '0.25'."""
    return f"{value:g}"


def se_channels(channels: int) -> int:
    """Squeeze width of a squeeze-and-excite unit (reduction 4, rounded to 8, as OFA)."""
    return make_divisible(channels // 4)


# --- op keys ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OpSpec:
    """A parsed op key."""

    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    kernel: int = 1
    stride: int = 1
    expand: float = 1
    se: bool = False
    act: str = "none"
    residual: bool = False
    bn: bool = True
    shortcut: bool = False  # basic / bottleneck: a 1x1-conv shortcut instead of the identity
    op: str = ""  # cellop: the edge's op
    terms: int = 0  # cellsum: how many edges the node sums

    @property
    def key(self) -> str:
        i = "x".join(map(str, self.in_shape))
        o = "x".join(map(str, self.out_shape))
        if self.kind == "conv":
            return f"conv|i{i}|o{o}|k{self.kernel}|s{self.stride}|bn{int(self.bn)}|{self.act}"
        if self.kind in ("mbconv", "fmbconv"):
            return (
                f"{self.kind}|i{i}|o{o}|k{self.kernel}|e{format_number(self.expand)}|s{self.stride}|se{int(self.se)}"
                f"|{self.act}|res{int(self.residual)}"
            )
        if self.kind == "basic":
            return f"basic|i{i}|o{o}|k{self.kernel}|s{self.stride}|{self.act}|sc{int(self.shortcut)}"
        if self.kind == "bottleneck":
            return (f"bottleneck|i{i}|o{o}|k{self.kernel}|e{format_number(self.expand)}|s{self.stride}"
                    f"|{self.act}|sc{int(self.shortcut)}")
        if self.kind == "cellop":
            return f"cellop|i{i}|o{o}|{self.op}"
        if self.kind == "cellsum":
            return f"cellsum|i{i}|o{o}|n{self.terms}"
        if self.kind == "pool":
            return f"pool|i{i}|o{o}"
        if self.kind == "linear":
            return f"linear|i{i}|o{o}"
        raise ValueError(f"unknown op type {self.kind!r}")


def _shape(text: str, prefix: str, key: str) -> tuple[int, ...]:
    if not text.startswith(prefix):
        raise InputError(f"op key {key!r}: expected '{prefix}CxHxW', got {text!r}", field="op")
    try:
        dims = tuple(int(v) for v in text[len(prefix) :].split("x"))
    except ValueError:
        raise InputError(f"op key {key!r}: bad shape {text!r}, expected e.g. '{prefix}24x56x56'", field="op") from None
    if not dims or any(d <= 0 for d in dims):
        raise InputError(f"op key {key!r}: shape {text!r} must be positive integers", field="op")
    return dims


def _int_field(text: str, prefix: str, key: str) -> int:
    if not text.startswith(prefix) or not text[len(prefix) :].isdigit():
        raise InputError(f"op key {key!r}: expected '{prefix}<int>', got {text!r}", field="op")
    return int(text[len(prefix) :])


def _num_field(text: str, prefix: str, key: str) -> float:
    try:
        value = float(text[len(prefix) :]) if text.startswith(prefix) else None
    except ValueError:
        value = None
    if value is None or not value > 0:
        raise InputError(f"op key {key!r}: expected '{prefix}<positive number>', got {text!r}", field="op")
    return value


def _act_field(text: str, key: str) -> str:
    if text not in ACTIVATIONS:
        raise InputError(f"op key {key!r}: activation {text!r} not one of {ACTIVATIONS}", field="op")
    return text


def parse_op_key(key: str) -> OpSpec:
    """Parse a canonical op key; a malformed key is an InputError naming what was expected."""
    if not isinstance(key, str):
        raise InputError(f"op key must be a string, got {type(key).__name__}", field="op")
    parts = key.split("|")
    kind = parts[0]
    expected_len = {"conv": 7, "mbconv": 9, "fmbconv": 9, "basic": 7, "bottleneck": 8, "cellop": 4, "cellsum": 4,
                    "pool": 3, "linear": 3}
    if kind not in expected_len:
        raise InputError(f"op key {key!r}: unknown op type {kind!r}; known: {', '.join(OP_TYPES)}", field="op")
    if len(parts) != expected_len[kind]:
        raise InputError(f"op key {key!r}: a '{kind}' key has {expected_len[kind]} '|' fields", field="op")
    i, o = _shape(parts[1], "i", key), _shape(parts[2], "o", key)
    if kind == "conv":
        spec = OpSpec(
            "conv", i, o, kernel=_int_field(parts[3], "k", key), stride=_int_field(parts[4], "s", key),
            bn=bool(_int_field(parts[5], "bn", key)), act=_act_field(parts[6], key),
        )
    elif kind in ("mbconv", "fmbconv"):
        spec = OpSpec(
            kind, i, o, kernel=_int_field(parts[3], "k", key), expand=_num_field(parts[4], "e", key),
            stride=_int_field(parts[5], "s", key), se=bool(_int_field(parts[6], "se", key)),
            act=_act_field(parts[7], key), residual=bool(_int_field(parts[8], "res", key)),
        )
    elif kind in ("basic", "bottleneck"):
        expand = _num_field(parts[4], "e", key) if kind == "bottleneck" else 1
        rest = parts[5:] if kind == "bottleneck" else parts[4:]
        spec = OpSpec(
            kind, i, o, kernel=_int_field(parts[3], "k", key), expand=expand, stride=_int_field(rest[0], "s", key),
            act=_act_field(rest[1], key), shortcut=bool(_int_field(rest[2], "sc", key)),
        )
    elif kind == "cellop":
        if parts[3] not in CELL_OPS[1:]:
            raise InputError(f"op key {key!r}: cell op {parts[3]!r} not one of {CELL_OPS[1:]}", field="op")
        spec = OpSpec(kind, i, o, op=parts[3])
    elif kind == "cellsum":
        spec = OpSpec(kind, i, o, terms=_int_field(parts[3], "n", key))
        if spec.terms == 1:
            raise InputError(f"op key {key!r}: a node with one edge adds nothing (n0 or n2 and more)", field="op")
    else:
        spec = OpSpec(kind, i, o)
    _check_shapes(spec, key)
    if spec.key != key:
        raise InputError(f"op key {key!r} is not canonical; canonical form: {spec.key!r}", field="op")
    return spec


def _check_shapes(spec: OpSpec, key: str) -> None:
    def bad(why: str) -> InputError:
        return InputError(f"op key {key!r}: {why}", field="op")

    if spec.kind != "linear" and (len(spec.in_shape) != 3 or len(spec.out_shape) != 3):
        raise bad("input and output shapes must be CxHxW")
    if spec.kind in ("conv", "mbconv", "fmbconv", "basic", "bottleneck"):
        if spec.kernel % 2 != 1 or spec.stride < 1 or (spec.kind != "bottleneck" and spec.expand < 1):
            raise bad("kernel must be odd, stride and expand >= 1")
        c, h, w = spec.in_shape
        if spec.out_shape[1:] != (conv_out_size(h, spec.stride), conv_out_size(w, spec.stride)):
            raise bad(f"output size does not follow from input {h}x{w} and stride {spec.stride}")
        if spec.kind in ("mbconv", "fmbconv") and spec.residual and (spec.stride != 1 or c != spec.out_shape[0]):
            raise bad("a residual block needs stride 1 and equal input and output channels")
        if spec.kind in ("basic", "bottleneck") and spec.shortcut != (spec.stride != 1 or c != spec.out_shape[0]):
            raise bad("a 1x1-conv shortcut is used exactly when the stride or the width changes")
    if spec.kind in ("cellop", "cellsum") and spec.out_shape != spec.in_shape:
        raise bad("a cell edge or node keeps its input's shape")
    if spec.kind == "pool" and (spec.out_shape != (spec.in_shape[0], 1, 1)):
        raise bad("a global pool maps CxHxW to Cx1x1")
    if spec.kind == "linear" and (len(spec.out_shape) != 1 or spec.in_shape[1:] not in ((), (1, 1))):
        raise bad("a classifier maps C (or Cx1x1) to N")


# --- plain modules (what subnets are made of) -------------------------------------------


def _activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "relu6": nn.ReLU6, "hs": nn.Hardswish, "silu": nn.SiLU, "none": nn.Identity}[name]()


class ConvLayer(nn.Module):
    """Conv (no bias) + optional BatchNorm + activation."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, act: str, bn: bool = True, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout) if bn else nn.Identity()
        self.act = _activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """MobileNetV3 squeeze-and-excite: x * hsigmoid(W2 relu(W1 mean(x)))."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeeze, 1, bias=True)
        self.relu = nn.ReLU()
        self.expand = nn.Conv2d(squeeze, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.relu(self.reduce(self.pool(x)))))


class MBConv(nn.Module):
    """Inverted bottleneck: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project (+ identity)."""

    def __init__(self, cin: int, cout: int, kernel: int, expand: float, stride: int, se: bool, act: str,
                 residual: bool):
        super().__init__()
        mid = expanded_channels(cin, expand)
        self.residual = residual
        self.expand = ConvLayer(cin, mid, 1, 1, act) if expand != 1 else nn.Identity()
        self.depthwise = ConvLayer(mid, mid, kernel, stride, act, groups=mid)
        self.se = SqueezeExcite(mid, se_channels(mid)) if se else nn.Identity()
        self.project = ConvLayer(mid, cout, 1, 1, "none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.residual else y


class FusedMBConv(nn.Module):
    """Fused inverted bottleneck (EfficientNetV2): kxk expand conv -> [SE] -> 1x1 project (+ identity)."""

    def __init__(self, cin: int, cout: int, kernel: int, expand: float, stride: int, se: bool, act: str,
                 residual: bool):
        super().__init__()
        mid = expanded_channels(cin, expand)
        self.residual = residual
        self.fused = ConvLayer(cin, mid, kernel, stride, act)
        self.se = SqueezeExcite(mid, se_channels(mid)) if se else nn.Identity()
        self.project = ConvLayer(mid, cout, 1, 1, "none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.fused(x)))
        return x + y if self.residual else y


class ResidualBlock(nn.Module):
    """ResNet block: act(body(x) + shortcut(x)); the shortcut is a 1x1 conv + BN where shape changes."""

    def __init__(self, body: list[nn.Module], shortcut: nn.Module, act: str):
        super().__init__()
        self.body = nn.Sequential(*body)
        self.shortcut = shortcut
        self.act = _activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: int, conv: bool) -> nn.Module:
    return ConvLayer(cin, cout, 1, stride, "none") if conv else nn.Identity()


def basic_block(cin: int, cout: int, kernel: int, stride: int, act: str, shortcut: bool) -> ResidualBlock:
    """ResNet basic block: kxk conv (stride) -> kxk conv, plus the shortcut."""
    return ResidualBlock([ConvLayer(cin, cout, kernel, stride, act), ConvLayer(cout, cout, kernel, 1, "none")],
                         _shortcut(cin, cout, stride, shortcut), act)


def bottleneck_block(cin: int, cout: int, kernel: int, expand: float, stride: int, act: str,
                     shortcut: bool) -> ResidualBlock:
    """ResNet bottleneck: 1x1 -> kxk (stride) -> 1x1 with hidden width `expanded_channels(cout, expand)`."""
    mid = expanded_channels(cout, expand)
    return ResidualBlock([ConvLayer(cin, mid, 1, 1, act), ConvLayer(mid, mid, kernel, stride, act),
                          ConvLayer(mid, cout, 1, 1, "none")], _shortcut(cin, cout, stride, shortcut), act)


class ReLUConvBN(nn.Module):
    """A cell's convolution edge: ReLU -> conv -> BN (NAS-Bench-201's order)."""

    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(channels, channels, kernel, 1, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.relu(x)))


def cell_op_kernel(op: str) -> int:
    """The kernel of a cell's convolution op ('conv3x3' -> 3), 0 for the others."""
    return int(op[4]) if op.startswith("conv") else 0


def cell_op_module(op: str, channels: int) -> nn.Module:
    """The module of one cell edge's op (not 'none')."""
    if op == "skip":
        return nn.Identity()
    if op == "avgpool3x3":
        return nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    if op == "maxpool3x3":
        return nn.MaxPool2d(3, 1, 1)
    return ReLUConvBN(channels, cell_op_kernel(op))


class CellSum(nn.Module):
    """What a cell node computes besides its edges, timed alone: the sum of `terms` inputs (here the one
    input `terms` times: the same n - 1 additions of tensors of that shape), or x * 0 for no input."""

    def __init__(self, terms: int):
        super().__init__()
        self.terms = terms

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.terms == 0:
            return x * 0.0
        out = x
        for _ in range(self.terms - 1):
            out = out + x
        return out


def cell_live_nodes(nodes: int, edges: tuple[tuple[int, int], ...], ops) -> set[int]:
    """The nodes of a cell whose value reaches its output (through edges that are not 'none'). An
    exported graph keeps only these (the rest is dead code), so a subnet has only their edges."""
    live = {nodes - 1}
    for node in range(nodes - 2, 0, -1):
        if any(src == node and dst in live and op != "none" for (src, dst), op in zip(edges, ops, strict=True)):
            live.add(node)
    return live


class Cell(nn.Module):
    """A DAG cell (NAS-Bench-201 style): node 0 is the input, each later node sums its incoming edges'
    ops, the last node is the output; a node with no incoming edge is zero (x * 0, so an exported
    graph keeps its input even when no edge connects it to the output). Only the edges into nodes
    that reach the output are built (`cell_live_nodes`): the others would be dead code."""

    def __init__(self, channels: int, nodes: int, edges: tuple[tuple[int, int], ...], ops: list[str]):
        super().__init__()
        self.nodes, self.edges = nodes, tuple(edges)
        self.live = cell_live_nodes(nodes, self.edges, ops)
        self.ops = nn.ModuleDict({str(i): cell_op_module(op, channels) for i, op in enumerate(ops)
                                  if op != "none" and self.edges[i][1] in self.live})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states: list[torch.Tensor | None] = [x]
        for node in range(1, self.nodes):
            if node not in self.live:
                states.append(None)
                continue
            terms = [self.ops[str(i)](states[src]) for i, (src, dst) in enumerate(self.edges)
                     if dst == node and str(i) in self.ops]
            states.append(sum(terms[1:], terms[0]) if terms else x * 0.0)
        return states[-1]


class Classifier(nn.Module):
    """Flatten + linear layer."""

    def __init__(self, cin: int, classes: int):
        super().__init__()
        self.flatten = nn.Flatten(1)
        self.linear = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.flatten(x))


def build_op_module(key: str) -> tuple[nn.Module, tuple[int, ...]]:
    """The module an op key names (random weights, eval mode) and its input shape without batch."""
    spec = parse_op_key(key)
    cin, cout = spec.in_shape[0], spec.out_shape[0]
    if spec.kind == "conv":
        module: nn.Module = ConvLayer(cin, cout, spec.kernel, spec.stride, spec.act, bn=spec.bn)
    elif spec.kind == "mbconv":
        module = MBConv(cin, cout, spec.kernel, spec.expand, spec.stride, spec.se, spec.act, spec.residual)
    elif spec.kind == "fmbconv":
        module = FusedMBConv(cin, cout, spec.kernel, spec.expand, spec.stride, spec.se, spec.act, spec.residual)
    elif spec.kind == "basic":
        module = basic_block(cin, cout, spec.kernel, spec.stride, spec.act, spec.shortcut)
    elif spec.kind == "bottleneck":
        module = bottleneck_block(cin, cout, spec.kernel, spec.expand, spec.stride, spec.act, spec.shortcut)
    elif spec.kind == "cellop":
        module = cell_op_module(spec.op, cin)
    elif spec.kind == "cellsum":
        module = CellSum(spec.terms)
    elif spec.kind == "pool":
        module = nn.AdaptiveAvgPool2d(1)
    else:
        module = Classifier(cin, cout)
    return module.eval(), spec.in_shape


def _conv_cost(cin: int, cout: int, kernel: int, out_hw: int, groups: int = 1, bn: bool = True) -> tuple[int, int]:
    """(MACs, parameters) of a bias-free conv (+ BN scale and shift)."""
    weights = cin // groups * cout * kernel**2
    return weights * out_hw, weights + (2 * cout if bn else 0)


def _se_cost(mid: int) -> tuple[int, int]:
    sq = se_channels(mid)
    return 2 * mid * sq, mid * sq + sq + sq * mid + mid


def _op_cost(spec: OpSpec) -> tuple[int, int]:
    """(MACs, parameters) of the conv and linear layers of an op (BN, activations, pooling, the SE
    multiply and residual adds cost no MACs)."""
    cin, cout = spec.in_shape[0], spec.out_shape[0]
    hw_in = spec.in_shape[1] * spec.in_shape[2] if len(spec.in_shape) == 3 else 1
    hw = spec.out_shape[1] * spec.out_shape[2] if len(spec.out_shape) == 3 else 1
    parts: list[tuple[int, int]] = []
    if spec.kind == "conv":
        parts.append(_conv_cost(cin, cout, spec.kernel, hw, bn=spec.bn))
    elif spec.kind == "mbconv":
        mid = expanded_channels(cin, spec.expand)
        if spec.expand != 1:
            parts.append(_conv_cost(cin, mid, 1, hw_in))
        parts.append(_conv_cost(mid, mid, spec.kernel, hw, groups=mid))
        parts += [_se_cost(mid)] if spec.se else []
        parts.append(_conv_cost(mid, cout, 1, hw))
    elif spec.kind == "fmbconv":
        mid = expanded_channels(cin, spec.expand)
        parts.append(_conv_cost(cin, mid, spec.kernel, hw))
        parts += [_se_cost(mid)] if spec.se else []
        parts.append(_conv_cost(mid, cout, 1, hw))
    elif spec.kind == "basic":
        parts += [_conv_cost(cin, cout, spec.kernel, hw), _conv_cost(cout, cout, spec.kernel, hw)]
    elif spec.kind == "bottleneck":
        mid = expanded_channels(cout, spec.expand)
        parts += [_conv_cost(cin, mid, 1, hw_in), _conv_cost(mid, mid, spec.kernel, hw), _conv_cost(mid, cout, 1, hw)]
    elif spec.kind == "cellop" and cell_op_kernel(spec.op):
        parts.append(_conv_cost(cin, cin, cell_op_kernel(spec.op), hw))
    elif spec.kind == "linear":
        parts.append((cin * cout, cin * cout + cout))
    if spec.kind in ("basic", "bottleneck") and spec.shortcut:
        parts.append(_conv_cost(cin, cout, 1, hw))
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def op_params(key: str) -> int:
    """Number of trainable parameters of the module an op key names."""
    return _op_cost(parse_op_key(key))[1]


def op_macs(key: str) -> int:
    """Multiply-accumulates of the conv and linear layers of an op (BN, activations, pooling,
    the SE multiply and residual adds are not counted)."""
    return _op_cost(parse_op_key(key))[0]
