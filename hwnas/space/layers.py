"""Op keys and the plain torch modules they name.

An op key is a canonical string naming one measurable unit of a network: its type,
input shape (CxHxW), output shape and hyper-parameters, e.g.

    conv|i3x224x224|o16x112x112|k3|s2|bn1|hs          conv + (BN) + activation
    mbconv|i24x56x56|o40x28x28|k5|e4|s2|se1|relu|res0  inverted-bottleneck block
    pool|i960x7x7|o960x1x1                               global average pool
    linear|i1280x1x1|o1000                               flatten + linear classifier

The key alone determines the module (channel counts inside a block are derived from
the input width and the expand ratio), so two networks containing the same key
contain the same computation. `build_op_module(key)` builds it with random weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hwnas.errors import InputError

ACTIVATIONS = ("relu", "hs", "none")
OP_TYPES = ("conv", "mbconv", "pool", "linear")


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of `divisor`, never more than 10 % below it (as OFA)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


def conv_out_size(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded odd-kernel conv (padding k//2): ceil(size / stride)."""
    return (size - 1) // stride + 1


def expanded_channels(in_channels: int, expand: int) -> int:
    """Hidden width of an inverted-bottleneck block (OFA's rule)."""
    return in_channels if expand == 1 else make_divisible(round(in_channels * expand))


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
    expand: int = 1
    se: bool = False
    act: str = "none"
    residual: bool = False
    bn: bool = True

    @property
    def key(self) -> str:
        i = "x".join(map(str, self.in_shape))
        o = "x".join(map(str, self.out_shape))
        if self.kind == "conv":
            return f"conv|i{i}|o{o}|k{self.kernel}|s{self.stride}|bn{int(self.bn)}|{self.act}"
        if self.kind == "mbconv":
            return (
                f"mbconv|i{i}|o{o}|k{self.kernel}|e{self.expand}|s{self.stride}|se{int(self.se)}"
                f"|{self.act}|res{int(self.residual)}"
            )
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
    expected_len = {"conv": 7, "mbconv": 9, "pool": 3, "linear": 3}
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
    elif kind == "mbconv":
        spec = OpSpec(
            "mbconv", i, o, kernel=_int_field(parts[3], "k", key), expand=_int_field(parts[4], "e", key),
            stride=_int_field(parts[5], "s", key), se=bool(_int_field(parts[6], "se", key)),
            act=_act_field(parts[7], key), residual=bool(_int_field(parts[8], "res", key)),
        )
    else:
        spec = OpSpec(kind, i, o)
    _check_shapes(spec, key)
    if spec.key != key:
        raise InputError(f"op key {key!r} is not canonical; canonical form: {spec.key!r}", field="op")
    return spec


def _check_shapes(spec: OpSpec, key: str) -> None:
    def bad(why: str) -> InputError:
        return InputError(f"op key {key!r}: {why}", field="op")

    if spec.kind in ("conv", "mbconv", "pool") and (len(spec.in_shape) != 3 or len(spec.out_shape) != 3):
        raise bad("input and output shapes must be CxHxW")
    if spec.kind in ("conv", "mbconv"):
        if spec.kernel % 2 != 1 or spec.stride < 1 or spec.expand < 1:
            raise bad("kernel must be odd, stride and expand >= 1")
        c, h, w = spec.in_shape
        if spec.out_shape[1:] != (conv_out_size(h, spec.stride), conv_out_size(w, spec.stride)):
            raise bad(f"output size does not follow from input {h}x{w} and stride {spec.stride}")
        if spec.kind == "mbconv" and spec.residual and (spec.stride != 1 or c != spec.out_shape[0]):
            raise bad("a residual block needs stride 1 and equal input and output channels")
    if spec.kind == "pool" and (spec.out_shape != (spec.in_shape[0], 1, 1)):
        raise bad("a global pool maps CxHxW to Cx1x1")
    if spec.kind == "linear" and (len(spec.out_shape) != 1 or spec.in_shape[1:] not in ((), (1, 1))):
        raise bad("a classifier maps C (or Cx1x1) to N")


# --- plain modules (what subnets are made of) -------------------------------------------


def _activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "hs": nn.Hardswish, "none": nn.Identity}[name]()


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

    def __init__(self, cin: int, cout: int, kernel: int, expand: int, stride: int, se: bool, act: str,
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
    elif spec.kind == "pool":
        module = nn.AdaptiveAvgPool2d(1)
    else:
        module = Classifier(cin, cout)
    return module.eval(), spec.in_shape


def op_params(key: str) -> int:
    """Number of trainable parameters of the module an op key names."""
    spec = parse_op_key(key)
    cin, cout = spec.in_shape[0], spec.out_shape[0]
    if spec.kind == "conv":
        return cin * cout * spec.kernel**2 + (2 * cout if spec.bn else 0)
    if spec.kind == "mbconv":
        mid = expanded_channels(cin, spec.expand)
        n = 0 if spec.expand == 1 else cin * mid + 2 * mid
        n += mid * spec.kernel**2 + 2 * mid
        if spec.se:
            sq = se_channels(mid)
            n += mid * sq + sq + sq * mid + mid
        return n + mid * cout + 2 * cout
    if spec.kind == "linear":
        return cin * cout + cout
    return 0


def op_macs(key: str) -> int:
    """Multiply-accumulates of the conv and linear layers of an op (BN, activations, pooling,
    the SE multiply and residual adds are not counted)."""
    spec = parse_op_key(key)
    cin, cout = spec.in_shape[0], spec.out_shape[0]
    if spec.kind == "conv":
        return cin * cout * spec.kernel**2 * spec.out_shape[1] * spec.out_shape[2]
    if spec.kind == "mbconv":
        mid = expanded_channels(cin, spec.expand)
        h, w = spec.in_shape[1:]
        ho, wo = spec.out_shape[1:]
        n = 0 if spec.expand == 1 else cin * mid * h * w
        n += mid * spec.kernel**2 * ho * wo
        if spec.se:
            n += 2 * mid * se_channels(mid)
        return n + mid * cout * ho * wo
    if spec.kind == "linear":
        return cin * cout
    return 0
