"""Batched cartpole with gymnasium CartPole-v1's dynamics.

Same constants, explicit Euler integration, termination at |x| > 2.4 m or |theta| > 12 deg,
reward 1 per step (the terminating step included), 500-step time limit. Two action kinds:
``discrete`` (gymnasium parity: 0 pushes left, 1 right, with ``force_mag``) and
``continuous`` (Isaac Gym style: a force in [-1, 1] * force_mag * motor_gain).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from envs.base import ActionSpace, EnvConfig, TensorTask

GRAVITY = 9.8  # [m/s^2]
FORCE_MAG = 10.0  # [N]
TAU = 0.02  # control period [s]
X_THRESHOLD = 2.4  # [m]
THETA_THRESHOLD = 12 * 2 * math.pi / 360  # [rad]
STATE_NAMES = ("x", "x_dot", "theta", "theta_dot")
RESET_BOUND = 0.05  # initial state ~ U(-0.05, 0.05) in every coordinate

# Nominal physics parameters, each a per-env [N] tensor that randomisation can vary.
NOMINAL_PARAMS = {
    "cart_mass": 1.0,  # [kg]
    "pole_mass": 0.1,  # [kg]
    "pole_length": 0.5,  # half the pole's length [m], as gymnasium's `length`
    "motor_gain": 1.0,  # force multiplier [-]
    "gravity": GRAVITY,  # [m/s^2]
}


@dataclass(frozen=True)
class CartpoleConfig(EnvConfig):
    name: str = "cartpole"  # the task
    # discrete: push left or right (gymnasium); continuous: a force in [-1, 1] x force_mag
    action_type: Literal["discrete", "continuous"] = "discrete"
    nominal_params: ClassVar[dict[str, float]] = NOMINAL_PARAMS

    @property
    def max_return(self) -> float:
        return float(self.max_episode_steps)  # one reward per step, up to the time limit


class Cartpole(TensorTask):
    """N cartpoles; state is four [N] tensors (x, x_dot, theta, theta_dot)."""

    observation_size = 4
    reward_terms = ("alive",)

    def __init__(
        self, config: CartpoleConfig, device: torch.device, generator: torch.Generator
    ) -> None:
        if config.action_type == "discrete":
            self.action_space = ActionSpace("discrete", n=2)
        else:
            self.action_space = ActionSpace("continuous", shape=1, low=-1.0, high=1.0)
        super().__init__(config, device, generator)
        self.state = self._sample_initial_state(self.num_envs)
        self._ones = torch.ones(self.num_envs, device=device)  # [N] reward of one step
        self._packed: torch.Tensor | None = None  # see packed_state
        self._packed_views: tuple[torch.Tensor, ...] = ()

    def _sample_initial_state(self, n: int) -> dict[str, torch.Tensor]:
        u = self.random.uniform(4, n)  # [4, n]
        s = (2.0 * u - 1.0) * RESET_BOUND
        return {"x": s[0], "x_dot": s[1], "theta": s[2], "theta_dot": s[3]}

    def _force(self, actions: torch.Tensor) -> torch.Tensor:
        """[N] force on the cart [N]."""
        gain = self.params["motor_gain"]
        if self.action_space.kind == "discrete":
            return (actions.to(torch.float32) * 2.0 - 1.0) * FORCE_MAG * gain
        return actions.reshape(self.num_envs).clamp(-1.0, 1.0) * FORCE_MAG * gain

    def _physics_step(self, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        p, s = self.params, self.state
        force = self._force(actions)
        total_mass = p["cart_mass"] + p["pole_mass"]
        polemass_length = p["pole_mass"] * p["pole_length"]
        cos, sin = torch.cos(s["theta"]), torch.sin(s["theta"])
        temp = (force + polemass_length * s["theta_dot"] ** 2 * sin) / total_mass
        theta_acc = (p["gravity"] * sin - cos * temp) / (
            p["pole_length"] * (4.0 / 3.0 - p["pole_mass"] * cos**2 / total_mass)
        )
        x_acc = temp - polemass_length * theta_acc * cos / total_mass
        # Explicit Euler, as gymnasium: positions move with the old velocities.
        self.state = {
            "x": s["x"] + TAU * s["x_dot"],
            "x_dot": s["x_dot"] + TAU * x_acc,
            "theta": s["theta"] + TAU * s["theta_dot"],
            "theta_dot": s["theta_dot"] + TAU * theta_acc,
        }
        return {"alive": self._ones}

    def _terminated(self) -> torch.Tensor:
        s = self.state
        return (s["x"].abs() > X_THRESHOLD) | (s["theta"].abs() > THETA_THRESHOLD)

    def _observe(self) -> torch.Tensor:
        s = self.state
        return torch.stack([s["x"], s["x_dot"], s["theta"], s["theta_dot"]], dim=1)  # [N, 4]

    def fused_step_unavailable(self) -> str | None:
        if torch.version.hip is not None:  # the kernel moves rows with inline PTX
            return "the fused cartpole step runs on NVIDIA GPUs only, not ROCm"
        if self.device.type != "cuda":
            return f"the fused cartpole step needs a CUDA device, got {self.device}"
        try:
            import triton  # noqa: F401
        except ImportError:
            return "the fused cartpole step needs Triton (pip install triton)"
        return None

    def fuse(self) -> None:
        why_not = self.fused_step_unavailable()
        if why_not:
            raise NotImplementedError(why_not)
        from envs.cartpole_triton import FusedCartpoleStep

        self.step = FusedCartpoleStep(self)  # type: ignore[method-assign]

    def packed_state(self) -> torch.Tensor:
        """The state as one [N, 4] tensor (x, x_dot, theta, theta_dot per row): the one
        whose columns ``self.state`` already views, else a new one."""
        if self._packed_is_state():
            return self._packed
        return torch.stack([self.state[k] for k in STATE_NAMES], dim=1)

    def _packed_is_state(self) -> bool:
        return self._packed is not None and all(
            self.state[k] is v for k, v in zip(STATE_NAMES, self._packed_views, strict=True)
        )

    def reset(self) -> torch.Tensor:
        """As every task's; a packed state stays packed, in the same tensor, so the env's
        tensors keep the names a CUDA graph captured them under (warm workers adopt them)."""
        packed = self._packed if self._packed_is_state() else None
        obs = super().reset()
        if packed is not None:
            packed.copy_(self.packed_state())
            self.set_packed_state(packed)
        return obs

    def tensors(self) -> dict[str, torch.Tensor]:
        out = super().tensors()
        if self._packed_is_state():  # one [N, 4] tensor to carry over, not four views
            for k in STATE_NAMES:
                del out[f"state.{k}"]
            out["state.packed"] = self._packed
        return out

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        super().load_tensors({k: v for k, v in tensors.items() if k != "state.packed"})
        if "state.packed" in tensors:
            self.set_packed_state(tensors["state.packed"])

    def set_packed_state(self, packed: torch.Tensor) -> None:
        """Make the columns of ``packed`` [N, 4] the state (no copy)."""
        self._packed = packed
        self._packed_views = packed.unbind(1)
        self.state = dict(zip(STATE_NAMES, self._packed_views, strict=True))

    def set_state(self, obs: torch.Tensor) -> None:
        """Place every env in the given state [N, 4] (tests and evaluation)."""
        self.state = {k: obs[:, i].clone() for i, k in enumerate(STATE_NAMES)}
