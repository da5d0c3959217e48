"""The once-for-all supernet of an elastic MobileNetV3 space, subnet extraction, BN recalibration."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from hwnas.errors import InputError
from hwnas.protocols import SupernetSpaceLike, check_protocol
from hwnas.space.base import Arch, SearchSpace
from hwnas.space.layers import Classifier, ConvLayer, MBConv
from hwnas.space.mbv3 import EXPANDS, KERNELS, MAX_DEPTH, ElasticMobileNetSpace
from hwnas.space.spec_space import SpecSpace
from hwnas.supernet.dynamic import DynamicMBConv
from hwnas.supernet.elastic import SpecSupernet


def resize_input(x: torch.Tensor, r: int) -> torch.Tensor:
    """Resize a batch (N, C, H, W) to r x r (bilinear, align_corners=False); unchanged if already r x r."""
    if x.dim() != 4:
        raise InputError(f"expected a batch of images (N, C, H, W), got shape {tuple(x.shape)}", field="input")
    if x.shape[-2:] == (r, r):
        return x
    return F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)


class Supernet(nn.Module):
    """Weight-sharing network of an elastic MobileNetV3 space; `set_active(arch)` picks the subnet
    that `forward` runs. The input must already be at the subnet's resolution (see `resize_input`)."""

    def __init__(self, space: ElasticMobileNetSpace):
        super().__init__()
        self.space = space
        layout = space.layout
        self.stem = ConvLayer(space.in_channels, space.stem_width, 3, layout.stem_stride, "hs")
        self.first_block = MBConv(space.stem_width, space.first_block_width, 3, 1, 1, False, "relu",
                                  residual=space.stem_width == space.first_block_width)
        stages = []
        cin = space.first_block_width
        for stage, width in zip(layout.stages, space.stage_widths, strict=True):
            blocks = []
            for j in range(MAX_DEPTH):
                blocks.append(DynamicMBConv(cin, width, KERNELS, EXPANDS, stage.stride if j == 0 else 1,
                                            stage.se, stage.act))
                cin = width
            stages.append(nn.ModuleList(blocks))
        self.stages = nn.ModuleList(stages)
        self.final_expand = ConvLayer(cin, space.final_expand_width, 1, 1, "hs")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_mix = ConvLayer(space.final_expand_width, space.feature_mix_width, 1, 1, "hs", bn=False)
        self.classifier = Classifier(space.feature_mix_width, space.num_classes)
        _init_weights(self)
        self.active_arch: Arch = {}
        self.set_active(space.largest())

    def config(self) -> dict:
        """The space's config: `build_supernet(get_space(**cfg))` rebuilds this network's structure."""
        return self.space.config()

    def set_active(self, arch: Arch) -> None:
        """Select the subnet `forward` runs (InputError if `arch` is not in the space)."""
        arch = self.space.validate(arch)
        for s, stage in enumerate(self.stages):
            for j, block in enumerate(stage):
                slot = s * MAX_DEPTH + j
                block.set_active(arch["k"][slot], arch["e"][slot])
        self.active_arch = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_block(self.stem(x))
        for stage, depth in zip(self.stages, self.active_arch["d"], strict=True):
            for block in stage[:depth]:
                x = block(x)
        return self.classifier(self.feature_mix(self.pool(self.final_expand(x))))

    @torch.no_grad()
    def extract(self, arch: Arch) -> nn.Module:
        """A standalone copy of subnet `arch`: a `torch.fx.GraphModule` made of standard torch.nn
        layers only, with the shared weights copied, on the supernet's device and in its train/eval
        mode. Its state_dict loads into `space.build(arch)`; the supernet's active arch is unchanged."""
        arch = self.space.validate(arch)
        plain = self.space.build(arch)
        plain[0].load_state_dict(self.stem.state_dict())
        plain[1].load_state_dict(self.first_block.state_dict())
        i = 2
        for s, j in self.space.blocks(arch):
            slot = s * MAX_DEPTH + j
            plain[i].load_state_dict(self.stages[s][j].active_state_dict(arch["k"][slot], arch["e"][slot]))
            i += 1
        plain[i].load_state_dict(self.final_expand.state_dict())
        plain[i + 2].load_state_dict(self.feature_mix.state_dict())
        plain[i + 3].load_state_dict(self.classifier.state_dict())
        graph = torch.fx.symbolic_trace(plain)
        graph.train(self.training)
        return graph.to(self.classifier.linear.weight.device)

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Reorder every elastic block's expanded channels by importance; the largest subnet is unchanged."""
        for stage in self.stages:
            for block in stage:
                block.sort_channels()


def build_supernet(space: SearchSpace) -> Supernet | SpecSupernet:
    """The weight-sharing supernet of a space: an elastic MobileNetV3 space (`mbv3`,
    `mbv3-small-input`) or any space written as a spec (`hwnas.space.spec`)."""
    if not isinstance(space, SearchSpace):  # a plugin's object: name what it lacks
        check_protocol(space, SupernetSpaceLike, what=f"space '{getattr(space, 'name', space)}'", field="space")
    if isinstance(space, SpecSpace):
        return SpecSupernet(space)
    if not isinstance(space, ElasticMobileNetSpace):
        raise InputError(f"space '{getattr(space, 'name', space)}' has no weight-sharing supernet; "
                         "use an elastic MobileNetV3 space (mbv3, mbv3-small-input) or a space written as a "
                         "spec (a YAML file, or a built-in spec such as resnet, chain, nb201-supernet)",
                         field="space")
    return Supernet(space)


def _init_weights(model: nn.Module) -> None:
    # OFA's 'he_fout' init: conv N(0, sqrt(2 / (k*k*out/groups))), BN (1, 0), linear U(+-1/sqrt(in)), zero bias
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.in_features)
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable, arch: Arch | None = None) -> None:
    """Reset every BatchNorm's running statistics and re-estimate them as the plain average over
    `batches` (momentum None). `batches` yields tensors (or (x, y) pairs). With `arch`, `model`
    must be a Supernet: that subnet is made active and inputs are resized to its resolution.
    Recalibrating a supernet overwrites the statistics it shares between subnets."""
    if arch is not None:
        if not isinstance(model, (Supernet, SpecSupernet)):
            raise InputError("an arch can only be given with a Supernet", field="arch")
        model.set_active(arch)
    resolution = model.active_arch["r"] if isinstance(model, (Supernet, SpecSupernet)) else None
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    was_training = model.training
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    seen = 0
    try:
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            if resolution is not None:
                x = resize_input(x, resolution)
            model(x)
            seen += 1
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
        model.train(was_training)
    if seen == 0:
        raise InputError("no batches to recalibrate BatchNorm statistics on", field="batches")

