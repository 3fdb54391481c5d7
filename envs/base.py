"""The vectorised environment contract every task implements.

Shapes: ``N`` envs, ``O`` observation size, ``A`` action size.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from envs.randomization import CounterRandom, ParamRange, Randomizer
from harness.errors import FieldError


@dataclass(frozen=True)
class ActionSpace:
    """What `step` accepts.

    ``discrete``: actions are ``[N]`` int64 in ``[0, n)``.
    ``continuous``: actions are ``[N, shape]`` float32; the task clips them to ``[low, high]``.
    """

    kind: Literal["discrete", "continuous"]
    n: int = 0  # number of choices (discrete)
    shape: int = 0  # action size A (continuous)
    low: float = -1.0
    high: float = 1.0


class StepInfo(dict):
    """A step's info dict whose values may be computed on first use: a fused step leaves
    ``final_obs`` as a function of what it wrote, so a caller that never reads it never
    pays for the [N, O] tensor."""

    def __init__(self, **lazy: Callable[[], torch.Tensor]) -> None:
        super().__init__()
        self._lazy = lazy

    def _materialise(self) -> None:
        for key in list(self._lazy):
            self[key]

    def __missing__(self, key: str) -> torch.Tensor:
        if key not in self._lazy:
            raise KeyError(key)
        value = self[key] = self._lazy.pop(key)()
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._lazy or super().__contains__(key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def __iter__(self):  # type: ignore[no-untyped-def]
        self._materialise()
        return super().__iter__()

    def __len__(self) -> int:
        return len(self._lazy) + super().__len__()

    def keys(self):  # type: ignore[no-untyped-def]
        self._materialise()
        return super().keys()

    def values(self):  # type: ignore[no-untyped-def]
        self._materialise()
        return super().values()

    def items(self):  # type: ignore[no-untyped-def]
        self._materialise()
        return super().items()


@dataclass(frozen=True)
class EnvStep:
    """One batched transition.

    obs: [N, O] f32, already reset where an episode ended.
    reward: [N] f32.
    terminated: [N] bool, the task ended (no bootstrap).
    truncated: [N] bool, the time limit ended it (bootstrap from ``info["final_obs"]``).
    info: ``final_obs`` [N, O] (the observation before any reset); ``final_metrics``
        [N, F] (the task's ``final_metrics`` of that state, for tasks that have some).
        Values may be computed on first access (`StepInfo`).

    A fused step may return ``obs`` and ``reward`` that the env itself reads or reuses:
    treat them as read-only (copy before changing them in place).
    """

    obs: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EnvConfig:
    """Settings every task shares; each task subclasses this with its own fields."""

    name: str = "cartpole"  # the task: cartpole, arm or quadruped
    num_envs: int = 256  # envs stepped together (per GPU under torchrun)
    max_episode_steps: int = 500  # time limit [steps]
    # Per-env physics parameters re-sampled on reset, by parameter name.
    randomization: dict[str, ParamRange] = field(default_factory=dict)
    # The task's per-env physics parameters and their nominal values (set by each task).
    nominal_params: ClassVar[dict[str, float]] = {}

    @property
    def max_return(self) -> float | None:
        """The best possible episode return (reports normalise scores by it), if known."""
        return None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.randomization) - set(self.nominal_params))
        if unknown:
            known = ", ".join(sorted(self.nominal_params))
            raise FieldError(
                f"randomization.{unknown[0]}", f"is not a parameter of {self.name} (known: {known})"
            )
        if not 0 < self.num_envs < 2**31:  # env indices are int32 in the kernels
            raise FieldError("num_envs", f"must be > 0 and < 2**31, got {self.num_envs}")
        if self.max_episode_steps <= 0:
            raise FieldError("max_episode_steps", f"must be > 0, got {self.max_episode_steps}")


class EpisodeStatistics:
    """Device-side accumulators of finished episodes, read once per log interval.

    Besides the return, length and per-term sums, a task may report ``final`` metrics, each
    read once from the episode's last state (e.g. ``success``); their episode means are
    logged under their own names. Every update is a tensor op, so stepping never waits on
    the GPU.
    """

    def __init__(
        self,
        num_envs: int,
        term_names: list[str],
        device: torch.device,
        final_names: list[str] | None = None,
    ) -> None:
        self.term_names = term_names
        self.final_names = final_names or []
        k = len(term_names) + len(self.final_names)
        self.running_return = torch.zeros(num_envs, device=device)  # [N]
        self.running_length = torch.zeros(num_envs, device=device)  # [N]
        self.running_terms = torch.zeros(num_envs, k, device=device)  # [N, K]
        # Sums over the episodes finished since the last `read`: [count, return, length,
        # terms...] in one tensor (fused env kernels add to it). Steps update it whole, never
        # through views: compiled steps slow down when they mutate aliasing tensors.
        self.sums = torch.zeros(3 + k, device=device)  # [3 + K]
        # Last interval's means, kept when an interval finishes no episode.
        self.last_means = torch.full((2 + k,), math.nan, device=device)  # [2 + K]

    def record(
        self,
        reward: torch.Tensor,
        terms: torch.Tensor,
        done: torch.Tensor,
        final: torch.Tensor | None = None,
    ) -> None:
        """reward [N], terms [N, K], done [N] bool, final [N, F] metrics of the state now."""
        self.running_return += reward
        self.running_length += 1.0
        if final is None:
            self.running_terms += terms
        else:  # a final metric's "sum" is its value at the episode's end
            f = final.shape[1]
            self.running_terms[:, :-f] += terms
            self.running_terms[:, -f:] = final
        finished = done.to(reward.dtype)  # [N]
        self.sums += self._ended(finished)
        keep = 1.0 - finished
        self.running_return *= keep
        self.running_length *= keep
        self.running_terms *= keep.unsqueeze(1)

    def _ended(self, finished: torch.Tensor) -> torch.Tensor:
        """[3 + K] count, return, length and terms summed over the episodes just ended."""
        return torch.cat(
            [
                finished.sum().view(1),
                (self.running_return * finished).sum().view(1),
                (self.running_length * finished).sum().view(1),
                (self.running_terms * finished.unsqueeze(1)).sum(0),
            ]
        )

    def means(
        self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """([2 + K] episode means (return, length, terms...), count) since the last
        reset_interval; ``reduce`` sums the sums over data-parallel ranks."""
        sums = self.sums.clone() if reduce is None else reduce(self.sums.clone())
        count = sums[0]
        fresh = sums[1:] / count.clamp(min=1.0)
        return torch.where(count > 0, fresh, self.last_means), count

    def reset_interval(
        self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """Means and count of the interval just ended (tensors), then start a new interval."""
        means, count = self.means(reduce)
        out = {"episode_return": means[0], "episode_length": means[1]}
        for i, name in enumerate(self.term_names):
            out[f"reward_{name}"] = means[2 + i]
        for i, name in enumerate(self.final_names):
            out[name] = means[2 + len(self.term_names) + i]
        out["episodes"] = count
        self.last_means.copy_(means)
        self.sums.zero_()
        return out


class VecEnv(ABC):
    """A batch of ``num_envs`` copies of one task, stepped together on one device.

    The contract every task keeps: `reset`, `step` with auto-reset, time limits and
    episode statistics, per-env parameters drawn by the shared `Randomizer`. Tasks written
    in torch subclass `TensorTask`, which supplies `reset` and `step` from a few hooks;
    tasks simulated elsewhere (MJX) implement `reset` and `step` themselves.
    """

    observation_size: int
    action_space: ActionSpace
    reward_terms: tuple[str, ...]
    final_metrics: tuple[str, ...] = ()  # read from each episode's last state
    # Why torch cannot capture (CUDA graphs) or compile the step (None: it can), and what
    # simulates the task.
    not_capturable: str | None = None
    simulator: str = "torch"
    # Whether a batch of members may cut this env's blocks (envs.members.select_blocks).
    blocks_can_leave: bool = True

    def __init__(
        self,
        config: EnvConfig,
        device: torch.device,
        generator: torch.Generator,
    ) -> None:
        self.config = config
        self.num_envs = config.num_envs
        self.device = device
        # Every random draw of the env (resets, randomisation, noise) comes from here.
        self.random = CounterRandom.from_generator(generator, device)
        self.randomizer = Randomizer(
            config.nominal_params, config.randomization, device, self.random
        )
        n = self.num_envs
        self.params = self.randomizer.sample(n)  # name -> [N] f32
        self.episode_step = torch.zeros(n, dtype=torch.int32, device=device)  # [N]
        self.stats = EpisodeStatistics(n, list(self.reward_terms), device, list(self.final_metrics))

    @abstractmethod
    def reset(self) -> torch.Tensor:
        """Reset every env (state, parameters, counters); returns obs [N, O]."""

    @abstractmethod
    def step(self, actions: torch.Tensor) -> EnvStep:
        """Step every env; finished envs reset in place without leaving the device."""

    def use_graphs(self, on: bool) -> None:  # noqa: B027
        """Whether a task stepped outside torch may replay its own per-step torch work from
        CUDA graphs (experiment.cuda_graph=false turns it off). Torch tasks are captured
        whole by the harness instead."""

    def draw_member_keys(self, generators: list[torch.Generator]) -> None:  # noqa: B027
        """As blocks of a batch (envs.members): the simulator's own random state, one per
        member, drawn from each member's generator as the env alone draws it. Tasks whose
        every draw comes from `random` need none."""

    def _redraw_params_where(self, done: torch.Tensor) -> None:
        """New parameters for the envs where done [N] is True (a reset's randomisation)."""
        if self.randomizer.active:
            fresh_params = self.randomizer.sample(self.num_envs)
            for name, value in fresh_params.items():
                self.params[name] = torch.where(done, value, self.params[name])

    def compile(self) -> None:
        """Replace `step` by its torch.compile'd version (fused kernels on CUDA)."""
        if self.not_capturable:
            raise NotImplementedError(self.not_capturable)
        self.step = torch.compile(self.step, dynamic=False)  # type: ignore[method-assign]

    def fused_step_unavailable(self) -> str | None:
        """Why `fuse` cannot run here (None: it can). Tasks with a fused kernel override."""
        return f"{self.config.name} has no fused step kernel"

    def fuse(self) -> None:
        """Replace `step` by the task's one-kernel CUDA step (same results as `step`)."""
        raise NotImplementedError(self.fused_step_unavailable())

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor that `step` replaces rather than updates in place, by name. A CUDA
        graph capture copies each step's new tensors back into these so that replays carry
        on from one another."""
        out = {f"params.{k}": v for k, v in self.params.items()}
        out["episode_step"] = self.episode_step
        out["random.counter"] = self.random.counter
        return out

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Point the env at ``tensors`` (names as `tensors` gives them)."""
        self.params = {k[7:]: v for k, v in tensors.items() if k.startswith("params.")}
        self.episode_step = tensors["episode_step"]
        self.random.counter = tensors["random.counter"]


class TensorTask(VecEnv):
    """A task written in torch: subclasses define the physics (`_physics_step`), the named
    reward terms, termination and the reset state; this class does auto-reset, time
    limits, re-randomisation of the per-env parameters and episode statistics."""

    state: dict[str, torch.Tensor]

    # Task hooks -------------------------------------------------------------------------

    @abstractmethod
    def _sample_initial_state(self, n: int) -> dict[str, torch.Tensor]:
        """A fresh state for n envs: name -> [n, ...]."""

    @abstractmethod
    def _physics_step(self, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Advance ``self.state`` by one control step; return reward terms name -> [N]."""

    @abstractmethod
    def _terminated(self) -> torch.Tensor:
        """[N] bool: the current state ends the episode."""

    @abstractmethod
    def _observe(self) -> torch.Tensor:
        """[N, O] f32 observation of the current state."""

    def _final_values(self) -> torch.Tensor | None:
        """[N, F] values of ``final_metrics`` in the current state (tasks that have some)."""
        return None

    # Contract ---------------------------------------------------------------------------

    def reset(self) -> torch.Tensor:
        self.state = self._sample_initial_state(self.num_envs)
        self.params = self.randomizer.sample(self.num_envs)
        self.episode_step.zero_()
        return self._observe()

    def step(self, actions: torch.Tensor) -> EnvStep:
        terms = self._physics_step(actions)
        self.episode_step += 1
        terminated = self._terminated()
        truncated = self.episode_step >= self.config.max_episode_steps
        done = terminated | truncated
        final_obs = self._observe()

        term_stack = torch.stack([terms[name] for name in self.reward_terms], dim=1)  # [N, K]
        reward = term_stack.sum(1)
        final = self._final_values()
        self.stats.record(reward, term_stack, done, final)
        info = {"final_obs": final_obs}
        if final is not None:
            info["final_metrics"] = final

        self._reset_where(done)
        obs = self._observe()
        return EnvStep(obs, reward, terminated, truncated, info)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {**{f"state.{k}": v for k, v in self.state.items()}, **super().tensors()}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        super().load_tensors(tensors)
        self.state = {k[6:]: v for k, v in tensors.items() if k.startswith("state.")}

    def _reset_where(self, done: torch.Tensor) -> None:
        """Branch-free reset of the envs where done [N] is True."""
        fresh = self._sample_initial_state(self.num_envs)
        for name, value in fresh.items():
            mask = done.view(-1, *([1] * (value.dim() - 1)))
            self.state[name] = torch.where(mask, value, self.state[name])
        self._redraw_params_where(done)
        self.episode_step = torch.where(
            done, torch.zeros_like(self.episode_step), self.episode_step
        )
