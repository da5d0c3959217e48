"""Weight-sharing layers: each holds the weights of its largest variant and runs a smaller one.

- kernel: the centre of the largest kernel, passed through OFA's per-layer kernel transform
  matrices (7x7 -> 5x5 -> 3x3, initialised to identity, learned during training);
- width: the first channels (`sort_channels` moves the important ones first);
- depth is handled by the network (the first d blocks of a stage run).

`active_state_dict()` gives the weights of the active variant under the parameter names of
the plain module in `hwnas.space.layers` that the same op key builds, so a subnet is
extracted by loading these into `space.build(arch)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.space.layers import expanded_channels, se_channels


class DynamicBatchNorm2d(nn.Module):
    """BatchNorm over the first c channels of a shared BatchNorm2d (statistics shared too)."""

    def __init__(self, max_channels: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(max_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn, c = self.bn, x.size(1)
        if c == bn.num_features:
            return bn(x)
        # same logic as nn.BatchNorm2d, on views of the first c entries so updates reach the shared buffers
        factor = 0.0
        if bn.training and bn.track_running_stats:
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        use_batch_stats = bn.training or not bn.track_running_stats
        return F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c],
                            use_batch_stats, factor, bn.eps)

    def active_state_dict(self, c: int, prefix: str) -> dict[str, torch.Tensor]:
        bn = self.bn
        return {
            f"{prefix}weight": bn.weight[:c], f"{prefix}bias": bn.bias[:c],
            f"{prefix}running_mean": bn.running_mean[:c], f"{prefix}running_var": bn.running_var[:c],
            f"{prefix}num_batches_tracked": bn.num_batches_tracked,
        }

    def permute(self, order: torch.Tensor) -> None:
        bn = self.bn
        for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
            _permute(t, order)


class DynamicPointConv2d(nn.Module):
    """1x1 conv without bias: the first `in` input and first `out` output channels of the largest weight."""

    def __init__(self, max_in: int, max_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_out, max_in, 1, 1))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def active_weight(self, cin: int, cout: int) -> torch.Tensor:
        return self.weight[:cout, :cin]

    def forward(self, x: torch.Tensor, cout: int) -> torch.Tensor:
        return F.conv2d(x, self.active_weight(x.size(1), cout))


def kernel_transforms(kernel_sizes: tuple[int, ...]) -> nn.ParameterDict:
    """OFA's kernel transform matrices, one per step down (e.g. 7->5, 5->3), starting as identity."""
    return nn.ParameterDict({
        f"{big}to{small}": nn.Parameter(torch.eye(small * small))
        for big, small in zip(kernel_sizes[:0:-1], kernel_sizes[-2::-1], strict=True)
    })


def transformed_kernel(weight: torch.Tensor, kernel_sizes: tuple[int, ...], transforms: nn.ParameterDict,
                       kernel: int) -> torch.Tensor:
    """The `kernel` x `kernel` weight of a conv holding the largest kernel: its centre, passed
    through the transforms step by step (the same matrix for every input and output channel)."""
    if kernel not in kernel_sizes:
        raise ValueError(f"kernel {kernel} not one of {kernel_sizes}")
    out_c, in_c = weight.shape[:2]
    for big, small in zip(kernel_sizes[:0:-1], kernel_sizes[-2::-1], strict=True):
        if big <= kernel:
            break
        start = (big - small) // 2
        crop = weight[:, :, start : start + small, start : start + small].reshape(out_c * in_c, small * small)
        weight = F.linear(crop, transforms[f"{big}to{small}"]).reshape(out_c, in_c, small, small)
    return weight


class DynamicDepthwiseConv2d(nn.Module):
    """Depthwise conv with elastic kernel size (OFA's transformed centre crop) and elastic width."""

    def __init__(self, max_channels: int, kernel_sizes: tuple[int, ...], stride: int):
        super().__init__()
        self.kernel_sizes = tuple(sorted(kernel_sizes))
        self.max_kernel = self.kernel_sizes[-1]
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(max_channels, 1, self.max_kernel, self.max_kernel))
        # He init over the fan-out of one group (k*k), so the signal keeps its scale
        nn.init.normal_(self.weight, 0.0, (2.0 / self.max_kernel**2) ** 0.5)
        # one transform per step down (e.g. 7->5, 5->3), shared by all channels, starting as identity
        self.transforms = kernel_transforms(self.kernel_sizes)

    def active_weight(self, channels: int, kernel: int) -> torch.Tensor:
        return transformed_kernel(self.weight[:channels], self.kernel_sizes, self.transforms, kernel)

    def forward(self, x: torch.Tensor, kernel: int) -> torch.Tensor:
        c = x.size(1)
        return F.conv2d(x, self.active_weight(c, kernel), None, self.stride, kernel // 2, 1, c)


class DynamicSqueezeExcite(nn.Module):
    """Squeeze-and-excite over the first c channels; squeeze width follows c (as OFA)."""

    def __init__(self, max_channels: int):
        super().__init__()
        max_squeeze = se_channels(max_channels)
        self.reduce = nn.Conv2d(max_channels, max_squeeze, 1, bias=True)
        self.expand = nn.Conv2d(max_squeeze, max_channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.size(1)
        sq = se_channels(c)
        y = x.mean((2, 3), keepdim=True)
        y = F.relu(F.conv2d(y, self.reduce.weight[:sq, :c], self.reduce.bias[:sq]))
        y = F.hardsigmoid(F.conv2d(y, self.expand.weight[:c, :sq], self.expand.bias[:c]))
        return x * y

    def active_state_dict(self, c: int, prefix: str) -> dict[str, torch.Tensor]:
        sq = se_channels(c)
        return {
            f"{prefix}reduce.weight": self.reduce.weight[:sq, :c], f"{prefix}reduce.bias": self.reduce.bias[:sq],
            f"{prefix}expand.weight": self.expand.weight[:c, :sq], f"{prefix}expand.bias": self.expand.bias[:c],
        }


def _act(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "relu":
        return F.relu(x)
    if name == "relu6":
        return F.relu6(x)
    if name == "hs":
        return F.hardswish(x)
    if name == "silu":
        return F.silu(x)
    return x


class DynamicMBConv(nn.Module):
    """Inverted-bottleneck block with elastic kernel and expand ratio (fixed input/output width)."""

    def __init__(self, cin: int, cout: int, kernels: tuple[int, ...], expands: tuple[int, ...], stride: int,
                 se: bool, act: str):
        super().__init__()
        self.cin, self.cout, self.stride, self.act = cin, cout, stride, act
        self.kernels, self.expands = tuple(sorted(kernels)), tuple(sorted(expands))
        self.residual = stride == 1 and cin == cout
        self.max_mid = expanded_channels(cin, max(expands))
        self.expand_conv = DynamicPointConv2d(cin, self.max_mid)
        self.expand_bn = DynamicBatchNorm2d(self.max_mid)
        self.depthwise_conv = DynamicDepthwiseConv2d(self.max_mid, self.kernels, stride)
        self.depthwise_bn = DynamicBatchNorm2d(self.max_mid)
        self.se = DynamicSqueezeExcite(self.max_mid) if se else None
        self.project_conv = DynamicPointConv2d(self.max_mid, cout)
        self.project_bn = DynamicBatchNorm2d(cout)
        self.active_kernel, self.active_expand = max(self.kernels), max(self.expands)

    def set_active(self, kernel: int, expand: int) -> None:
        if kernel not in self.kernels or expand not in self.expands:
            raise ValueError(f"kernel {kernel} / expand {expand} not in {self.kernels} / {self.expands}")
        self.active_kernel, self.active_expand = kernel, expand

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mid = expanded_channels(self.cin, self.active_expand)
        y = _act(self.act, self.expand_bn(self.expand_conv(x, mid)))
        y = _act(self.act, self.depthwise_bn(self.depthwise_conv(y, self.active_kernel)))
        if self.se is not None:
            y = self.se(y)
        y = self.project_bn(self.project_conv(y, self.cout))
        return x + y if self.residual else y

    @torch.no_grad()
    def active_state_dict(self, kernel: int, expand: int) -> dict[str, torch.Tensor]:
        """Weights of the (kernel, expand) variant, named as in `hwnas.space.layers.MBConv`."""
        mid = expanded_channels(self.cin, expand)
        out = {"expand.conv.weight": self.expand_conv.active_weight(self.cin, mid)}
        out.update(self.expand_bn.active_state_dict(mid, "expand.bn."))
        out["depthwise.conv.weight"] = self.depthwise_conv.active_weight(mid, kernel)
        out.update(self.depthwise_bn.active_state_dict(mid, "depthwise.bn."))
        if self.se is not None:
            out.update(self.se.active_state_dict(mid, "se."))
        out["project.conv.weight"] = self.project_conv.active_weight(mid, self.cout)
        out.update(self.project_bn.active_state_dict(self.cout, "project.bn."))
        return {k: v.detach().clone() for k, v in out.items()}

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Reorder the expanded channels by importance (L1 norm of their projection weights), most
        important first, so smaller expand ratios keep them. The largest variant computes the same
        function before and after; the SE squeeze channels are sorted the same way."""
        importance = self.project_conv.weight.abs().sum(dim=(0, 2, 3))
        order = torch.argsort(importance, descending=True)
        _permute(self.project_conv.weight, order, dim=1)
        _permute(self.depthwise_conv.weight, order)
        self.depthwise_bn.permute(order)
        _permute(self.expand_conv.weight, order)
        self.expand_bn.permute(order)
        if self.se is not None:
            se = self.se
            _permute(se.reduce.weight, order, dim=1)
            _permute(se.expand.weight, order)
            _permute(se.expand.bias, order)
            sq_order = torch.argsort(se.expand.weight.abs().sum(dim=(0, 2, 3)), descending=True)
            _permute(se.expand.weight, sq_order, dim=1)
            _permute(se.reduce.weight, sq_order)
            _permute(se.reduce.bias, sq_order)


def _permute(tensor: torch.Tensor, order: torch.Tensor, dim: int = 0) -> None:
    # in place, so parameter storage (optimizer state, DDP buckets, memory format) stays valid
    tensor.data.copy_(tensor.data.index_select(dim, order))
