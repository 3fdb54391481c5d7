"""What SAC and TD3 share: the replay loop for many parallel envs (FastTD3 / Parallel
Q-Learning style: every env step adds N transitions, each iteration takes several large-batch
gradient steps), critics, target networks and checkpoints.

Shapes: N envs, O obs size, A action size, B batch size.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from algos.base import Algorithm
from algos.distributed import average_gradients
from algos.networks import Activation, mlp
from algos.replay import ReplayBuffer
from envs.base import ActionSpace, EnvStep
from envs.wrappers import RunningMeanStd
from harness.errors import FieldError

log = logging.getLogger("vecbench.run")


@dataclass(frozen=True)
class OffPolicyConfig:
    name: str = ""  # the algorithm (set by sac and td3)
    num_steps: int = 1  # env steps per iteration (each adds num_envs transitions)
    updates_per_iteration: int = 2  # gradient steps per iteration (update-to-data ratio)
    batch_size: int = 1024  # transitions per gradient step
    buffer_size: int = 1_000_000  # transitions kept
    learning_starts: int = 5_000  # env steps of random actions before learning
    gamma: float = 0.99  # discount
    n_step: int = 1  # rewards summed per target (n-step returns, as FastTD3 uses 3)
    tau: float = 0.005  # Polyak factor of the target networks
    actor_lr: float = 3e-4  # Adam's learning rate of the actor
    critic_lr: float = 3e-4  # Adam's learning rate of the critics
    hidden: tuple[int, ...] = (256, 256)  # widths of the actor's and critics' hidden layers
    activation: Activation = "relu"  # tanh, elu or relu
    max_grad_norm: float = 10.0  # gradient norm clipped to this
    normalize_observations: bool = True  # running mean/std, as PPO; raw obs in the buffer

    def __post_init__(self) -> None:
        for key in ("num_steps", "updates_per_iteration", "batch_size", "buffer_size", "n_step"):
            if getattr(self, key) <= 0:
                raise FieldError(key, f"must be > 0, got {getattr(self, key)}")
        if self.learning_starts < 0:
            raise FieldError("learning_starts", f"must be >= 0, got {self.learning_starts}")
        if not 0.0 <= self.gamma <= 1.0:
            raise FieldError("gamma", f"must be in [0, 1], got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise FieldError("tau", f"must be in (0, 1], got {self.tau}")
        for key in ("actor_lr", "critic_lr", "max_grad_norm"):
            if getattr(self, key) <= 0:
                raise FieldError(key, f"must be > 0, got {getattr(self, key)}")

    @property
    def not_capturable(self) -> str | None:
        """Why an iteration cannot be one CUDA graph with this config; None: it can."""
        return None


class TwinCritic(nn.Module):
    """Two Q(s, a) networks; [B, O], [B, A] -> ([B], [B]), or with ``atoms`` > 1 the logits
    ([B, M], [B, M]) of two categorical return distributions (algos.distributional)."""

    def __init__(
        self,
        obs_size: int,
        action_size: int,
        hidden: tuple[int, ...],
        act: Activation,
        atoms: int = 1,
    ):
        super().__init__()
        self.q1 = mlp(obs_size + action_size, hidden, atoms, act, out_gain=1.0)
        self.q2 = mlp(obs_size + action_size, hidden, atoms, act, out_gain=1.0)
        self.atoms = atoms

    def _out(self, x: torch.Tensor) -> torch.Tensor:
        return x.squeeze(-1) if self.atoms == 1 else x

    def forward(
        self, obs: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, actions], dim=-1)
        return self._out(self.q1(x)), self._out(self.q2(x))

    def first(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q1 alone (TD3's actor loss needs no Q2)."""
        return self._out(self.q1(torch.cat([obs, actions], dim=-1)))


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- (1 - tau) * target + tau * source, for every parameter."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


_IMPLEMENTATION = ("fused", "capturable", "foreach")


def adam(params: Any, lr: float, device: torch.device) -> torch.optim.Adam:
    """torch.optim.Adam as a run steps it. On CUDA: fused, one kernel for all of a module's
    parameters (SAC and TD3 train about 1.2x faster than with the foreach kernels), and
    capturable, the step count on the device, so a CUDA graph can replay it."""
    cuda = device.type == "cuda"
    return torch.optim.Adam(params, lr=lr, capturable=cuda, fused=True if cuda else None)


def load_optimizer(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Moments and step counts from ``saved``, kept on this optimizer's implementation: a
    checkpoint written on CUDA (fused, capturable) resumes on a CPU, and an older one on
    foreach kernels resumes fused."""
    groups = [
        {**group, **{k: own[k] for k in _IMPLEMENTATION if k in own}}
        for group, own in zip(saved["param_groups"], optimizer.param_groups, strict=True)
    ]
    optimizer.load_state_dict({**saved, "param_groups": groups})


class OffPolicy(Algorithm):
    def __init__(
        self,
        config: OffPolicyConfig,
        obs_size: int,
        action_space: ActionSpace,
        num_envs: int,
        device: torch.device,
        generator: torch.Generator,
    ) -> None:
        if action_space.kind != "continuous":
            raise FieldError(
                "name", f"{config.name} needs continuous actions (e.g. env.action_type=continuous)"
            )
        if config.buffer_size < num_envs:
            raise FieldError("buffer_size", f"must hold one step of all {num_envs} envs")
        self.config = config
        self.device = device
        self.generator = generator
        self.num_envs = num_envs
        self.action_size = action_space.shape
        self.steps_per_update = config.num_steps
        self.buffer = ReplayBuffer(config.buffer_size, obs_size, self.action_size, device)
        self.obs_norm = RunningMeanStd(obs_size).to(device)
        self.env_steps = 0  # host count of vectorised steps seen (per env)
        self.updates = 0
        self.last_obs: torch.Tensor | None = None
        self._actions: torch.Tensor | None = None

    @property
    def learning(self) -> bool:
        # An n-step sample needs n stored steps of its env, whatever learning_starts says.
        enough = self.env_steps >= self.config.n_step
        return enough and self.env_steps * self.num_envs >= self.config.learning_starts

    @property
    def capture_ready(self) -> bool:
        return self.learning  # random actions first: those iterations run eagerly

    def host_state(self) -> dict[str, Any]:
        return {
            "env_steps": self.env_steps,
            "updates": self.updates,
            "position": self.buffer.position,
            "size": self.buffer.size,
        }

    def load_host_state(self, state: dict[str, Any]) -> None:
        self.env_steps, self.updates = state["env_steps"], state["updates"]
        self.buffer.position, self.buffer.size = state["position"], state["size"]

    def replayed(self) -> None:
        for _ in range(self.steps_per_update):
            self.buffer.advance(self.num_envs)
        self.env_steps += self.steps_per_update
        self.update_replayed()

    def update_replayed(self) -> None:
        self.updates += self.config.updates_per_iteration

    def compile(self) -> None:
        # Not measured to pay: on CUDA the whole iteration is already one graph replay.
        log.warning(
            "experiment.compile: %s's networks and updates run uncompiled (it compiles "
            "PPO's iteration and an env step that is not fused)",
            self.config.name.upper(),
        )

    def _adam(self, params: Any, lr: float) -> torch.optim.Adam:
        return adam(params, lr, self.device)

    def _norm(self, obs: torch.Tensor) -> torch.Tensor:
        return self.obs_norm(obs) if self.config.normalize_observations else obs

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        if self.config.normalize_observations:
            self.obs_norm.update(obs)
        if self.learning:
            actions = self._explore(self._norm(obs))
        else:
            actions = (
                torch.rand(
                    obs.shape[0], self.action_size, device=self.device, generator=self.generator
                )
                * 2.0
                - 1.0
            )
        self.last_obs, self._actions = obs, actions
        return actions

    @torch.no_grad()
    def observe(self, step: EnvStep) -> None:
        assert self.last_obs is not None and self._actions is not None
        # Time-outs bootstrap from final_obs; only terminations cut the return.
        self.buffer.add(
            self.last_obs,
            self._actions,
            step.reward,
            step.info["final_obs"],
            step.terminated,
            step.terminated | step.truncated,
        )
        self.env_steps += 1

    def update(self) -> dict[str, torch.Tensor]:
        if not self.learning:
            return {}
        totals: dict[str, torch.Tensor] = {}
        for _ in range(self.config.updates_per_iteration):
            batch = self.buffer.sample(
                self.config.batch_size, self.generator, self.config.n_step, self.config.gamma
            )
            batch["obs"] = self._norm(batch["obs"])
            batch["next_obs"] = self._norm(batch["next_obs"])
            stats = self._update_step(batch)
            self.updates += 1
            for key, value in stats.items():
                totals[key] = totals[key] + value if key in totals else value
        n = self.config.updates_per_iteration
        return {k: v / n for k, v in totals.items()}

    def _step(
        self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, module: nn.Module
    ) -> None:
        optimizer.zero_grad(set_to_none=True)
        params = list(module.parameters())
        # Only this module's gradients: the actor's loss passes through the critic, whose
        # weight gradients would be computed and thrown away (a third of that backward).
        loss.backward(inputs=params)
        average_gradients(params)
        nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        optimizer.step()

    @torch.no_grad()
    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self._policy(self._norm(obs), deterministic)

    @abstractmethod
    def _explore(self, nobs: torch.Tensor) -> torch.Tensor:
        """Exploring actions for normalised observations."""

    @abstractmethod
    def _policy(self, nobs: torch.Tensor, deterministic: bool) -> torch.Tensor: ...

    @abstractmethod
    def _update_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def _modules(self) -> dict[str, Any]:
        """Everything a checkpoint holds: modules, optimisers and tensors by name."""

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, obj in self._modules().items():
            out[name] = obj.state_dict() if hasattr(obj, "state_dict") else obj.clone()
        out["obs_norm"] = self.obs_norm.state_dict()
        out["counters"] = {"env_steps": self.env_steps, "updates": self.updates}
        out["replay"] = self.buffer.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, obj in self._modules().items():
            if isinstance(obj, torch.optim.Optimizer):
                load_optimizer(obj, state[name])
            elif hasattr(obj, "load_state_dict"):
                obj.load_state_dict(state[name])
            else:
                obj.copy_(state[name])
        self.obs_norm.load_state_dict(state["obs_norm"])
        self.env_steps = state["counters"]["env_steps"]
        self.updates = state["counters"]["updates"]
        if "replay" in state:  # checkpoints before the buffer was saved start it empty
            self.buffer.load_state_dict(state["replay"])
