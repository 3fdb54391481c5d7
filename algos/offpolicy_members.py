"""K independent SAC or TD3 runs trained as one batched program (batched study trials).

As `algos.ppo_members` does for PPO: member k's networks, optimiser states, observation
statistics, replay buffer and hyperparameters are one slice of tensors stacked along a
leading K axis, every layer is a batched matrix product, and each member draws its random
numbers from its own generator with the shapes its run alone would draw, so it follows
that run (same random actions and replay indices; floats equal within rounding).

Shapes: K members, N envs per member (the env holds K * N, member-major), B batch size,
O obs size, A action size.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from algos import sac, td3
from algos.offpolicy import OffPolicyConfig, adam
from algos.optim import Adam
from algos.ppo_members import (
    _BatchedLinear,
    check_shapes,
    clip_member_gradients,
    merge_moments,
    standardize,
)
from algos.replay import StackedReplay
from envs.base import ActionSpace, EnvStep
from envs.wrappers import RunningMeanStd

# Settings that change shapes, loop counts or code paths: equal within a batch.
_SHARED_SHAPE_KEYS = (
    "num_steps",
    "updates_per_iteration",
    "batch_size",
    "buffer_size",
    "learning_starts",
    "n_step",
    "hidden",
    "activation",
    "normalize_observations",
)
SHAPE_KEYS = {
    "sac": (*_SHARED_SHAPE_KEYS, "autotune_alpha"),
    "td3": (*_SHARED_SHAPE_KEYS, "policy_delay"),
}
# Per-member [K] tensors (TD3's exploration_noise_min gives per-env stds, drawn per member).
MEMBER_KEYS = {
    "sac": ("gamma", "tau", "actor_lr", "critic_lr", "max_grad_norm", "alpha_lr"),
    "td3": (
        "gamma",
        "tau",
        "actor_lr",
        "critic_lr",
        "max_grad_norm",
        "policy_noise",
        "noise_clip",
    ),
}
_TRAINED = {"actor": "actor_opt", "critic": "critic_opt"}  # module -> its optimiser


class OffPolicyMembers:
    """The `Algorithm` contract over K SAC or TD3 members: act/observe take the whole
    batched env's tensors ([K * N, ...]); update returns [K] statistics."""

    def __init__(
        self,
        configs: list[OffPolicyConfig],
        seeds: list[int],
        obs_size: int,
        action_space: ActionSpace,
        num_envs: int,
        device: torch.device,
        generators: list[torch.Generator],
    ) -> None:
        c = self.config = configs[0]
        self.name = c.name
        check_shapes(configs, SHAPE_KEYS[self.name])
        if action_space.kind != "continuous":
            raise ValueError(f"{c.name} needs continuous actions")
        self.members = len(configs)
        self.num_envs = num_envs
        self.device = device
        self.generators = generators
        self.action_size = a = action_space.shape
        self.steps_per_update = c.num_steps
        module = sac if self.name == "sac" else td3
        nets = []
        for cfg, seed in zip(configs, seeds, strict=True):
            torch.manual_seed(seed)  # as a run alone: the seed fixes the init weights
            nets.append(module.networks(cfg, obs_size, a))  # type: ignore[arg-type]
        self.params: dict[str, torch.Tensor] = {}
        for name, module in nets[0].items():
            for pname, _ in module.named_parameters():
                stacked = torch.stack([dict(n[name].named_parameters())[pname] for n in nets])
                stacked = stacked.detach().to(device)
                self.params[f"{name}.{pname}"] = (
                    nn.Parameter(stacked) if name in _TRAINED else stacked
                )
        # One member's modules: layer order and names, and torch.optim's checkpoint layout
        # (moved only now: `to` moves a module in place, and the stack above reads it).
        self.template = {name: net.to(device) for name, net in nets[0].items()}
        self.hyper = {
            key: torch.tensor([getattr(cfg, key) for cfg in configs], device=device)
            for key in MEMBER_KEYS[self.name]
        }
        if self.name == "sac":
            alphas = [math.log(cfg.init_alpha) for cfg in configs]  # type: ignore[attr-defined]
            self.log_alpha = nn.Parameter(torch.tensor(alphas, device=device))
            entropies = [getattr(cfg, "target_entropy", None) for cfg in configs]
            self.target_entropy = torch.tensor(
                [-float(a) if e is None else e for e in entropies], device=device
            )
        else:  # TD3: each member's per-env exploration stds, drawn as its run draws them
            self.exploration_std = torch.stack(
                [
                    td3.exploration_std(cfg, num_envs, device, g)  # type: ignore[arg-type]
                    for cfg, g in zip(configs, generators, strict=True)
                ]
            )  # [K, N, 1]
            self.actor_updates = 0
            self.last_actor_loss = torch.zeros(self.members, device=device)
        self.lr = {
            "actor": self.hyper["actor_lr"].clone(),
            "critic": self.hyper["critic_lr"].clone(),
        }
        self.optimizers = {
            module_name: Adam(self._trained(module_name), lr=self.lr[module_name])
            for module_name in _TRAINED
        }
        if self.name == "sac":
            self.lr["alpha"] = self.hyper["alpha_lr"].clone()
            self.optimizers["alpha"] = Adam([self.log_alpha], lr=self.lr["alpha"])
        self.obs_clip = RunningMeanStd(obs_size).clip
        self.obs_mean = torch.zeros(self.members, obs_size, device=device)
        self.obs_var = torch.ones(self.members, obs_size, device=device)
        self.obs_count = torch.full((self.members,), 1e-4, device=device)
        self.replay = StackedReplay(self.members, num_envs, c.buffer_size, obs_size, a, device)
        self.env_steps = 0  # host count of vectorised steps seen (per env)
        self.updates = 0
        self.last_obs: torch.Tensor | None = None
        self._actions: torch.Tensor | None = None

    # Networks ---------------------------------------------------------------------------

    def _trained(self, module: str) -> list[torch.Tensor]:
        return [p for name, p in self.params.items() if name.startswith(f"{module}.")]

    def _forward(self, prefix: str, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """[K, B, in] -> [K, B, out] through each member's copy of ``layer``."""
        if isinstance(layer, nn.Linear):
            w, b = self.params[f"{prefix}.weight"], self.params[f"{prefix}.bias"]
            return _BatchedLinear.apply(x, w, b)
        if isinstance(layer, nn.Sequential):
            for i, child in enumerate(layer):
                x = self._forward(f"{prefix}.{i}", child, x)
            return x
        return layer(x)  # a stateless activation

    def _net(self, module: str, part: str, x: torch.Tensor) -> torch.Tensor:
        """``template[module].<part>`` for every member ("" for the whole module)."""
        layer = self.template[module]
        for attr in filter(None, part.split(".")):
            layer = getattr(layer, attr)
        return self._forward(".".join(filter(None, (module, part))), layer, x)

    def _q(self, critic: str, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = torch.cat([obs, actions], dim=-1)
        return self._net(critic, "q1", x).squeeze(-1), self._net(critic, "q2", x).squeeze(-1)

    def _randn(self, shape: torch.Size) -> torch.Tensor:
        """[K, *shape] normal draws, member k's from its generator."""
        return torch.stack(
            [torch.randn(shape, device=self.device, generator=g) for g in self.generators]
        )

    def _sac_actor(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sac.SquashedGaussianActor for every member: actions [K, B, A], log-probs [K, B]."""
        mean, log_std = self._net("actor", "net", obs).chunk(2, dim=-1)
        log_std = log_std.clamp(sac.LOG_STD_MIN, sac.LOG_STD_MAX)
        noise = self._randn(mean.shape[1:])
        pre_tanh = mean + log_std.exp() * noise
        log_prob = (-0.5 * noise**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (
            2.0 * (math.log(2.0) - pre_tanh - nn.functional.softplus(-2.0 * pre_tanh))
        ).sum(-1)
        return torch.tanh(pre_tanh), log_prob

    def _norm(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.config.normalize_observations:
            return obs
        return standardize(obs, self.obs_mean, self.obs_var, self.obs_clip)

    # Collection ---------------------------------------------------------------------------

    @property
    def learning(self) -> bool:
        enough = self.env_steps >= self.config.n_step
        return enough and self.env_steps * self.num_envs >= self.config.learning_starts

    @property
    def capture_ready(self) -> bool:
        return self.learning

    def _members(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(self.members, self.num_envs, *x.shape[1:])

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        obs = self._members(obs)
        if self.config.normalize_observations:
            merge_moments(self.obs_mean, self.obs_var, self.obs_count, obs)
        if not self.learning:
            shape = (self.num_envs, self.action_size)
            draws = [torch.rand(shape, device=self.device, generator=g) for g in self.generators]
            actions = torch.stack(draws) * 2.0 - 1.0
        elif self.name == "sac":
            actions = self._sac_actor(self._norm(obs))[0]
        else:
            action = self._net("actor", "", self._norm(obs))
            noise = self._randn(action.shape[1:])
            actions = (action + noise * self.exploration_std).clamp(-1, 1)
        self.last_obs, self._actions = obs, actions
        return actions.flatten(0, 1)

    @torch.no_grad()
    def observe(self, step: EnvStep) -> None:
        assert self.last_obs is not None and self._actions is not None
        ended = step.terminated | step.truncated
        self.replay.add(
            self.last_obs,
            self._actions,
            self._members(step.reward),
            self._members(step.info["final_obs"]),
            self._members(step.terminated),
            self._members(ended),
        )
        self.env_steps += 1

    # Update -----------------------------------------------------------------------------

    def set_progress(self, fraction: float) -> None:
        """No schedule: the learning rates stay."""

    def update(self) -> dict[str, torch.Tensor]:
        if not self.learning:
            return {}
        c = self.config
        totals: dict[str, torch.Tensor] = {}
        for _ in range(c.updates_per_iteration):
            batch = self.replay.sample_members(
                c.batch_size, self.generators, c.n_step, self.hyper["gamma"]
            )
            batch["obs"] = self._norm(batch["obs"])
            batch["next_obs"] = self._norm(batch["next_obs"])
            stats = self._sac_step(batch) if self.name == "sac" else self._td3_step(batch)
            self.updates += 1
            for key, value in stats.items():
                totals[key] = totals[key] + value if key in totals else value
        return {k: v / c.updates_per_iteration for k, v in totals.items()}

    def _step(self, module: str, loss: torch.Tensor) -> None:
        """One optimiser step of every member's ``module`` on its own [K] loss."""
        optimizer, params = self.optimizers[module], self._trained(module)
        optimizer.zero_grad()
        loss.sum().backward(inputs=params)  # members share no weights
        clip_member_gradients(params, self.hyper["max_grad_norm"])
        optimizer.step()

    @torch.no_grad()
    def _soft_update(self, target: str, source: str) -> None:
        names = [n[len(source) + 1 :] for n in self.params if n.startswith(f"{source}.")]
        targets = [self.params[f"{target}.{n}"] for n in names]
        sources = [self.params[f"{source}.{n}"].detach() for n in names]
        tau = self.hyper["tau"]
        torch._foreach_lerp_(
            targets, sources, [tau.view(-1, *[1] * (t.dim() - 1)) for t in targets]
        )

    def _sac_step(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        alpha = self.log_alpha.detach().exp()[:, None]  # [K, 1]
        with torch.no_grad():
            next_action, next_logp = self._sac_actor(b["next_obs"])
            q1_t, q2_t = self._q("critic_target", b["next_obs"], next_action)
            soft_value = torch.min(q1_t, q2_t) - alpha * next_logp
            target = b["rewards"] + b["discount"] * (1.0 - b["terminated"]) * soft_value
        q1, q2 = self._q("critic", b["obs"], b["actions"])
        critic_loss = 0.5 * ((q1 - target) ** 2).mean(1) + 0.5 * ((q2 - target) ** 2).mean(1)
        self._step("critic", critic_loss)

        action, logp = self._sac_actor(b["obs"])
        q1_pi, q2_pi = self._q("critic", b["obs"], action)
        actor_loss = (alpha * logp - torch.min(q1_pi, q2_pi)).mean(1)
        self._step("actor", actor_loss)

        if self.config.autotune_alpha:  # type: ignore[attr-defined]
            entropy_gap = logp.detach() + self.target_entropy[:, None]
            alpha_loss = -(self.log_alpha[:, None] * entropy_gap).mean(1)
            optimizer = self.optimizers["alpha"]
            optimizer.zero_grad()
            alpha_loss.sum().backward(inputs=[self.log_alpha])
            optimizer.step()
        self._soft_update("critic_target", "critic")
        return {
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "alpha": alpha[:, 0],
            "entropy": -logp.detach().mean(1),
            "q_mean": q1.detach().mean(1),
        }

    def _td3_step(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = self.hyper
        with torch.no_grad():
            next_action = self._net("actor_target", "", b["next_obs"])
            clip = h["noise_clip"].view(-1, 1, 1)
            smoothing = self._randn(next_action.shape[1:]) * h["policy_noise"].view(-1, 1, 1)
            next_action = (next_action + smoothing.clamp(-clip, clip)).clamp(-1.0, 1.0)
            q1_t, q2_t = self._q("critic_target", b["next_obs"], next_action)
            bootstrap = b["discount"] * (1.0 - b["terminated"])
            target = b["rewards"] + bootstrap * torch.min(q1_t, q2_t)
        q1, q2 = self._q("critic", b["obs"], b["actions"])
        critic_loss = ((q1 - target) ** 2).mean(1) + ((q2 - target) ** 2).mean(1)
        self._step("critic", critic_loss)

        if (self.updates + 1) % self.config.policy_delay == 0:  # type: ignore[attr-defined]
            action = self._net("actor", "", b["obs"])
            actor_loss = -self._net("critic", "q1", torch.cat([b["obs"], action], -1))
            actor_loss = actor_loss.squeeze(-1).mean(1)
            self._step("actor", actor_loss)
            self._soft_update("actor_target", "actor")
            self._soft_update("critic_target", "critic")
            self.actor_updates += 1
            self.last_actor_loss.copy_(actor_loss.detach())
        return {
            "critic_loss": critic_loss.detach(),
            "actor_loss": self.last_actor_loss.clone(),
            "q_mean": q1.detach().mean(1),
        }

    # CUDA graphs (harness.graphs.Iterations) ---------------------------------------------

    def host_state(self) -> dict[str, Any]:
        state = {
            "env_steps": self.env_steps,
            "updates": self.updates,
            "position": self.replay.position,
            "size": self.replay.size,
        }
        if self.name == "td3":
            state["actor_updates"] = self.actor_updates
        return state

    def load_host_state(self, state: dict[str, Any]) -> None:
        self.env_steps, self.updates = state["env_steps"], state["updates"]
        self.replay.position, self.replay.size = state["position"], state["size"]
        if self.name == "td3":
            self.actor_updates = state["actor_updates"]

    def replayed(self) -> None:
        c = self.config
        for _ in range(self.steps_per_update):
            self.replay.advance(self.num_envs)
        self.env_steps += self.steps_per_update
        self.updates += c.updates_per_iteration
        if self.name == "td3":
            self.actor_updates += c.updates_per_iteration // c.policy_delay  # type: ignore[attr-defined]

    # Stopping members -------------------------------------------------------------------

    def stop(self, member: int) -> None:
        """Member ``member`` learns no more: zero learning rates and target updates."""
        for lr in self.lr.values():
            lr[member] = 0.0
        self.hyper["tau"][member] = 0.0

    def select(self, keep: list[int]) -> None:
        """Keep only members ``keep``: every stacked tensor is cut. Call between iterations."""
        index = torch.tensor(keep, device=self.device)
        self.params = {
            name: nn.Parameter(p.detach()[index].clone()) if isinstance(p, nn.Parameter)
            else p[index].clone()
            for name, p in self.params.items()
        }  # fmt: skip
        self.hyper = {key: v[index].clone() for key, v in self.hyper.items()}
        self.lr = {key: v[index].clone() for key, v in self.lr.items()}
        old = self.optimizers
        self.optimizers = {m: Adam(self._trained(m), lr=self.lr[m]) for m in _TRAINED}
        if self.name == "sac":
            self.log_alpha = nn.Parameter(self.log_alpha.detach()[index].clone())
            self.target_entropy = self.target_entropy[index]
            self.optimizers["alpha"] = Adam([self.log_alpha], lr=self.lr["alpha"])
        else:
            self.exploration_std = self.exploration_std[index]
            self.last_actor_loss = self.last_actor_loss[index].clone()
        for name, optimizer in self.optimizers.items():
            optimizer.exp_avg = [t[index].clone() for t in old[name].exp_avg]
            optimizer.exp_avg_sq = [t[index].clone() for t in old[name].exp_avg_sq]
            optimizer.steps.copy_(old[name].steps)
        self.obs_mean, self.obs_var = self.obs_mean[index], self.obs_var[index]
        self.obs_count = self.obs_count[index]
        self.replay.select(index)
        self.generators = [self.generators[i] for i in keep]
        self.members = len(keep)

    # Checkpoints: one member's state in the layout of a run alone (algos.offpolicy) -----

    def member_state_dict(self, member: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, module in self.template.items():
            out[name] = {
                pname: self.params[f"{name}.{pname}"][member].detach().clone()
                for pname, _ in module.named_parameters()
            }
        for module, opt_name in _TRAINED.items():
            out[opt_name] = self._torch_adam(module, self.template[module].parameters(), member)
        if self.name == "sac":
            placeholder = torch.zeros((), device=self.device, requires_grad=True)
            out["alpha_opt"] = self._torch_adam("alpha", [placeholder], member)
            out["log_alpha"] = self.log_alpha[member].detach().clone()
        out["obs_norm"] = {
            "mean": self.obs_mean[member].clone(),
            "var": self.obs_var[member].clone(),
            "count": self.obs_count[member].clone(),
        }
        out["counters"] = {"env_steps": self.env_steps, "updates": self.updates}
        out["replay"] = self.replay.member_state_dict(member)
        return out

    def _torch_adam(self, name: str, params: Any, member: int) -> dict[str, Any]:
        """Member ``member``'s moments as a ``torch.optim.Adam`` state_dict (a run's)."""
        ours = self.optimizers[name]
        lr = float(self.lr[name][member])
        layout = adam(list(params), lr, self.device).state_dict()
        steps = ours.steps.detach().float().cpu().reshape(())
        layout["state"] = {
            i: {
                "step": steps.clone(),
                "exp_avg": ours.exp_avg[i][member].clone(),
                "exp_avg_sq": ours.exp_avg_sq[i][member].clone(),
            }
            for i in range(len(ours.exp_avg))
        }
        return layout
