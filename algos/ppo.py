"""Proximal policy optimisation (clipped surrogate, GAE, minibatch epochs), device-only.

Shapes: T rollout steps, N envs, B = T * N samples, O obs size, A action size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from algos.base import Algorithm
from algos.distributed import average_gradients, broadcast_parameters, merged_moments, world_size
from algos.gae import compute_gae
from algos.networks import Activation, CategoricalHead, GaussianHead, mlp
from algos.optim import Adam
from algos.rollout import RolloutStorage
from envs.base import ActionSpace, EnvStep
from envs.wrappers import RunningMeanStd
from harness.errors import FieldError


def _interpreted() -> bool:
    """Triton's CPU interpreter is on (tests run the fused update's kernels on CPU)."""
    import os

    return os.environ.get("TRITON_INTERPRET") == "1"


def fused_unavailable(
    c: PPOConfig, device: torch.device, obs_size: int, action_size: int, batch_size: int
) -> str | None:
    """Why PPO with config ``c`` cannot run its fused kernels (None: it can): on ``device``,
    for observations of ``obs_size`` values, ``action_size`` network outputs (logits or
    means) and ``batch_size`` samples per update."""
    if device.type != "cuda" and not _interpreted():
        return f"it needs a CUDA device, got {device.type}"
    if world_size() > 1:
        return "data-parallel runs average gradients between the minibatch steps"
    if c.policy_precision != "float32":
        return "it computes in float32 only (algo.policy_precision)"
    for key in ("actor_hidden", "critic_hidden"):
        widths = getattr(c, key)
        if len(widths) != 2 or any(w not in (16, 32, 64, 128) for w in widths):
            return f"algo.{key} must be two layers of 16, 32, 64 or 128, got {list(widths)}"
    if obs_size > 128:
        return f"it takes at most 128 observation values, got {obs_size}"
    if action_size > 64:
        return f"it takes at most 64 action values, got {action_size}"
    if batch_size // c.num_minibatches < 2:
        return "minibatches need at least 2 samples"
    return None


BACKEND = "inductor"  # torch.compile's backend for PPO.compile (tests use "aot_eager")


@dataclass(frozen=True)
class PPOConfig:
    name: str = "ppo"  # the algorithm: ppo, sac or td3
    not_capturable: ClassVar[str | None] = None  # the iteration never reads the device
    num_steps: int = 16  # T, rollout length per env per update
    num_epochs: int = 4  # passes over each rollout
    num_minibatches: int = 4  # minibatches per pass
    gamma: float = 0.99  # discount
    gae_lambda: float = 0.95  # GAE's lambda (bias against variance of advantages)
    clip_coef: float = 0.2  # surrogate ratio clip
    clip_value_loss: bool = True  # clip the value update to clip_coef, as the policy's
    value_coef: float = 1.0  # weight of the value loss
    entropy_coef: float = 0.0  # weight of the entropy bonus
    lr: float = 3e-4  # Adam's learning rate (the start of a schedule)
    # fixed; linear: to 0 over the budget; adaptive: from the KL, kept in [1e-5, 1e-2]
    # (rsl_rl's rule)
    lr_schedule: Literal["fixed", "linear", "adaptive"] = "adaptive"
    desired_kl: float = 0.005  # target KL of the adaptive schedule
    max_grad_norm: float = 1.0  # gradient norm clipped to this
    normalize_advantages: bool = True  # per minibatch, to mean 0 and std 1
    normalize_observations: bool = True  # running mean and std, saved with the policy
    actor_hidden: tuple[int, ...] = (64, 64)  # widths of the actor's hidden layers
    critic_hidden: tuple[int, ...] = (64, 64)  # widths of the critic's hidden layers
    activation: Activation = "tanh"  # tanh, elu or relu
    init_log_std: float = 0.0  # Gaussian head only
    # bfloat16: the networks' forward passes run under autocast (mixed precision).
    policy_precision: Literal["float32", "bfloat16"] = "float32"

    def __post_init__(self) -> None:
        for key in ("num_steps", "num_epochs", "num_minibatches"):
            if getattr(self, key) <= 0:
                raise FieldError(key, f"must be > 0, got {getattr(self, key)}")
        for key in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise FieldError(key, f"must be in [0, 1], got {getattr(self, key)}")
        for key in ("lr", "clip_coef", "desired_kl", "max_grad_norm"):
            if getattr(self, key) <= 0:
                raise FieldError(key, f"must be > 0, got {getattr(self, key)}")
        for key in ("value_coef", "entropy_coef"):
            if getattr(self, key) < 0:
                raise FieldError(key, f"must be >= 0, got {getattr(self, key)}")
        for key in ("actor_hidden", "critic_hidden"):
            if any(w <= 0 for w in getattr(self, key)):
                raise FieldError(key, f"widths must be > 0, got {list(getattr(self, key))}")


def update_statistics(means: torch.Tensor, lr: torch.Tensor) -> dict[str, torch.Tensor]:
    """An update's logged statistics from the minibatch means of (policy loss, value loss,
    entropy, KL, clip fraction) along the first axis."""
    names = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")
    return {**dict(zip(names, means, strict=True)), "lr": lr.clone()}


def clipped_losses(
    adv: torch.Tensor,
    ratio: torch.Tensor,
    values: torch.Tensor,
    mb: dict[str, torch.Tensor],
    clip: float | torch.Tensor,
    clip_value_loss: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped surrogate and value losses, means over the last axis (the minibatch)."""
    surrogate = torch.max(-adv * ratio, -adv * ratio.clamp(1.0 - clip, 1.0 + clip)).mean(-1)
    if clip_value_loss:
        clipped = mb["values"] + (values - mb["values"]).clamp(-clip, clip)
        value_loss = torch.max((values - mb["returns"]) ** 2, (clipped - mb["returns"]) ** 2)
    else:
        value_loss = (values - mb["returns"]) ** 2
    return surrogate, value_loss.mean(-1)


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs over normalised observations."""

    def __init__(self, config: PPOConfig, obs_size: int, action_space: ActionSpace) -> None:
        super().__init__()
        if action_space.kind == "discrete":
            self.head: CategoricalHead | GaussianHead = CategoricalHead(action_space.n)
        else:
            self.head = GaussianHead(action_space.shape, config.init_log_std)
        act = config.activation
        self.actor = mlp(obs_size, config.actor_hidden, self.head.out_size, act, out_gain=0.01)
        self.critic = mlp(obs_size, config.critic_hidden, 1, act, out_gain=1.0)
        self.obs_norm = RunningMeanStd(obs_size)
        self.normalize = config.normalize_observations
        self.bf16 = config.policy_precision == "bfloat16"

    def norm(self, obs: torch.Tensor) -> torch.Tensor:
        return self.obs_norm(obs) if self.normalize else obs

    def _run(self, net: nn.Module, nobs: torch.Tensor) -> torch.Tensor:
        """The network's output in float32, computed in bfloat16 when configured."""
        with torch.autocast(nobs.device.type, torch.bfloat16, enabled=self.bf16):
            return net(nobs).float()

    def actor_out(self, nobs: torch.Tensor) -> torch.Tensor:
        return self._run(self.actor, nobs)

    def value(self, nobs: torch.Tensor) -> torch.Tensor:
        return self._run(self.critic, nobs).squeeze(-1)

    def forward(
        self, nobs: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the update differentiates: log-probabilities of ``actions``, entropies and
        values, for normalised observations [B, O]."""
        out = self.actor_out(nobs)
        return self.head.log_prob(out, actions), self.head.entropy(out), self.value(nobs)


class PPO(Algorithm):
    def __init__(
        self,
        config: PPOConfig,
        obs_size: int,
        action_space: ActionSpace,
        num_envs: int,
        device: torch.device,
        generator: torch.Generator,
    ) -> None:
        self.config = config
        self.device = device
        self.generator = generator
        self.steps_per_update = config.num_steps
        self.batch_size = config.num_steps * num_envs  # B
        if self.batch_size < config.num_minibatches:
            raise FieldError(
                "num_minibatches",
                f"must be <= num_steps * num_envs = {self.batch_size}, "
                f"got {config.num_minibatches}",
            )
        self.model = ActorCritic(config, obs_size, action_space).to(device)
        broadcast_parameters(self.model)  # data-parallel ranks start from the same weights
        # lr lives on the device so schedules change it without a host sync or recompile.
        self.lr = torch.tensor(config.lr, device=device)
        self.optimizer = Adam(self.model.parameters(), lr=self.lr)
        discrete = action_space.kind == "discrete"
        self.storage = RolloutStorage(
            config.num_steps,
            num_envs,
            obs_size,
            () if discrete else (action_space.shape,),
            torch.int64 if discrete else torch.float32,
            device,
        )
        self.last_obs: torch.Tensor | None = None
        self.fused: Any = None  # algos.ppo_fused.FusedPPO once fuse ran
        # Progress through the budget, on the device: a graph replay reads its new value.
        self.progress = torch.zeros((), device=device)

    # Rollout ----------------------------------------------------------------------------

    def compile(self) -> None:
        """Each piece of the iteration becomes a few fused kernels (on CUDA; cuBLAS does the
        matrix products): the policy step with its storage writes, the outcome's storage
        writes with the value of final observations, GAE with its bootstrap, the minibatch's
        forward and losses (AOTAutograd compiles their backward) and its clipping, Adam and
        lr step. Random numbers and the minibatch orders stay outside, drawn from the run's
        generator as eager runs draw them. Data-parallel runs stay eager (their collectives
        sit between the pieces)."""
        if world_size() > 1:
            return
        import torch._dynamo  # the compiler stack: seconds of import, only when asked for

        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 16)
        # Combo kernels merge the per-parameter kernels of clipping and Adam: 1,764 -> 1,348
        # kernels and 5.1 -> 4.6 ms per iteration at 2048 envs (H200, reports.iteration_kernels).
        options = {"combo_kernels": True} if BACKEND == "inductor" else None
        for name in ("_policy_step", "_outcome_step", "_gae", "_losses", "_optimizer_step"):
            fn = getattr(self, name)
            compiled = torch.compile(
                fn, dynamic=False, fullgraph=True, backend=BACKEND, options=options
            )
            setattr(self, name, compiled)

    def fused_unavailable(self) -> str | None:
        return fused_unavailable(
            self.config,
            self.device,
            self.storage.obs.shape[-1],
            self.model.head.out_size,
            self.batch_size,
        )

    def fuse(self) -> None:
        """The policy step, the values, GAE and the minibatch steps as Triton kernels
        (algos.ppo_fused): 306 kernels per iteration at 2048 envs where the torch steps
        launch 4,502 (reports.iteration_kernels on an H200)."""
        why_not = self.fused_unavailable()
        if why_not:
            raise RuntimeError(why_not)
        from algos.ppo_fused import FusedPPO  # Triton's import, only when asked for

        self.fused = FusedPPO(self)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        # Drawn outside the (compiled) policy step, so compiled and eager runs draw alike.
        noise = self.model.head.noise(obs.shape[0], obs.device, self.generator)
        if self.fused is not None:
            return self.fused.act(obs, noise, self.storage.policy_row())
        return self._policy_step(obs, noise, self.storage.policy_row())

    def _policy_step(
        self, obs: torch.Tensor, noise: torch.Tensor, rows: tuple[torch.Tensor, ...]
    ) -> torch.Tensor:
        """Actions for obs [N, O]; the storage ``rows`` get the normalised obs, the actions,
        their log-probabilities and the values (written here, so a compiled step writes
        them from its own kernels)."""
        model = self.model
        if model.normalize:
            model.obs_norm.update(obs)
        nobs = model.norm(obs)
        out = model.actor_out(nobs)
        actions = model.head.sample_from(out, noise)
        outputs = (nobs, actions, model.head.log_prob(out, actions), model.value(nobs))
        for row, value in zip(rows, outputs, strict=True):
            row.copy_(value)
        return actions

    @torch.no_grad()
    def observe(self, step: EnvStep) -> None:
        if self.fused is not None:
            rows = self.storage.outcome_row()
            outcome = (step.reward, step.terminated, step.truncated)
            for row, value in zip(rows[:3], outcome, strict=True):
                row.copy_(value)
            self.fused.values(step.info["final_obs"], rows[3])
        else:
            self._outcome_step(
                step.info["final_obs"],
                (step.reward, step.terminated, step.truncated),
                self.storage.outcome_row(),
            )
        self.storage.advance()
        if self.storage.full:  # GAE's bootstrap, at one address for a captured update
            if self.last_obs is None:
                self.last_obs = step.obs.clone()
            else:
                self.last_obs.copy_(step.obs)

    def _outcome_step(
        self,
        final_obs: torch.Tensor,
        outcome: tuple[torch.Tensor, ...],
        rows: tuple[torch.Tensor, ...],
    ) -> None:
        """The storage ``rows`` get the reward, terminated and truncated of ``outcome`` and the
        value of the final observations."""
        for row, value in zip(rows, (*outcome, self._value_of(final_obs)), strict=True):
            row.copy_(value)

    def _value_of(self, obs: torch.Tensor) -> torch.Tensor:
        return self.model.value(self.model.norm(obs))

    @torch.no_grad()
    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        out = self.model.actor_out(self.model.norm(obs))
        return self.model.head.mode(out) if deterministic else self.model.head.sample(out, None)

    # Update -----------------------------------------------------------------------------

    def update_replayed(self) -> None:
        self.storage.clear()

    def set_progress(self, fraction: float) -> None:
        self.progress.fill_(min(max(fraction, 0.0), 1.0))

    def update(self) -> dict[str, torch.Tensor]:
        if not self.storage.full or self.last_obs is None:
            raise RuntimeError("PPO.update needs a full rollout (num_steps act/observe pairs)")
        c, s = self.config, self.storage
        if self.fused is not None:
            with torch.no_grad():
                last_values = self.fused.values(self.last_obs, self.fused.last_values)
                advantages, returns = self.fused.gae(last_values)
                if c.lr_schedule == "linear":
                    self.lr.copy_(c.lr * (1.0 - self.progress))
                means = self.fused.update(advantages, returns)
            s.clear()
            return update_statistics(means, self.lr)
        with torch.no_grad():
            advantages, returns = self._gae(
                s.rewards, s.values, self.last_obs, s.terminated, s.truncated, s.final_values
            )
        if c.lr_schedule == "linear":
            self.lr.copy_(c.lr * (1.0 - self.progress))
        batch = {
            "obs": s.obs.flatten(0, 1),  # [B, O]
            "actions": s.actions.flatten(0, 1),  # [B] or [B, A]
            "log_probs": s.log_probs.flatten(),  # [B]
            "values": s.values.flatten(),  # [B]
            "advantages": advantages.flatten(),  # [B]
            "returns": returns.flatten(),  # [B]
        }
        minibatch = self.batch_size // c.num_minibatches
        orders = [
            torch.randperm(self.batch_size, device=self.device, generator=self.generator)
            for _ in range(c.num_epochs)
        ]
        steps = [
            o[j * minibatch : (j + 1) * minibatch] for o in orders for j in range(c.num_minibatches)
        ]
        adv_stats: list[torch.Tensor | None] = [None] * len(steps)
        if c.normalize_advantages and world_size() > 1:
            # every minibatch's statistics over all ranks, in one collective for the update
            mean, m2, n = merged_moments(batch["advantages"][torch.stack(steps)], 1)
            adv_stats = list(torch.stack([mean, torch.sqrt(m2 / (n - 1))], 1))  # [2] each
        pairs = zip(steps, adv_stats, strict=True)
        # policy loss, value loss, entropy, KL, clip fraction: means over the minibatches
        means = torch.stack([self._minibatch_step(batch, idx, st) for idx, st in pairs]).mean(0)
        s.clear()
        return update_statistics(means, self.lr)

    def _gae(
        self,
        rewards: torch.Tensor,
        values: torch.Tensor,
        last_obs: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        final_values: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        last_values = self._value_of(last_obs)
        return compute_gae(
            rewards, values, last_values, terminated, truncated, final_values, c.gamma, c.gae_lambda
        )

    def _minibatch_step(
        self, batch: dict[str, torch.Tensor], idx: torch.Tensor, adv_stats: torch.Tensor | None
    ) -> torch.Tensor:
        """One gradient step on the samples ``idx`` of ``batch``; ``adv_stats`` [2] is the
        advantages' mean and std over every rank's minibatch (None: this minibatch's own).
        Returns [5] detached statistics."""
        loss, stats = self._losses(batch, idx, adv_stats)
        self.optimizer.zero_grad()
        loss.backward()
        # KL averaged over ranks with the gradients, so that every rank adapts lr alike
        kl = stats[3]
        approx_kl = average_gradients(self.model.parameters(), kl)
        if approx_kl is not kl:
            stats = torch.cat([stats[:3], approx_kl.view(1), stats[4:]])
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in self.optimizer.params]
        self._optimizer_step(grads, approx_kl)
        return stats

    def _losses(
        self, batch: dict[str, torch.Tensor], idx: torch.Tensor, adv_stats: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The minibatch's loss and its [5] detached statistics (policy loss, value loss,
        entropy, KL, clip fraction)."""
        c = self.config
        mb = {k: v[idx] for k, v in batch.items()}
        log_probs, entropies, values = self.model(mb["obs"], mb["actions"])
        entropy = entropies.mean()

        adv = mb["advantages"]
        if c.normalize_advantages:
            mean, std = (adv.mean(), adv.std()) if adv_stats is None else adv_stats
            adv = (adv - mean) / (std + 1e-8)
        log_ratio = log_probs - mb["log_probs"]
        ratio = log_ratio.exp()
        surrogate, value_loss = clipped_losses(
            adv, ratio, values, mb, c.clip_coef, c.clip_value_loss
        )
        loss = surrogate + c.value_coef * value_loss - c.entropy_coef * entropy
        with torch.no_grad():
            approx_kl = ((ratio - 1.0) - log_ratio).mean()  # k3 estimator (>= 0)
            clip_fraction = ((ratio - 1.0).abs() > c.clip_coef).float().mean()
            stats = torch.stack([surrogate, value_loss, entropy, approx_kl, clip_fraction])
        return loss, stats

    @torch.no_grad()
    def _optimizer_step(self, grads: list[torch.Tensor], approx_kl: torch.Tensor) -> None:
        """Clip the gradients' norm (as nn.utils.clip_grad_norm_), step Adam, adapt lr."""
        total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
        scale = (self.config.max_grad_norm / (total + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(grads, scale)
        self.optimizer.step(grads)
        if self.config.lr_schedule == "adaptive":
            self._adapt_lr(approx_kl)

    def _adapt_lr(self, kl: torch.Tensor) -> None:
        """rsl_rl's rule, branch-free: shrink when KL > 2x target, grow when < target / 2."""
        target = self.config.desired_kl
        factor = torch.where(kl > 2.0 * target, 1.0 / 1.5, torch.where(kl < target / 2.0, 1.5, 1.0))
        self.lr.copy_((self.lr * factor).clamp(1e-5, 1e-2))

    # Checkpoints ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr": self.lr.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr.copy_(state["lr"])
