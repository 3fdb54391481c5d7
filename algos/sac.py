"""Soft actor-critic: twin Q with Polyak targets, a tanh-squashed Gaussian actor and an
automatically tuned entropy temperature (Haarnoja et al., 2018), for many parallel envs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from algos.distributed import average_gradients
from algos.networks import mlp
from algos.offpolicy import OffPolicy, OffPolicyConfig, TwinCritic, soft_update
from envs.base import ActionSpace
from harness.errors import FieldError

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@dataclass(frozen=True)
class SACConfig(OffPolicyConfig):
    name: str = "sac"  # the algorithm
    alpha_lr: float = 3e-4  # learning rate of the entropy temperature
    init_alpha: float = 0.1  # entropy temperature at the start
    autotune_alpha: bool = True  # learn the temperature toward target_entropy
    target_entropy: float | None = None  # default: -A

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init_alpha <= 0 or self.alpha_lr <= 0:
            raise FieldError("init_alpha", "and alpha_lr must be > 0")


class SquashedGaussianActor(nn.Module):
    """obs [B, O] -> actions in (-1, 1)^A and their log-probabilities [B]."""

    def __init__(self, obs_size: int, action_size: int, config: SACConfig) -> None:
        super().__init__()
        self.net = mlp(obs_size, config.hidden, 2 * action_size, config.activation, out_gain=0.01)

    def forward(
        self, obs: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        std = log_std.exp()
        noise = torch.randn(mean.shape, device=mean.device, generator=generator)
        pre_tanh = mean + std * noise
        action = torch.tanh(pre_tanh)
        log_prob = (-0.5 * noise**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # Change of variables through tanh, in the numerically stable form.
        log_prob = log_prob - (
            2.0 * (math.log(2.0) - pre_tanh - nn.functional.softplus(-2.0 * pre_tanh))
        ).sum(-1)
        return action, log_prob

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        mean, _ = self.net(obs).chunk(2, dim=-1)
        return torch.tanh(mean)


def networks(config: SACConfig, obs_size: int, action_size: int) -> dict[str, nn.Module]:
    """SAC's networks, initialised from the global RNG in a run's order."""
    actor = SquashedGaussianActor(obs_size, action_size, config)
    critic = TwinCritic(obs_size, action_size, config.hidden, config.activation)
    critic_target = TwinCritic(obs_size, action_size, config.hidden, config.activation)
    critic_target.load_state_dict(critic.state_dict())
    return {"actor": actor, "critic": critic, "critic_target": critic_target}


class SAC(OffPolicy):
    def __init__(
        self,
        config: SACConfig,
        obs_size: int,
        action_space: ActionSpace,
        num_envs: int,
        device: torch.device,
        generator: torch.Generator,
    ) -> None:
        super().__init__(config, obs_size, action_space, num_envs, device, generator)
        self.config: SACConfig = config
        a = self.action_size
        nets = networks(config, obs_size, a)
        self.actor = nets["actor"].to(device)
        self.critic = nets["critic"].to(device)
        self.critic_target = nets["critic_target"].to(device)
        self.log_alpha = torch.tensor(
            math.log(config.init_alpha), device=device, requires_grad=True
        )
        self.target_entropy = -float(a) if config.target_entropy is None else config.target_entropy
        self.actor_opt = self._adam(self.actor.parameters(), config.actor_lr)
        self.critic_opt = self._adam(self.critic.parameters(), config.critic_lr)
        self.alpha_opt = self._adam([self.log_alpha], config.alpha_lr)

    def _explore(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(obs, self.generator)[0]

    def _policy(self, nobs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return self.actor.mode(nobs) if deterministic else self.actor(nobs, None)[0]

    def _update_step(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c = self.config
        alpha = self.log_alpha.detach().exp()
        with torch.no_grad():
            next_action, next_logp = self.actor(b["next_obs"], self.generator)
            q1_t, q2_t = self.critic_target(b["next_obs"], next_action)
            soft_value = torch.min(q1_t, q2_t) - alpha * next_logp
            target = b["rewards"] + b["discount"] * (1.0 - b["terminated"]) * soft_value
        q1, q2 = self.critic(b["obs"], b["actions"])
        critic_loss = 0.5 * ((q1 - target) ** 2).mean() + 0.5 * ((q2 - target) ** 2).mean()
        self._step(self.critic_opt, critic_loss, self.critic)

        action, logp = self.actor(b["obs"], self.generator)
        q1_pi, q2_pi = self.critic(b["obs"], action)
        actor_loss = (alpha * logp - torch.min(q1_pi, q2_pi)).mean()
        self._step(self.actor_opt, actor_loss, self.actor)

        if c.autotune_alpha:
            alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward()
            average_gradients([self.log_alpha])  # one temperature on every rank
            self.alpha_opt.step()
        soft_update(self.critic_target, self.critic, c.tau)
        return {
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "alpha": alpha,
            "entropy": -logp.detach().mean(),
            "q_mean": q1.detach().mean(),
        }

    def _modules(self) -> dict[str, Any]:
        return {
            "actor": self.actor,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "actor_opt": self.actor_opt,
            "critic_opt": self.critic_opt,
            "alpha_opt": self.alpha_opt,
            "log_alpha": self.log_alpha.data,
        }
