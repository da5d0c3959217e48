"""The weight-sharing supernet of any spec space (`hwnas.space.spec_space`).

Every block holds the weights of its largest variant and runs the active one:
- width: the first channels of every weight (`sort_channels` moves the important ones first,
  hidden channels per block and each stage's output channels across every layer that reads or
  writes them);
- kernel: the centre of the largest kernel through once-for-all's kernel transforms;
- depth: the first d blocks of a stage run;
- a cell edge keeps one set of weights per op.

`state(block)` gives the active variant's weights under the names of the plain module the same
block builds (`Block.module`), so `extract` loads them into `space.build(arch)`.
"""

from __future__ import annotations

import math

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from hwnas.space.base import Arch
from hwnas.space.layers import cell_live_nodes, cell_op_kernel, expanded_channels
from hwnas.space.spec_space import Block, SpecSpace
from hwnas.supernet.dynamic import (
    DynamicBatchNorm2d,
    DynamicSqueezeExcite,
    _act,
    _permute,
    kernel_transforms,
    transformed_kernel,
)


class ElasticConv(nn.Module):
    """Conv (no bias) [+ BN] + activation over the first channels of its largest weight, with
    elastic kernel; depthwise when `depthwise` (one input channel per output channel)."""

    def __init__(self, max_in: int, max_out: int, kernels: tuple[int, ...], stride: int, act: str, *,
                 bn: bool = True, depthwise: bool = False):
        super().__init__()
        self.kernels = tuple(sorted(kernels))
        self.stride, self.act, self.depthwise = stride, act, depthwise
        k = self.kernels[-1]
        self.weight = nn.Parameter(torch.empty(max_out, 1 if depthwise else max_in, k, k))
        # OFA's he_fout: N(0, sqrt(2 / (k*k*out/groups)))
        nn.init.normal_(self.weight, 0.0, math.sqrt(2.0 / (k * k * (1 if depthwise else max_out))))
        self.transforms = kernel_transforms(self.kernels)
        self.bn = DynamicBatchNorm2d(max_out) if bn else None

    def active_weight(self, cin: int, cout: int, kernel: int) -> torch.Tensor:
        weight = self.weight[:cout] if self.depthwise else self.weight[:cout, :cin]
        return transformed_kernel(weight, self.kernels, self.transforms, kernel)

    def forward(self, x: torch.Tensor, cout: int, kernel: int) -> torch.Tensor:
        cin = x.size(1)
        cout = cin if self.depthwise else cout
        y = F.conv2d(x, self.active_weight(cin, cout, kernel), None, self.stride, kernel // 2, 1,
                     cin if self.depthwise else 1)
        if self.bn is not None:
            y = self.bn(y)
        return _act(self.act, y)

    def state(self, cin: int, cout: int, kernel: int, prefix: str) -> dict[str, torch.Tensor]:
        """Weights under the names of `hwnas.space.layers.ConvLayer` (conv.weight, bn.*)."""
        cout = cin if self.depthwise else cout
        out = {f"{prefix}conv.weight": self.active_weight(cin, cout, kernel)}
        if self.bn is not None:
            out.update(self.bn.active_state_dict(cout, f"{prefix}bn."))
        return out

    # channel sorting: permute output channels (with BN) or input channels in place
    def permute_out(self, order: torch.Tensor) -> None:
        _permute(self.weight, order)
        if self.bn is not None:
            self.bn.permute(order)

    def permute_in(self, order: torch.Tensor) -> None:
        if self.depthwise:
            self.permute_out(order)
        else:
            _permute(self.weight, order, dim=1)

    def out_importance(self) -> torch.Tensor:
        return self.weight.detach().abs().sum(dim=(1, 2, 3))


def _permute_se(se: DynamicSqueezeExcite, order: torch.Tensor) -> None:
    _permute(se.reduce.weight, order, dim=1)
    _permute(se.expand.weight, order)
    _permute(se.expand.bias, order)


class ElasticBlock(nn.Module):
    """A block with elastic width (in and out), kernel and expand ratio; subclasses name their layers
    as the plain module does. Channel sorting: `permute_input` / `permute_output` reorder every weight
    that reads the block's input channels / writes its output channels; `output_importance` scores
    the output channels (L1 norm of the weights that write them)."""

    def forward(self, x: torch.Tensor, b: Block) -> torch.Tensor:
        raise NotImplementedError

    def state(self, b: Block) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def permute_input(self, order: torch.Tensor) -> None:
        raise NotImplementedError

    def permute_output(self, order: torch.Tensor) -> None:
        raise NotImplementedError

    def output_importance(self) -> torch.Tensor | None:
        return None

    def sort_hidden(self) -> None:
        """Reorder hidden channels by importance (the largest variant computes the same function)."""


class ConvBlock(ElasticBlock):
    def __init__(self, max_in: int, max_out: int, kernels, stride: int, act: str):
        super().__init__()
        self.conv = ElasticConv(max_in, max_out, kernels, stride, act)

    def forward(self, x, b):
        return self.conv(x, b.cout, b.kernel)

    def state(self, b):
        return self.conv.state(b.cin, b.cout, b.kernel, "")

    def permute_input(self, order):
        self.conv.permute_in(order)

    def permute_output(self, order):
        self.conv.permute_out(order)

    def output_importance(self):
        return self.conv.out_importance()


class InvertedBlock(ElasticBlock):
    """mbconv (1x1 expand, kxk depthwise) or fused mbconv (kxk expand), [SE], 1x1 project, identity
    when the shape is kept."""

    def __init__(self, max_in: int, max_out: int, kernels, expands, stride: int, se: bool, act: str, fused: bool):
        super().__init__()
        self.fused = fused
        max_mid = max(expanded_channels(max_in, e) for e in expands)
        if fused:
            self.expand = ElasticConv(max_in, max_mid, kernels, stride, act)
            self.depthwise = None
        else:
            self.expand = ElasticConv(max_in, max_mid, (1,), 1, act) if any(e != 1 for e in expands) else None
            self.depthwise = ElasticConv(max_mid, max_mid, kernels, stride, act, depthwise=True)
        self.se = DynamicSqueezeExcite(max_mid) if se else None
        self.project = ElasticConv(max_mid, max_out, (1,), 1, "none")

    def forward(self, x, b):
        mid = expanded_channels(b.cin, b.expand)
        if self.fused:
            y = self.expand(x, mid, b.kernel)
        else:
            y = self.expand(x, mid, 1) if b.expand != 1 else x
            y = self.depthwise(y, mid, b.kernel)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y, b.cout, 1)
        return x + y if b.stride == 1 and b.cin == b.cout else y

    def state(self, b):
        mid = expanded_channels(b.cin, b.expand)
        if self.fused:
            out = self.expand.state(b.cin, mid, b.kernel, "fused.")
        else:
            out = self.expand.state(b.cin, mid, 1, "expand.") if b.expand != 1 else {}
            out.update(self.depthwise.state(mid, mid, b.kernel, "depthwise."))
        if self.se is not None:
            out.update(self.se.active_state_dict(mid, "se."))
        out.update(self.project.state(mid, b.cout, 1, "project."))
        return out

    def permute_input(self, order):
        if self.expand is not None:
            self.expand.permute_in(order)
            return
        # expand ratio 1 only: the hidden channels are the input's
        self.depthwise.permute_out(order)
        if self.se is not None:
            _permute_se(self.se, order)
        self.project.permute_in(order)

    def permute_output(self, order):
        self.project.permute_out(order)

    def output_importance(self):
        return self.project.out_importance()

    @torch.no_grad()
    def sort_hidden(self):
        if self.expand is None:  # expand 1 only: the hidden channels are the input's
            return
        order = torch.argsort(self.project.weight.abs().sum(dim=(0, 2, 3)), descending=True)
        self.project.permute_in(order)
        self.expand.permute_out(order)
        if self.depthwise is not None:
            self.depthwise.permute_out(order)
        if self.se is not None:
            se = self.se
            _permute_se(se, order)
            sq_order = torch.argsort(se.expand.weight.abs().sum(dim=(0, 2, 3)), descending=True)
            _permute(se.expand.weight, sq_order, dim=1)
            _permute(se.reduce.weight, sq_order)
            _permute(se.reduce.bias, sq_order)


class ResidualBlock(ElasticBlock):
    """ResNet basic (kxk, kxk) or bottleneck (1x1, kxk, 1x1; hidden = out x expand) block; the
    shortcut is a 1x1 conv + BN when the stride or the width changes, else the identity."""

    def __init__(self, max_in: int, max_out: int, kernels, expands, stride: int, act: str, bottleneck: bool,
                 shortcut: bool):
        super().__init__()
        self.act, self.bottleneck = act, bottleneck
        if bottleneck:
            max_mid = max(expanded_channels(max_out, e) for e in expands)
            self.body = nn.ModuleList([ElasticConv(max_in, max_mid, (1,), 1, act),
                                       ElasticConv(max_mid, max_mid, kernels, stride, act),
                                       ElasticConv(max_mid, max_out, (1,), 1, "none")])
        else:
            self.body = nn.ModuleList([ElasticConv(max_in, max_out, kernels, stride, act),
                                       ElasticConv(max_out, max_out, kernels, 1, "none")])
        # the 1x1-conv shortcut's weights, where some choice changes the shape
        self.shortcut = ElasticConv(max_in, max_out, (1,), stride, "none") if shortcut else None

    def _widths(self, b: Block) -> list[tuple[int, int, int]]:
        if self.bottleneck:
            mid = expanded_channels(b.cout, b.expand)
            return [(b.cin, mid, 1), (mid, mid, b.kernel), (mid, b.cout, 1)]
        return [(b.cin, b.cout, b.kernel), (b.cout, b.cout, b.kernel)]

    def forward(self, x, b):
        y = x
        for conv, (_, cout, k) in zip(self.body, self._widths(b), strict=True):
            y = conv(y, cout, k)
        shortcut = self.shortcut(x, b.cout, 1) if b.stride != 1 or b.cin != b.cout else x
        return _act(self.act, y + shortcut)

    def state(self, b):
        out: dict[str, torch.Tensor] = {}
        for i, (conv, (cin, cout, k)) in enumerate(zip(self.body, self._widths(b), strict=True)):
            out.update(conv.state(cin, cout, k, f"body.{i}."))
        if b.stride != 1 or b.cin != b.cout:
            out.update(self.shortcut.state(b.cin, b.cout, 1, "shortcut."))
        return out

    def permute_input(self, order):
        for conv in [self.body[0]] + ([self.shortcut] if self.shortcut is not None else []):
            conv.permute_in(order)

    def permute_output(self, order):
        for conv in [self.body[-1]] + ([self.shortcut] if self.shortcut is not None else []):
            conv.permute_out(order)

    def output_importance(self):
        return self.body[-1].out_importance()

    @torch.no_grad()
    def sort_hidden(self):
        for inner, outer in zip(self.body[:-1], self.body[1:], strict=True):
            order = torch.argsort(outer.weight.abs().sum(dim=(0, 2, 3)), descending=True)
            outer.permute_in(order)
            inner.permute_out(order)


class CellBlock(ElasticBlock):
    """A DAG cell with one module per (edge, op): ReLU-conv-BN convolutions, parameter-free skip
    and pooling; the edges' ops come from the active architecture."""

    def __init__(self, max_c: int, nodes: int, edges, ops):
        super().__init__()
        self.nodes, self.edges = nodes, tuple(edges)
        convs = [op for op in ops if cell_op_kernel(op)]
        self.convs = nn.ModuleList(
            nn.ModuleDict({op: ElasticConv(max_c, max_c, (cell_op_kernel(op),), 1, "none") for op in convs})
            for _ in self.edges)

    def _edge(self, i: int, op: str, x: torch.Tensor) -> torch.Tensor:
        if op == "skip":
            return x
        if op == "avgpool3x3":
            return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        if op == "maxpool3x3":
            return F.max_pool2d(x, 3, 1, 1)
        return self.convs[i][op](F.relu(x), x.size(1), cell_op_kernel(op))

    def forward(self, x, b):
        states = [x]
        live = cell_live_nodes(self.nodes, self.edges, b.ops)
        for node in range(1, self.nodes):
            if node not in live:  # its value reaches no output
                states.append(None)
                continue
            terms = [self._edge(i, b.ops[i], states[src]) for i, (src, dst) in enumerate(self.edges)
                     if dst == node and b.ops[i] != "none"]
            states.append(sum(terms[1:], terms[0]) if terms else x * 0.0)
        return states[-1]

    def state(self, b):
        out: dict[str, torch.Tensor] = {}
        live = cell_live_nodes(self.nodes, self.edges, b.ops)  # the plain cell has only their edges
        for i, op in enumerate(b.ops):
            if cell_op_kernel(op) and self.edges[i][1] in live:
                conv = self.convs[i][op]
                out.update(conv.state(b.cin, b.cin, cell_op_kernel(op), f"ops.{i}."))
        return out

    def permute_input(self, order):  # a cell reads and writes the same channels: call both with one order
        for edge in self.convs:
            for conv in edge.values():
                conv.permute_in(order)

    def permute_output(self, order):
        for edge in self.convs:
            for conv in edge.values():
                conv.permute_out(order)

    def output_importance(self):
        scores = [conv.out_importance() for edge in self.convs for conv in edge.values()]
        return sum(scores[1:], scores[0]) if scores else None


def make_block(space: SpecSpace, s: int, j: int) -> ElasticBlock:
    """The weight-sharing block of stage `s`, slot `j` (-1: a cell stage's entry block)."""
    stage = space.stages[s]
    in_widths = space.in_widths(s) if j <= 0 else stage.width
    max_in, max_out = max(in_widths), max(stage.width)
    stride = stage.stride if j <= 0 else 1
    # later blocks of a stage keep its width; the first may change the shape under some choice
    reshapes = j <= 0 and (stride != 1 or any(a != b for a in in_widths for b in stage.width))
    if j == -1:
        return ResidualBlock(max_in, max_out, (3,), (1,), stride, "relu", False, reshapes)
    if stage.block == "cell":
        return CellBlock(max_out, stage.nodes, stage.edges, stage.ops)
    if stage.block == "conv":
        return ConvBlock(max_in, max_out, stage.kernel, stride, stage.act)
    if stage.block in ("mbconv", "fused_mbconv"):
        return InvertedBlock(max_in, max_out, stage.kernel, stage.expand, stride, stage.se, stage.act,
                             fused=stage.block == "fused_mbconv")
    return ResidualBlock(max_in, max_out, stage.kernel, stage.expand, stride, stage.act,
                         stage.block == "bottleneck", reshapes)


class ElasticStage(nn.Module):
    """A stage's blocks: [entry block of a cell stage], one per block slot."""

    def __init__(self, space: SpecSpace, s: int):
        super().__init__()
        stage = space.stages[s]
        self.entry = make_block(space, s, -1) if stage.block == "cell" and space.needs_entry(s) else None
        self.blocks = nn.ModuleList(make_block(space, s, j) for j in range(max(stage.depth)))

    def block(self, b: Block) -> ElasticBlock:
        return self.entry if b.slot == -1 else self.blocks[b.slot]

    def all_blocks(self) -> list[ElasticBlock]:
        return ([self.entry] if self.entry is not None else []) + list(self.blocks)


class SpecSupernet(nn.Module):
    """Weight-sharing network of a spec space; `set_active(arch)` picks the subnet `forward` runs.
    The input must already be at the subnet's resolution (see `resize_input`)."""

    def __init__(self, space: SpecSpace):
        super().__init__()
        self.space = space
        self.stages = nn.ModuleList(ElasticStage(space, s) for s in range(space.n_stages))
        head = space.head
        max_c = max(space.stages[-1].width)
        self.mix = ElasticConv(max_c, head.width, (1,), 1, head.act, bn=False) if head.width else None
        self.dropout = nn.Dropout(head.dropout)
        self.classifier = nn.Linear(head.width or max_c, space.num_classes)
        bound = 1.0 / math.sqrt(self.classifier.in_features)
        nn.init.uniform_(self.classifier.weight, -bound, bound)
        nn.init.zeros_(self.classifier.bias)
        for m in self.modules():  # the squeeze-excite convs: OFA's init, as the MobileNetV3 supernet
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] ** 2 * m.out_channels)))
                nn.init.zeros_(m.bias)
        self.active_arch: Arch = {}
        self._active: list[list[Block]] = []
        self.set_active(space.largest())

    def config(self) -> dict:
        return self.space.config()

    def set_active(self, arch: Arch) -> None:
        """Select the subnet `forward` runs (InputError if `arch` is not in the space)."""
        arch = self.space.validate(arch)
        self._active = self.space.blocks(arch)
        self.active_arch = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage, blocks in zip(self.stages, self._active, strict=True):
            for b in blocks:
                x = stage.block(b)(x, b)
        x = F.adaptive_avg_pool2d(x, 1)
        if self.mix is not None:
            x = self.mix(x, self.mix.weight.size(0), 1)
        x = self.dropout(x).flatten(1)
        return F.linear(x, self.classifier.weight[:, : x.size(1)], self.classifier.bias)

    @torch.no_grad()
    def extract(self, arch: Arch) -> nn.Module:
        """A standalone copy of subnet `arch`: a `torch.fx.GraphModule` of standard torch.nn layers
        with the shared weights copied, on the supernet's device and in its train/eval mode. Its
        state_dict loads into `space.build(arch)`; the supernet's active arch is unchanged."""
        arch = self.space.validate(arch)
        plain = self.space.build(arch)
        state: dict[str, torch.Tensor] = {}
        blocks = self.space.blocks(arch)
        for s, (stage, stage_blocks) in enumerate(zip(self.stages, blocks, strict=True)):
            for i, b in enumerate(stage_blocks):
                state.update({f"stages.{s}.{i}.{k}": v for k, v in stage.block(b).state(b).items()})
        channels = blocks[-1][-1].cout
        if self.mix is not None:
            state.update(self.mix.state(channels, self.mix.weight.size(0), 1, "head.mix."))
            channels = self.mix.weight.size(0)
        state["head.classifier.linear.weight"] = self.classifier.weight[:, :channels]
        state["head.classifier.linear.bias"] = self.classifier.bias
        plain.load_state_dict({k: v.detach().clone() for k, v in state.items()})
        graph = torch.fx.symbolic_trace(plain)
        graph.train(self.training)
        return graph.to(self.classifier.weight.device)

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Reorder channels by importance, most important first, so smaller widths keep them: every
        block's hidden channels, then the stages' output channels (in every weight that writes or reads
        them, the classifier included). Stages whose channels an identity shortcut (or a cell) joins
        are sorted together with one order, and left as they are when their widths differ. The
        largest subnet computes the same function before and after."""
        for stage in self.stages:
            for block in stage.all_blocks():
                block.sort_hidden()
        for group in self._channel_groups():
            self._sort_group(group)

    def _channel_groups(self) -> list[list[int]]:
        """Stage outputs that must share one channel order: stage s joins stage s-1 when its first
        block can pass its input through (an identity shortcut, or a cell without an entry block);
        -1 (the image) never moves."""
        groups: list[list[int]] = []
        for s, stage in enumerate(self.space.stages):
            first = self.stages[s].all_blocks()[0]
            widths_in = set(self.space.in_widths(s))
            joins = isinstance(first, CellBlock) or (
                isinstance(first, (InvertedBlock, ResidualBlock)) and stage.stride == 1
                and bool(widths_in & set(stage.width)))
            if joins and groups and s > 0:
                groups[-1].append(s)
            elif joins:
                groups.append([-1, s])
            else:
                groups.append([s])
        return [g for g in groups if -1 not in g and len({max(self.space.stages[s].width) for s in g}) == 1]

    def _sort_group(self, group: list[int]) -> None:
        members = set(group)
        scores = [b.output_importance() for s in group for b in self.stages[s].all_blocks()]
        scores = [v for v in scores if v is not None]
        if not scores:
            return
        order = torch.argsort(sum(scores[1:], scores[0]), descending=True)
        for s in group:
            for i, block in enumerate(self.stages[s].all_blocks()):
                if (s - 1 if i == 0 else s) in members:
                    block.permute_input(order)
                block.permute_output(order)
        last = group[-1]
        if last + 1 < len(self.stages):
            self.stages[last + 1].all_blocks()[0].permute_input(order)
        elif self.mix is not None:
            self.mix.permute_in(order)
        else:
            _permute(self.classifier.weight, order, dim=1)
