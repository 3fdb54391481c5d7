"""TD3: twin critics, target policy smoothing and delayed actor updates (Fujimoto et al.,
2018), with Gaussian exploration noise, for many parallel envs."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from algos.distributional import expected, project, support
from algos.networks import mlp
from algos.offpolicy import OffPolicy, OffPolicyConfig, TwinCritic, soft_update
from envs.base import ActionSpace
from harness.errors import FieldError


@dataclass(frozen=True)
class TD3Config(OffPolicyConfig):
    name: str = "td3"  # the algorithm
    exploration_noise: float = 0.1  # std of the action noise while collecting
    # Each env explores with its own std, drawn once from [exploration_noise_min,
    # exploration_noise] (FastTD3's mixed noise: some envs stay near the greedy policy while
    # others explore widely); null: every env uses exploration_noise.
    exploration_noise_min: float | None = None
    policy_noise: float = 0.2  # std of the target policy smoothing noise
    noise_clip: float = 0.5  # the smoothing noise clipped to +- this
    policy_delay: int = 2  # critic updates per actor (and target) update
    # C51 critics, as FastTD3's: each Q a categorical distribution over num_atoms returns
    # evenly spaced in [v_min, v_max] (which should hold the task's returns), trained by
    # cross-entropy against the projected target of the twin with the smaller mean.
    distributional: bool = False
    num_atoms: int = 101  # atoms of the C51 support
    v_min: float = -250.0  # the support's lowest return
    v_max: float = 250.0  # the support's highest return

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.policy_delay <= 0:
            raise FieldError("policy_delay", f"must be > 0, got {self.policy_delay}")
        for key in ("exploration_noise", "policy_noise", "noise_clip"):
            if getattr(self, key) < 0:
                raise FieldError(key, f"must be >= 0, got {getattr(self, key)}")
        if self.num_atoms < 2:
            raise FieldError("num_atoms", f"must be >= 2, got {self.num_atoms}")
        if not self.v_min < self.v_max:
            raise FieldError("v_max", f"must be > v_min ({self.v_min}), got {self.v_max}")
        low = self.exploration_noise_min
        if low is not None and not 0 <= low <= self.exploration_noise:
            raise FieldError(
                "exploration_noise_min",
                f"must be in [0, exploration_noise={self.exploration_noise}], got {low}",
            )

    @property
    def not_capturable(self) -> str | None:
        if self.updates_per_iteration % self.policy_delay:
            return (
                f"needs algo.updates_per_iteration ({self.updates_per_iteration}) to be a "
                f"multiple of algo.policy_delay ({self.policy_delay}), so that the actor "
                "updates fall alike in every iteration"
            )
        return None


def networks(config: TD3Config, obs_size: int, action_size: int) -> dict[str, torch.nn.Module]:
    """TD3's networks, initialised from the global RNG in a run's order."""
    actor = torch.nn.Sequential(
        mlp(obs_size, config.hidden, action_size, config.activation, out_gain=0.01),
        torch.nn.Tanh(),
    )
    atoms = config.num_atoms if config.distributional else 1
    critic = TwinCritic(obs_size, action_size, config.hidden, config.activation, atoms)
    return {
        "actor": actor,
        "actor_target": copy.deepcopy(actor),
        "critic": critic,
        "critic_target": copy.deepcopy(critic),
    }


def exploration_std(
    config: TD3Config, num_envs: int, device: torch.device, generator: torch.Generator
) -> torch.Tensor:
    """Each env's exploration std [N, 1] (drawn once with exploration_noise_min)."""
    high, low = config.exploration_noise, config.exploration_noise_min
    if low is None:
        return torch.full((num_envs, 1), high, device=device)
    u = torch.rand(num_envs, 1, device=device, generator=generator)
    return low + (high - low) * u


class TD3(OffPolicy):
    def __init__(
        self,
        config: TD3Config,
        obs_size: int,
        action_space: ActionSpace,
        num_envs: int,
        device: torch.device,
        generator: torch.Generator,
    ) -> None:
        super().__init__(config, obs_size, action_space, num_envs, device, generator)
        self.config: TD3Config = config
        nets = {
            name: net.to(device)
            for name, net in networks(config, obs_size, self.action_size).items()
        }
        self.actor, self.actor_target = nets["actor"], nets["actor_target"]
        self.critic, self.critic_target = nets["critic"], nets["critic_target"]
        self.actor_opt = self._adam(self.actor.parameters(), config.actor_lr)
        self.critic_opt = self._adam(self.critic.parameters(), config.critic_lr)
        self.exploration_std = exploration_std(config, num_envs, device, generator)  # [N, 1]
        self.atoms = support(config.v_min, config.v_max, config.num_atoms, device)  # [M]
        self.actor_updates = 0
        # The last actor loss, kept in place: an update without an actor step reports it,
        # and a CUDA graph must read the latest value, not the tensor of its capture.
        self._last_actor_loss = torch.zeros((), device=device)

    def host_state(self) -> dict[str, Any]:
        return {**super().host_state(), "actor_updates": self.actor_updates}

    def load_host_state(self, state: dict[str, Any]) -> None:
        super().load_host_state(state)
        self.actor_updates = state["actor_updates"]

    def update_replayed(self) -> None:
        super().update_replayed()
        self.actor_updates += self.config.updates_per_iteration // self.config.policy_delay

    def _noise(self, shape: torch.Size, std: float) -> torch.Tensor:
        return torch.randn(shape, device=self.device, generator=self.generator) * std

    def _explore(self, obs: torch.Tensor) -> torch.Tensor:
        action = self.actor(obs)  # [N, A]
        return (action + self._noise(action.shape, 1.0) * self.exploration_std).clamp(-1, 1)

    def _policy(self, nobs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        if deterministic:
            return self.actor(nobs)
        action = self.actor(nobs)  # any batch size (evaluation envs): the config's std
        return (action + self._noise(action.shape, self.config.exploration_noise)).clamp(-1, 1)

    def _update_step(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c = self.config
        with torch.no_grad():
            next_action = self.actor_target(b["next_obs"])
            smoothing = self._noise(next_action.shape, c.policy_noise).clamp(
                -c.noise_clip, c.noise_clip
            )
            next_action = (next_action + smoothing).clamp(-1.0, 1.0)
            q1_t, q2_t = self.critic_target(b["next_obs"], next_action)
            bootstrap = b["discount"] * (1.0 - b["terminated"])
            if c.distributional:
                p1, p2 = (
                    project(torch.softmax(q, -1), b["rewards"], bootstrap, self.atoms)
                    for q in (q1_t, q2_t)
                )
                smaller = (p1 * self.atoms).sum(-1) < (p2 * self.atoms).sum(-1)
                target = torch.where(smaller.unsqueeze(-1), p1, p2)  # clipped double Q
            else:
                target = b["rewards"] + bootstrap * torch.min(q1_t, q2_t)
        q1, q2 = self.critic(b["obs"], b["actions"])
        if c.distributional:
            critic_loss = (
                -(target * torch.log_softmax(q1, -1)).sum(-1).mean()
                - (target * torch.log_softmax(q2, -1)).sum(-1).mean()
            )
            q1 = expected(q1.detach(), self.atoms)
        else:
            critic_loss = ((q1 - target) ** 2).mean() + ((q2 - target) ** 2).mean()
        self._step(self.critic_opt, critic_loss, self.critic)

        # self.updates counts finished steps; the actor moves on every policy_delay-th one.
        if (self.updates + 1) % c.policy_delay == 0:
            q_pi = self.critic.first(b["obs"], self.actor(b["obs"]))
            if c.distributional:
                q_pi = expected(q_pi, self.atoms)
            actor_loss = -q_pi.mean()
            self._step(self.actor_opt, actor_loss, self.actor)
            soft_update(self.actor_target, self.actor, c.tau)
            soft_update(self.critic_target, self.critic, c.tau)
            self.actor_updates += 1
            self._last_actor_loss.copy_(actor_loss.detach())
        return {
            "critic_loss": critic_loss.detach(),
            "actor_loss": self._last_actor_loss.clone(),
            "q_mean": q1.detach().mean(),
        }

    def _modules(self) -> dict[str, Any]:
        return {
            "actor": self.actor,
            "actor_target": self.actor_target,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "actor_opt": self.actor_opt,
            "critic_opt": self.critic_opt,
        }
