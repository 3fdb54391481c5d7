"""Observation normalisation shared by the algorithms (its state travels in checkpoints)."""

from __future__ import annotations

import torch

from algos.distributed import merged_moments, world_size


class RunningMeanStd(torch.nn.Module):
    """Running mean and variance of [B, O] batches, merged on the device (Chan et al.).

    Buffers, not parameters: they are saved with the policy and never trained.
    """

    def __init__(self, size: int, epsilon: float = 1e-4, clip: float = 10.0) -> None:
        super().__init__()
        self.clip = clip
        self.register_buffer("mean", torch.zeros(size))  # [O]
        self.register_buffer("var", torch.ones(size))  # [O]
        self.register_buffer("count", torch.tensor(epsilon))  # scalar

    @torch.no_grad()
    def update(self, batch: torch.Tensor) -> None:
        """Merge a [B, O] batch into the running statistics (every rank's batch, when
        torch.distributed is initialised, so all ranks keep the same statistics)."""
        batch_mean, batch_var, batch_count = _batch_moments(batch)
        delta = batch_mean - self.mean
        total = self.count + batch_count
        new_mean = self.mean + delta * (batch_count / total)
        m2 = (
            self.var * self.count
            + batch_var * batch_count
            + delta**2 * self.count * batch_count / total
        )
        self.mean.copy_(new_mean)
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """[B, O] -> [B, O] standardised and clipped to [-clip, clip]."""
        return ((obs - self.mean) / torch.sqrt(self.var + 1e-8)).clamp(-self.clip, self.clip)


def _batch_moments(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mean [O], population variance [O] and count of a [B, O] batch over all ranks."""
    if world_size() == 1:
        return batch.mean(0), batch.var(0, unbiased=False), float(batch.shape[0])
    mean, m2, count = merged_moments(batch, 0)
    return mean, m2 / count, float(count)
