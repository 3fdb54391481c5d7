"""Data-parallel helpers: with torch.distributed initialised (torchrun), each rank steps
its own envs and these make every update use global statistics; alone, they do nothing.

All collectives are device-side (NCCL on CUDA, gloo on CPU): no host sync in the update,
and on CUDA they are captured in the iteration's graph. Each one costs a few microseconds
of latency however small, so statistics travel together: one collective per gradient step
(gradients and KL), one per env step (observation moments), one per update (advantages).
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


def merged_moments(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean, sum of squared deviations (M2) and count of x along ``dim`` over every rank's
    x (equal shapes on every rank), in one collective: each rank's own mean and M2 are
    gathered and merged (Chan et al.), as precise as two passes over all the data."""
    n = x.shape[dim]
    mean = x.mean(dim)
    m2 = ((x - mean.unsqueeze(dim)) ** 2).sum(dim)
    world = world_size()
    if world == 1:
        return mean, m2, n
    slots = x.new_zeros((world, 2, *mean.shape))  # a gather written as a sum of one-hot slots
    slots[dist.get_rank()] = torch.stack([mean, m2])
    all_reduce_sum(slots)
    means, m2s = slots[:, 0], slots[:, 1]
    total_mean = means.mean(0)  # equal counts
    return total_mean, m2s.sum(0) + n * ((means - total_mean) ** 2).sum(0), n * world


def average_gradients(
    parameters: Iterable[torch.nn.Parameter], also: torch.Tensor | None = None
) -> torch.Tensor | None:
    """Every rank ends with the mean gradient over ranks, in one flat all-reduce; ``also``
    (a scalar statistic of the same step) rides along and its mean over ranks is returned."""
    if world_size() == 1:
        return also
    grads = [p.grad for p in parameters if p.grad is not None]
    extra = [] if also is None else [also.reshape(1)]
    flat = torch.cat([g.reshape(-1) for g in grads] + extra)
    all_reduce_mean(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
    return None if also is None else flat[-1]


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Start every rank from rank 0's weights and buffers."""
    if world_size() == 1:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)
