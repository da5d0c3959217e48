"""Multi-process training under torchrun: process group, gradient and buffer averaging.

The sandwich rule runs several forward/backward passes over different subgraphs per step,
so gradients are averaged once per optimizer step with one flattened all-reduce (what
DistributedDataParallel does per backward), instead of wrapping the model in DDP, whose
per-backward hooks would reduce once per subnet and trip over parameters a subnet skips.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistContext:
    """Join the process group torchrun describes in the environment; a single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                       local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def broadcast_model(model: nn.Module, ctx: DistContext) -> None:
    """Start every rank from rank 0's weights and buffers."""
    if not ctx.enabled:
        return
    for tensor in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(tensor.data, src=0)


def average_gradients(model: nn.Module, ctx: DistContext) -> None:
    """Average gradients over ranks in one flattened all-reduce (absent gradients count as zero)."""
    if not ctx.enabled:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= ctx.world_size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p))
        offset += n


def average_buffers(model: nn.Module, ctx: DistContext) -> None:
    """Average floating-point buffers (BN statistics) so every rank saves the same model."""
    if not ctx.enabled:
        return
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf.data, op=dist.ReduceOp.SUM)
            buf.data /= ctx.world_size
        else:
            dist.broadcast(buf.data, src=0)


def sum_over_ranks(value: int, ctx: DistContext) -> int:
    """An integer summed over ranks (e.g. images skipped in each rank's shard)."""
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return int(t.item())


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()
