"""Preallocated on-policy rollout storage, [T, N, ...] tensors on the device."""

from __future__ import annotations

import torch


class RolloutStorage:
    """One rollout of T steps from N envs; written in place, never reallocated."""

    def __init__(
        self,
        num_steps: int,
        num_envs: int,
        obs_size: int,
        action_shape: tuple[int, ...],
        action_dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        t, n = num_steps, num_envs
        self.num_steps = num_steps
        self.obs = torch.zeros(t, n, obs_size, device=device)  # [T, N, O] f32 (normalised)
        self.actions = torch.zeros(t, n, *action_shape, dtype=action_dtype, device=device)
        self.log_probs = torch.zeros(t, n, device=device)  # [T, N]
        self.values = torch.zeros(t, n, device=device)  # [T, N]
        self.rewards = torch.zeros(t, n, device=device)  # [T, N]
        self.final_values = torch.zeros(t, n, device=device)  # [T, N] V(final_obs)
        self.terminated = torch.zeros(t, n, dtype=torch.bool, device=device)  # [T, N]
        self.truncated = torch.zeros(t, n, dtype=torch.bool, device=device)  # [T, N]
        self.step = 0  # host-side cursor: which row the next transition goes to

    @property
    def full(self) -> bool:
        return self.step == self.num_steps

    def policy_row(self) -> tuple[torch.Tensor, ...]:
        """The rows `add_policy` writes (obs, actions, log_probs, values at the cursor), for
        a caller that writes them itself."""
        t = self.step
        return self.obs[t], self.actions[t], self.log_probs[t], self.values[t]

    def outcome_row(self) -> tuple[torch.Tensor, ...]:
        """The rows `add_outcome` writes (rewards, terminated, truncated, final_values);
        `advance` moves the cursor on once they are written."""
        t = self.step
        return self.rewards[t], self.terminated[t], self.truncated[t], self.final_values[t]

    def advance(self) -> None:
        self.step += 1

    def add_policy(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        log_probs: torch.Tensor,
        values: torch.Tensor,
    ) -> None:
        t = self.step
        self.obs[t].copy_(obs)
        self.actions[t].copy_(actions)
        self.log_probs[t].copy_(log_probs)
        self.values[t].copy_(values)

    def add_outcome(
        self,
        rewards: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        final_values: torch.Tensor,
    ) -> None:
        t = self.step
        self.rewards[t].copy_(rewards)
        self.terminated[t].copy_(terminated)
        self.truncated[t].copy_(truncated)
        self.final_values[t].copy_(final_values)
        self.step += 1

    def clear(self) -> None:
        self.step = 0
