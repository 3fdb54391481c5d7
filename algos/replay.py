"""A ring replay buffer of [capacity, ...] tensors on the device, for off-policy algorithms.

Inserts N transitions per env step in one vectorised write; samples uniformly. The write
position and fill level are kept twice: host integers (known without reading the device,
for checkpoints and checks) and device tensors that inserts and, with ``device_fill``, the
sampler read, so that a CUDA graph replays both correctly. Neither waits on the GPU.
"""

from __future__ import annotations

import torch


def n_step_sums(
    ended: torch.Tensor, rewards: torch.Tensor, powers: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Discounted sums of up to n rewards cut after an episode's end, and the index of the
    last step summed: ended, rewards [..., n, B] and powers [..., n, 1] -> two [..., B]."""
    # alive[k]: no episode end among steps 0..k-1 (step k still counts).
    first = torch.ones_like(ended[..., :1, :])
    alive = torch.cumprod(torch.cat([first, 1 - ended[..., :-1, :]], -2), -2)
    returns = (powers * alive * rewards).sum(-2)
    return returns, alive.sum(-2).long() - 1


class ReplayBuffer:
    def __init__(
        self,
        capacity: int,
        obs_size: int,
        action_size: int,
        device: torch.device,
        device_fill: bool | None = None,
    ) -> None:
        c = capacity
        self.capacity = capacity
        self.device = device
        self.obs = torch.zeros(c, obs_size, device=device)  # [C, O]
        self.actions = torch.zeros(c, action_size, device=device)  # [C, A]
        self.rewards = torch.zeros(c, device=device)  # [C]
        self.next_obs = torch.zeros(c, obs_size, device=device)  # [C, O] (final_obs at ends)
        self.terminated = torch.zeros(c, device=device)  # [C] 1.0: no bootstrap
        self.ended = torch.zeros(c, device=device)  # [C] 1.0: the episode ended (n-step cut)
        self._offsets = torch.arange(0, device=device)  # [N] 0..N-1, grown on first insert
        self.position = 0  # next row to write
        self.size = 0  # rows holding data
        self._position = torch.zeros((), dtype=torch.long, device=device)  # the same, on the device
        self._size = torch.zeros((), dtype=torch.long, device=device)
        # Sample from the device's fill level (default on CUDA, where graphs replay); on the
        # host's, draws are torch.randint's, which CPU runs have always used.
        self.device_fill = device.type == "cuda" if device_fill is None else device_fill

    def add(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
        ended: torch.Tensor | None = None,
    ) -> None:
        """N transitions: obs [N, O], actions [N, A], rewards [N], next_obs [N, O] (the
        observation the action led to, before any reset), terminated [N] bool, ended [N]
        bool (terminated or truncated; default: terminated). Every insert holds the same N
        envs in the same order, so env e's next transition lies N rows after its last."""
        axis = self.obs.dim() - 2  # the row axis: 0, or 1 behind a member axis
        n = obs.shape[axis]
        if n > self.capacity:
            raise ValueError(f"cannot insert {n} transitions into a buffer of {self.capacity}")
        if self._offsets.numel() != n:
            self._offsets = torch.arange(n, device=self.device)  # once per batch size
        rows = (self._position + self._offsets) % self.capacity  # [N]
        at = (slice(None),) * axis + (rows,)
        self.obs[at] = obs
        self.actions[at] = actions
        self.rewards[at] = rewards
        self.next_obs[at] = next_obs
        self.terminated[at] = terminated.to(self.terminated.dtype)
        self.ended[at] = (terminated if ended is None else ended).to(self.ended.dtype)
        self._position.add_(n).remainder_(self.capacity)
        self._size.add_(n).clamp_(max=self.capacity)
        self.advance(n)

    def advance(self, n: int) -> None:
        """The host's position and fill level after an insert of ``n`` rows (called by
        `add`, and for inserts a graph replay made)."""
        self.position = (self.position + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def _draw(
        self, high: int, high_t: torch.Tensor, count: int, g: torch.Generator
    ) -> torch.Tensor:
        """[count] uniform integers in [0, high): from the device's ``high_t`` with
        device_fill (float64 draws, uniform to 1e-9 at a million rows), else randint."""
        if not self.device_fill:
            return torch.randint(0, high, (count,), device=self.device, generator=g)
        u = torch.rand(count, device=self.device, generator=g, dtype=torch.float64)
        return torch.minimum((u * high_t).long(), high_t - 1)

    def sample(
        self, batch_size: int, generator: torch.Generator, n_step: int = 1, gamma: float = 1.0
    ) -> dict[str, torch.Tensor]:
        """A uniform batch (with replacement) of stored transitions, each [B, ...].

        With ``n_step`` > 1 each sample is the n-step transition from a uniformly drawn
        start: ``rewards`` is the discounted sum of up to n rewards of its env, cut after
        the step where its episode ended; ``next_obs`` and ``terminated`` are that last
        step's; ``discount`` [B] is gamma ** (steps summed), the factor of the bootstrap.
        """
        if self.size == 0:
            raise RuntimeError("sampling from an empty replay buffer")
        n_envs = max(self._offsets.numel(), 1)
        starts = self.size - (n_step - 1) * n_envs  # starts whose n-1 successors are stored
        if starts <= 0:
            raise RuntimeError(f"the replay buffer holds fewer than {n_step} steps per env")
        if n_step == 1:
            idx = self._draw(self.size, self._size, batch_size, generator)
            return {
                "obs": self.obs[idx],
                "actions": self.actions[idx],
                "rewards": self.rewards[idx],
                "next_obs": self.next_obs[idx],
                "terminated": self.terminated[idx],
                "discount": torch.full((batch_size,), gamma, device=self.device),
            }
        pick = self._draw(starts, self._size - (n_step - 1) * n_envs, batch_size, generator)
        if self.device_fill:  # the oldest row: the write position once the buffer is full
            full = self._size == self.capacity
            oldest = torch.where(full, self._position, torch.zeros_like(self._position))
        else:
            oldest = self.position if self.size == self.capacity else 0
        idx = (oldest + pick) % self.capacity  # [B]
        ahead = torch.arange(n_step, device=self.device)[:, None] * n_envs  # [n, 1]
        rows = (idx[None, :] + ahead) % self.capacity  # [n, B]
        powers = gamma ** torch.arange(n_step, device=self.device, dtype=torch.float32)
        returns, last = n_step_sums(self.ended[rows], self.rewards[rows], powers[:, None])
        last_rows = rows.gather(0, last[None, :])[0]  # [B]
        return {
            "obs": self.obs[idx],
            "actions": self.actions[idx],
            "rewards": returns,
            "next_obs": self.next_obs[last_rows],
            "terminated": self.terminated[last_rows],
            "discount": gamma ** (last + 1).float(),
        }

    FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated", "ended")

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
            if name in state:  # checkpoints before `ended` existed: no n-step cuts known
                getattr(self, name)[:size] = state[name]
        self.position = int(state["position"])  # type: ignore[call-overload]
        self.size = size
        self._position.fill_(self.position)
        self._size.fill_(size)


class StackedReplay(ReplayBuffer):
    """One ring buffer per member of a batch, stacked [K, capacity, ...]; every member
    inserts its N envs' transitions ([K, N, ...] to `add`) at the same rows and samples with
    its own generator the indices its run alone would draw (algos.offpolicy_members)."""

    def __init__(
        self,
        members: int,
        num_envs: int,
        capacity: int,
        obs_size: int,
        action_size: int,
        device: torch.device,
    ) -> None:
        super().__init__(1, obs_size, action_size, device)
        self._offsets = torch.arange(num_envs, device=device)  # N envs insert per step
        self.capacity = c = capacity
        self.obs = torch.zeros(members, c, obs_size, device=device)  # [K, C, O]
        self.actions = torch.zeros(members, c, action_size, device=device)  # [K, C, A]
        self.next_obs = torch.zeros(members, c, obs_size, device=device)
        for name in ("rewards", "terminated", "ended"):
            setattr(self, name, torch.zeros(members, c, device=device))  # [K, C]

    @property
    def members(self) -> int:
        return self.obs.shape[0]

    def sample_members(
        self,
        batch_size: int,
        generators: list[torch.Generator],
        n_step: int,
        gamma: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Member k's batch [K, B, ...] drawn with ``generators[k]`` and discounted by
        ``gamma[k]``, as `ReplayBuffer.sample` draws a run's."""
        if self.size == 0:
            raise RuntimeError("sampling from an empty replay buffer")
        n_envs = max(self._offsets.numel(), 1)
        starts = self.size - (n_step - 1) * n_envs
        if starts <= 0:
            raise RuntimeError(f"the replay buffer holds fewer than {n_step} steps per env")
        member = torch.arange(self.members, device=self.device)[:, None]  # [K, 1]
        gamma = gamma[:, None]  # [K, 1]
        if n_step == 1:
            idx = torch.stack(
                [self._draw(self.size, self._size, batch_size, g) for g in generators]
            )
            return {
                "obs": self.obs[member, idx],
                "actions": self.actions[member, idx],
                "rewards": self.rewards[member, idx],
                "next_obs": self.next_obs[member, idx],
                "terminated": self.terminated[member, idx],
                "discount": gamma.expand(-1, batch_size),
            }
        high = self._size - (n_step - 1) * n_envs
        pick = torch.stack([self._draw(starts, high, batch_size, g) for g in generators])
        if self.device_fill:
            full = self._size == self.capacity
            oldest = torch.where(full, self._position, torch.zeros_like(self._position))
        else:
            oldest = self.position if self.size == self.capacity else 0
        idx = (oldest + pick) % self.capacity  # [K, B]
        ahead = torch.arange(n_step, device=self.device)[:, None] * n_envs  # [n, 1]
        rows = (idx[:, None, :] + ahead) % self.capacity  # [K, n, B]
        at = (member[:, :, None], rows)
        steps = torch.arange(n_step, device=self.device, dtype=torch.float32)
        returns, last = n_step_sums(self.ended[at], self.rewards[at], (gamma**steps)[..., None])
        last_rows = rows.gather(1, last[:, None, :])[:, 0]  # [K, B]
        return {
            "obs": self.obs[member, idx],
            "actions": self.actions[member, idx],
            "rewards": returns,
            "next_obs": self.next_obs[member, last_rows],
            "terminated": self.terminated[member, last_rows],
            "discount": gamma ** (last + 1).float(),
        }

    def member_state_dict(self, member: int) -> dict[str, object]:
        """Member ``member``'s rows in `ReplayBuffer.state_dict`'s layout."""
        state: dict[str, object] = {
            name: getattr(self, name)[member, : self.size].clone() for name in self.FIELDS
        }
        state["position"] = self.position
        state["size"] = self.size
        return state

    def select(self, index: torch.Tensor) -> None:
        """Keep the members ``index`` only."""
        for name in self.FIELDS:
            setattr(self, name, getattr(self, name)[index].clone())
