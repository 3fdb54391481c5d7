"""Data-parallel helpers: with torch.distributed initialised (torchrun), each rank steps
its own envs and these make every update use global statistics; alone, they do nothing.

All collectives are device-side (NCCL on CUDA, gloo on CPU): no host sync in the update.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place; returns the tensor."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over ranks, in place; returns the tensor."""
    n = world_size()
    if n > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= n
    return tensor


def global_mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) std of x over all ranks' elements, two passes for precision."""
    if world_size() == 1:
        return x.mean(), x.std()
    total = all_reduce_sum(torch.stack([x.sum(), x.new_tensor(float(x.numel()))]))
    mean = total[0] / total[1]
    squares = all_reduce_sum(((x - mean) ** 2).sum())
    return mean, torch.sqrt(squares / (total[1] - 1.0))


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Every rank ends with the mean gradient over ranks (one flat all-reduce)."""
    if world_size() == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    all_reduce_mean(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Start every rank from rank 0's weights and buffers."""
    if world_size() == 1:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)
