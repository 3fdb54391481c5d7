"""Generalised advantage estimation with time-outs kept apart from terminations."""

from __future__ import annotations

import torch


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    last_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    final_values: torch.Tensor,
    gamma: float | torch.Tensor,
    lam: float | torch.Tensor,
    gamma_lam: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns, both [T, N].

    rewards, values: [T, N]; values[t] = V(obs_t).
    last_values: [N] = V(obs_T), the observation after the last step.
    terminated, truncated: [T, N] bool for step t.
    final_values: [T, N] = V(final_obs_t), the state a time-out cut off. A truncated,
        not terminated step bootstraps from it: r_t + gamma * V(final_obs_t).
    Any episode end stops the recursion, since obs_{t+1} then belongs to a new episode.
    gamma, lam (and their product gamma_lam, default gamma * lam) may be [N] tensors.
    """
    if gamma_lam is None:
        gamma_lam = gamma * lam
    time_out = (truncated & ~terminated).to(rewards.dtype)
    rewards = rewards + gamma * final_values * time_out
    not_done = 1.0 - (terminated | truncated).to(rewards.dtype)
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(last_values)
    next_value = last_values
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_value * not_done[t] - values[t]
        next_advantage = delta + gamma_lam * not_done[t] * next_advantage
        advantages[t] = next_advantage
        next_value = values[t]
    return advantages, advantages + values
