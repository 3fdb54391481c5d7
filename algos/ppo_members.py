"""K independent PPO runs trained as one batched program (batched study trials).

Member k holds the weights, optimiser state, observation statistics and hyperparameters
of one run; they are stacked along a leading K axis and every layer is a batched matrix
product, so K runs cost about one kernel sequence. Random numbers come from each member's
own generator with the shapes its run would draw alone, so a member follows the run it
stands for (same actions and minibatches; floats equal within rounding).

Shapes: K members, N envs per member (the env holds K * N, member-major), T steps,
B = T * N samples per member, M minibatch size, O obs size, A action size.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from algos.gae import compute_gae
from algos.optim import Adam
from algos.ppo import ActorCritic, PPOConfig, clipped_losses, update_statistics
from algos.rollout import RolloutStorage
from envs.base import ActionSpace, EnvStep

# Settings that change shapes, loop counts or code paths: equal within a batch.
SHAPE_KEYS = (
    "num_steps",
    "num_epochs",
    "num_minibatches",
    "actor_hidden",
    "critic_hidden",
    "activation",
    "normalize_advantages",
    "normalize_observations",
    "clip_value_loss",
    "lr_schedule",
    "policy_precision",
)
# Per-member [K] tensors.
MEMBER_KEYS = (
    "lr",
    "gamma",
    "gae_lambda",
    "clip_coef",
    "value_coef",
    "entropy_coef",
    "max_grad_norm",
    "desired_kl",
)


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[K, B, I] x [K, O, I] + [K, O] -> [K, B, O]."""
    return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))


class _BatchedLinear(torch.autograd.Function):
    """`_linear` whose weight gradient splits the long sample axis into chunks: a batched
    product with a 64 x 64 output and a 16k-long reduction leaves most of a GPU idle."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        return _linear(x, w, b)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x, w = ctx.saved_tensors
        k, n, i = x.shape
        chunks = math.gcd(n, 32) if n >= 2048 else 1
        # The products autograd would form (x^T g, then transposed), so that unchunked
        # they round alike.
        xt = x.reshape(k * chunks, n // chunks, i).transpose(1, 2)
        gw = torch.bmm(xt, grad.reshape(k * chunks, n // chunks, -1))
        if chunks > 1:
            gw = gw.view(k, chunks, *gw.shape[1:]).sum(1)
        return torch.bmm(grad, w), gw.transpose(1, 2), grad.sum(1)


def check_shapes(configs: list[Any], keys: tuple[str, ...]) -> None:
    """Members of one batch agree on every key that sets a shape or a loop."""
    for other in configs[1:]:
        for key in keys:
            if getattr(other, key) != getattr(configs[0], key):
                raise ValueError(f"algo.{key} must be equal within a batch")


@torch.no_grad()
def merge_moments(
    mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor, obs: torch.Tensor
) -> None:
    """Merge each member's [N, O] batch of ``obs`` [K, N, O] into its running statistics
    mean, var [K, O] and count [K], in place (Chan et al., as envs.wrappers.RunningMeanStd)."""
    batch_mean, batch_var = obs.mean(1), obs.var(1, unbiased=False)
    batch_count = float(obs.shape[1])
    delta = batch_mean - mean
    total = count + batch_count  # [K]
    new_mean = mean + delta * (batch_count / total).unsqueeze(1)
    m2 = (
        var * count.unsqueeze(1)
        + batch_var * batch_count
        + delta**2 * (count * batch_count / total).unsqueeze(1)
    )
    mean.copy_(new_mean)
    var.copy_(m2 / total.unsqueeze(1))
    count.copy_(total)


def standardize(
    obs: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, clip: float
) -> torch.Tensor:
    """``obs`` [K, N, O] standardised by each member's mean and var [K, O] and clipped, as
    envs.wrappers.RunningMeanStd does for one run."""
    return ((obs - mean.unsqueeze(1)) / torch.sqrt(var.unsqueeze(1) + 1e-8)).clamp(-clip, clip)


@torch.no_grad()
def clip_member_gradients(params: list[torch.Tensor], max_norm: torch.Tensor) -> None:
    """Each member's gradient norm over stacked ``params`` [K, ...] clipped to its
    ``max_norm`` [K] (as nn.utils.clip_grad_norm_ does for a run alone)."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads])  # [P, K]
    total = norms.norm(dim=0)  # [K]
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_(grads, [coef.view(-1, *([1] * (g.dim() - 1))) for g in grads])


class PPOMembers:
    """The `Algorithm` contract over K members: act/observe take the whole batched env's
    tensors ([K * N, ...]); update returns [K] statistics."""

    def __init__(
        self,
        configs: list[PPOConfig],
        models: list[ActorCritic],
        action_space: ActionSpace,
        num_envs: int,
        device: torch.device,
        generators: list[torch.Generator],
    ) -> None:
        c = self.config = configs[0]
        check_shapes(configs, SHAPE_KEYS)
        self.members = k = len(configs)
        self.num_envs = num_envs  # N, per member
        self.device = device
        self.generators = generators
        self.steps_per_update = c.num_steps
        self.batch_size = c.num_steps * num_envs  # B
        self.discrete = action_space.kind == "discrete"
        self.template = models[0]  # names and layer order of one member's model
        self.bf16 = c.policy_precision == "bfloat16"
        self.normalize = c.normalize_observations
        # Stacked tensors under the names one member's state_dict uses.
        self.params: dict[str, nn.Parameter] = {
            name: nn.Parameter(torch.stack([dict(m.named_parameters())[name] for m in models]))
            for name, _ in models[0].named_parameters()
        }
        self.buffers = {
            name: torch.stack([dict(m.named_buffers())[name] for m in models])
            for name, _ in models[0].named_buffers()
        }
        self.hyper = {
            key: torch.tensor([getattr(cfg, key) for cfg in configs], device=device)
            for key in MEMBER_KEYS
        }
        # GAE multiplies gamma * lambda in double first, as a run alone does.
        self.gamma_lambda = torch.tensor(
            [cfg.gamma * cfg.gae_lambda for cfg in configs], device=device
        )
        # gamma, lambda and their product per env [K * N] (made once: a repeat in the
        # update would wait on the GPU for its output size).
        self.gae_per_env = [v.repeat_interleave(num_envs) for v in self._gae_members()]
        self.base_lr = self.hyper["lr"].clone()
        self.lr = self.hyper["lr"].clone()  # [K], what Adam reads
        self.optimizer = Adam(self.params.values(), lr=self.lr)
        # 1 for members still training, 0 for those stopped: a stopped member's lr is 0.
        self.active = torch.ones(k, device=device)
        self.storage = RolloutStorage(
            c.num_steps,
            k * num_envs,
            models[0].obs_norm.mean.shape[0],
            () if self.discrete else (action_space.shape,),
            torch.int64 if self.discrete else torch.float32,
            device,
        )
        self.last_obs: torch.Tensor | None = None
        self.progress = torch.zeros((), device=device)

    # Networks ---------------------------------------------------------------------------

    def _mlp(self, prefix: str, x: torch.Tensor) -> torch.Tensor:
        """[K, B, in] -> [K, B, out] through member k's copy of ``template.<prefix>``."""
        with torch.autocast(x.device.type, torch.bfloat16, enabled=self.bf16):
            for i, layer in enumerate(getattr(self.template, prefix)):
                if isinstance(layer, nn.Linear):
                    w, b = self.params[f"{prefix}.{i}.weight"], self.params[f"{prefix}.{i}.bias"]
                    x = _BatchedLinear.apply(x, w, b) if not self.bf16 else _linear(x, w, b)
                else:
                    x = layer(x)  # a stateless activation
            return x.float()

    def _norm(self, obs: torch.Tensor) -> torch.Tensor:
        """[K, N, O] standardised by each member's statistics."""
        if not self.normalize:
            return obs
        mean, var = self.buffers["obs_norm.mean"], self.buffers["obs_norm.var"]
        return standardize(obs, mean, var, self.template.obs_norm.clip)

    def _update_norm(self, obs: torch.Tensor) -> None:
        mean, var, count = (self.buffers[f"obs_norm.{n}"] for n in ("mean", "var", "count"))
        merge_moments(mean, var, count, obs)

    def _value(self, nobs: torch.Tensor) -> torch.Tensor:
        return self._mlp("critic", nobs).squeeze(-1)

    # Heads (as algos.networks, with a member axis and member generators) ---------------

    def _sample(self, out: torch.Tensor) -> torch.Tensor:
        shape = out.shape[1:]
        draw = torch.rand if self.discrete else torch.randn
        noise = torch.stack([draw(shape, device=out.device, generator=g) for g in self.generators])
        if self.discrete:
            return (out - torch.log(-torch.log(noise.clamp_min(1e-20)))).argmax(-1)
        return out + noise * self.params["head.log_std"].exp().unsqueeze(1)

    def _log_prob(self, out: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        if self.discrete:
            logp = torch.log_softmax(out, dim=-1)
            return logp.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        log_std = self.params["head.log_std"].unsqueeze(1)  # [K, 1, A]
        z = (actions - out) / log_std.exp()
        return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def _entropy(self, out: torch.Tensor) -> torch.Tensor:
        """[K] mean entropy of each member's batch."""
        if self.discrete:
            logp = torch.log_softmax(out, dim=-1)
            return (-(logp.exp() * logp).sum(-1)).mean(1)
        per_dim = 0.5 + 0.5 * math.log(2 * math.pi) + self.params["head.log_std"]  # [K, A]
        return per_dim.sum(-1)

    # Rollout ----------------------------------------------------------------------------

    def _members(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(self.members, self.num_envs, *x.shape[1:])

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        obs = self._members(obs)
        if self.normalize:
            self._update_norm(obs)
        nobs = self._norm(obs)
        out = self._mlp("actor", nobs)
        actions = self._sample(out)
        self.storage.add_policy(
            nobs.flatten(0, 1),
            actions.flatten(0, 1),
            self._log_prob(out, actions).flatten(),
            self._value(nobs).flatten(),
        )
        return actions.flatten(0, 1)

    @torch.no_grad()
    def observe(self, step: EnvStep) -> None:
        final = self._norm(self._members(step.info["final_obs"]))
        final_values = self._value(final).flatten()
        self.storage.add_outcome(step.reward, step.terminated, step.truncated, final_values)
        self.last_obs = step.obs

    @torch.no_grad()
    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        out = self._mlp("actor", self._norm(self._members(obs)))
        actions = out.argmax(-1) if self.discrete else out
        if not deterministic:
            actions = self._sample(out)
        return actions.flatten(0, 1)

    # Update -----------------------------------------------------------------------------

    def set_progress(self, fraction: float) -> None:
        self.progress.fill_(min(max(fraction, 0.0), 1.0))

    def _by_member(self, x: torch.Tensor) -> torch.Tensor:
        """[T, K * N, ...] -> [K, B, ...] with each member's samples in its run's order."""
        t, k, n = x.shape[0], self.members, self.num_envs
        x = x.view(t, k, n, *x.shape[2:]).transpose(0, 1)
        return x.reshape(k, t * n, *x.shape[3:])

    def update(self) -> dict[str, torch.Tensor]:
        if not self.storage.full or self.last_obs is None:
            raise RuntimeError("PPOMembers.update needs a full rollout")
        c, s = self.config, self.storage
        with torch.no_grad():
            last_values = self._value(self._norm(self._members(self.last_obs))).flatten()
            advantages, returns = compute_gae(
                s.rewards,
                s.values,
                last_values,
                s.terminated,
                s.truncated,
                s.final_values,
                *self.gae_per_env,
            )
        if c.lr_schedule == "linear":
            self.lr.copy_(self.base_lr * (1.0 - self.progress))
        batch = {
            "obs": self._by_member(s.obs),
            "actions": self._by_member(s.actions),
            "log_probs": self._by_member(s.log_probs),
            "values": self._by_member(s.values),
            "advantages": self._by_member(advantages),
            "returns": self._by_member(returns),
        }
        totals = torch.zeros(5, self.members, device=self.device)
        minibatch = self.batch_size // c.num_minibatches
        rows = torch.arange(self.members, device=self.device).unsqueeze(1)  # [K, 1]
        for _ in range(c.num_epochs):
            order = torch.stack(
                [
                    torch.randperm(self.batch_size, device=self.device, generator=g)
                    for g in self.generators
                ]
            )  # [K, B]
            for start in range(0, minibatch * c.num_minibatches, minibatch):
                idx = order[:, start : start + minibatch]  # [K, M]
                totals += self._minibatch_step({k: v[rows, idx] for k, v in batch.items()})
        s.clear()
        return update_statistics(totals / (c.num_epochs * c.num_minibatches), self.lr)

    def _minibatch_step(self, mb: dict[str, torch.Tensor]) -> torch.Tensor:
        """One gradient step of every member; returns [5, K] detached statistics."""
        c, h = self.config, self.hyper
        out = self._mlp("actor", mb["obs"])
        log_probs = self._log_prob(out, mb["actions"])
        entropy = self._entropy(out)  # [K]
        values = self._value(mb["obs"])

        adv = mb["advantages"]  # [K, M]
        if c.normalize_advantages:
            adv = (adv - adv.mean(1, keepdim=True)) / (adv.std(1, keepdim=True) + 1e-8)
        clip = h["clip_coef"].unsqueeze(1)
        log_ratio = log_probs - mb["log_probs"]
        ratio = log_ratio.exp()
        surrogate, value_loss = clipped_losses(adv, ratio, values, mb, clip, c.clip_value_loss)
        loss = surrogate + h["value_coef"] * value_loss - h["entropy_coef"] * entropy  # [K]

        self.optimizer.zero_grad()
        loss.sum().backward()  # members share no weights: each gets its own gradient
        self._clip_gradients()
        self.optimizer.step()

        with torch.no_grad():
            approx_kl = ((ratio - 1.0) - log_ratio).mean(1)
            clip_fraction = ((ratio - 1.0).abs() > clip).float().mean(1)
            if c.lr_schedule == "adaptive":
                target = h["desired_kl"]
                factor = torch.where(
                    approx_kl > 2.0 * target,
                    1.0 / 1.5,
                    torch.where(approx_kl < target / 2.0, 1.5, 1.0),
                )
                self.lr.copy_((self.lr * factor).clamp(1e-5, 1e-2) * self.active)
            return torch.stack(
                [
                    surrogate.detach(),
                    value_loss.detach(),
                    entropy.detach(),
                    approx_kl,
                    clip_fraction,
                ]
            )

    def _clip_gradients(self) -> None:
        clip_member_gradients(list(self.params.values()), self.hyper["max_grad_norm"])

    def stop(self, member: int) -> None:
        """Member ``member`` learns no more (its lr stays 0); the others go on unchanged."""
        self.active[member] = 0.0
        self.lr[member] = 0.0
        self.base_lr[member] = 0.0

    def select(self, keep: list[int]) -> None:
        """Keep only members ``keep`` (the others stopped): every stacked tensor is cut, so
        stopped members cost nothing more. Call between iterations."""
        index = torch.tensor(keep, device=self.device)
        old = self.optimizer
        self.params = {
            name: nn.Parameter(p.detach()[index].clone()) for name, p in self.params.items()
        }
        self.buffers = {name: b[index].clone() for name, b in self.buffers.items()}
        self.hyper = {key: v[index] for key, v in self.hyper.items()}
        self.gamma_lambda = self.gamma_lambda[index]
        self.base_lr, self.lr, self.active = self.base_lr[index], self.lr[index], self.active[index]
        self.optimizer = Adam(self.params.values(), lr=self.lr)
        self.optimizer.exp_avg = [t[index].clone() for t in old.exp_avg]
        self.optimizer.exp_avg_sq = [t[index].clone() for t in old.exp_avg_sq]
        self.optimizer.steps.copy_(old.steps)
        self.generators = [self.generators[i] for i in keep]
        self.members = len(keep)
        self.gae_per_env = [v.repeat_interleave(self.num_envs) for v in self._gae_members()]
        s = self.storage
        self.storage = RolloutStorage(
            s.num_steps,
            self.members * self.num_envs,
            s.obs.shape[-1],
            tuple(s.actions.shape[2:]),
            s.actions.dtype,
            self.device,
        )
        self.last_obs = None

    def _gae_members(self) -> tuple[torch.Tensor, ...]:
        return (self.hyper["gamma"], self.hyper["gae_lambda"], self.gamma_lambda)

    # Checkpoints: one member's state in the layout of a run alone (algos.ppo.PPO) -------

    def member_state_dict(self, member: int) -> dict[str, Any]:
        model = {name: p[member].detach().clone() for name, p in self.params.items()}
        model.update({name: b[member].clone() for name, b in self.buffers.items()})
        opt = self.optimizer
        return {
            "model": model,
            "optimizer": {
                "exp_avg": [t[member].clone() for t in opt.exp_avg],
                "exp_avg_sq": [t[member].clone() for t in opt.exp_avg_sq],
                "steps": opt.steps.clone(),
            },
            "lr": self.lr[member].clone(),
        }
