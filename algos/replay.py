"""A ring replay buffer of [capacity, ...] tensors on the device, for off-policy algorithms.

Inserts N transitions per env step in one vectorised write; samples uniformly. The write
position and fill level are host integers known without reading the device, so neither
insert nor sample waits on the GPU.
"""

from __future__ import annotations

import torch


class ReplayBuffer:
    def __init__(
        self, capacity: int, obs_size: int, action_size: int, device: torch.device
    ) -> None:
        c = capacity
        self.capacity = capacity
        self.device = device
        self.obs = torch.zeros(c, obs_size, device=device)  # [C, O]
        self.actions = torch.zeros(c, action_size, device=device)  # [C, A]
        self.rewards = torch.zeros(c, device=device)  # [C]
        self.next_obs = torch.zeros(c, obs_size, device=device)  # [C, O] (final_obs at ends)
        self.terminated = torch.zeros(c, device=device)  # [C] 1.0: no bootstrap
        self._offsets = torch.arange(0, device=device)  # [N] 0..N-1, grown on first insert
        self.position = 0  # next row to write
        self.size = 0  # rows holding data

    def add(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
    ) -> None:
        """N transitions: obs [N, O], actions [N, A], rewards [N], next_obs [N, O] (the
        observation the action led to, before any reset), terminated [N] bool."""
        n = obs.shape[0]
        if n > self.capacity:
            raise ValueError(f"cannot insert {n} transitions into a buffer of {self.capacity}")
        if self._offsets.numel() != n:
            self._offsets = torch.arange(n, device=self.device)  # once per batch size
        rows = (self.position + self._offsets) % self.capacity  # [N]
        self.obs[rows] = obs
        self.actions[rows] = actions
        self.rewards[rows] = rewards
        self.next_obs[rows] = next_obs
        self.terminated[rows] = terminated.to(self.terminated.dtype)
        self.position = (self.position + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """A uniform batch (with replacement) of the stored transitions, each [B, ...]."""
        if self.size == 0:
            raise RuntimeError("sampling from an empty replay buffer")
        idx = torch.randint(0, self.size, (batch_size,), device=self.device, generator=generator)
        return {
            "obs": self.obs[idx],
            "actions": self.actions[idx],
            "rewards": self.rewards[idx],
            "next_obs": self.next_obs[idx],
            "terminated": self.terminated[idx],
        }

    FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated")

    def state_dict(self) -> dict[str, object]:
        """The stored rows (not the empty remainder) and the write position, so that a
        resumed run learns from what it had collected."""
        state: dict[str, object] = {name: getattr(self, name)[: self.size].clone()
                                    for name in self.FIELDS}  # fmt: skip
        state["position"] = self.position
        state["size"] = self.size
        return state

    def load_state_dict(self, state: dict[str, object]) -> None:
        size = int(state["size"])  # type: ignore[call-overload]
        if size > self.capacity:
            raise ValueError(
                f"the checkpoint's replay buffer holds {size} rows, more than buffer_size "
                f"{self.capacity}"
            )
        for name in self.FIELDS:
            getattr(self, name)[:size] = state[name]
        self.position = int(state["position"])  # type: ignore[call-overload]
        self.size = size

