"""Arm reaching: a 4-joint torque-driven arm moves its end effector to a target.

The arm is ``envs/assets/arm.xml`` (base yaw, shoulder, elbow, wrist), simulated with the
batched rigid-body dynamics of `envs.rigid_body` (mass matrix, Coriolis and gravity terms,
damping, friction, joint and torque limits) at 100 Hz, two physics steps per 50 Hz
control step. A target is drawn per env on reset inside a box in front of the arm.

Observation [N, 17]: joint positions (4), joint velocities (4), end-effector position (3),
target position (3), target - end effector (3). Action [N, 4] in [-1, 1]: torque as a
fraction of each motor's gear, times the env's ``motor_gain``.
Reward terms per control step: ``distance`` -|target - ee| [m], ``success`` +1 inside
the tolerance, ``action`` -0.01 |a|^2, ``energy`` -0.001 sum |torque * joint speed| [W].
No termination; the episode ends at the time limit, and ``success`` (within tolerance at
the end) and ``final_distance`` are logged per episode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from envs.base import ActionSpace, EnvConfig, TensorTask
from envs.rigid_body import ChainDynamics, Scales, load_chain
from harness.errors import FieldError

MODEL_PATH = Path(__file__).parent / "assets" / "arm.xml"
HOME = (0.0, -0.3, 1.2, 0.3)  # initial joint positions [rad], jittered on reset
HOME_JITTER = 0.1  # [rad]
TARGET_CENTER = (0.35, 0.0, 0.2)  # [m], world frame
TARGET_HALF_EXTENT = (0.15, 0.25, 0.2)  # [m], times the env's target_scale
ACTION_PENALTY = 0.01
ENERGY_PENALTY = 0.001

NOMINAL_PARAMS = {
    "link_mass": 1.0,  # scale of every link's mass and inertia [-]
    "joint_damping": 1.0,  # scale of the joints' damping [-]
    "joint_friction": 1.0,  # scale of the joints' friction [-]
    "motor_gain": 1.0,  # scale of every motor's torque [-]
    "target_scale": 1.0,  # scale of the target box [-]
    "obs_noise": 0.0,  # std of the noise on observed joint positions and velocities
}


@dataclass(frozen=True)
class ArmConfig(EnvConfig):
    name: str = "arm"  # the task
    max_episode_steps: int = 100  # 2 s at 50 Hz
    substeps: int = 2  # physics steps of the model's timestep per control step
    success_tolerance: float = 0.05  # [m]
    nominal_params: ClassVar[dict[str, float]] = NOMINAL_PARAMS

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.substeps <= 0:
            raise FieldError("substeps", f"must be > 0, got {self.substeps}")
        if self.success_tolerance <= 0:
            raise FieldError("success_tolerance", f"must be > 0, got {self.success_tolerance}")


class Arm(TensorTask):
    """N arms; state: joint positions and velocities [N, 4], targets [N, 3]."""

    observation_size = 17
    reward_terms = ("distance", "success", "action", "energy")
    final_metrics = ("success", "final_distance")

    def __init__(self, config: ArmConfig, device: torch.device, generator: torch.Generator) -> None:
        self.model = load_chain(MODEL_PATH)
        n = self.model.num_joints
        self.action_space = ActionSpace("continuous", shape=n, low=-1.0, high=1.0)
        self.dynamics = ChainDynamics(self.model, device, torch.float32)
        self.gear = torch.as_tensor(self.model.gear, dtype=torch.float32, device=device)  # [n]
        self.home = torch.tensor(HOME, device=device)
        self.target_center = torch.tensor(TARGET_CENTER, device=device)
        self.target_half = torch.tensor(TARGET_HALF_EXTENT, device=device)
        super().__init__(config, device, generator)
        self.state = self._sample_initial_state(self.num_envs)

    def _sample_initial_state(self, n: int) -> dict[str, torch.Tensor]:
        u = self.random.uniform(n, self.model.num_joints + 3)
        q = self.home + (2.0 * u[:, :-3] - 1.0) * HOME_JITTER
        # The target is kept in box units: target() scales it by the env's target_scale,
        # which reset draws after the state.
        return {
            "q": q,
            "qd": torch.zeros_like(q),
            "ee": self.end_effector(q),
            "target_unit": 2.0 * u[:, -3:] - 1.0,
        }

    def target(self) -> torch.Tensor:
        """[N, 3] world target of every env."""
        scale = self.params["target_scale"][:, None]
        return self.target_center + self.state["target_unit"] * self.target_half * scale

    def end_effector(self, q: torch.Tensor) -> torch.Tensor:
        """[N, 3] world position of the end effector at joint positions q [N, n]."""
        return self.dynamics.site(self.dynamics.kinematics(q), "end_effector")

    def torque(self, actions: torch.Tensor) -> torch.Tensor:
        """[N, n] joint torques [N m] for actions [N, n]."""
        return actions.clamp(-1.0, 1.0) * self.gear * self.params["motor_gain"][:, None]

    def _physics_step(self, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        p = self.params
        a = actions.clamp(-1.0, 1.0)
        tau = self.torque(a)
        q, qd = self.state["q"], self.state["qd"]
        power = torch.zeros_like(q[:, 0])
        scales = Scales(p["link_mass"], p["joint_damping"], p["joint_friction"])
        for _ in range(self.config.substeps):
            q, qd = self.dynamics.step(q, qd, tau, scales)
            power = power + (tau * qd).abs().sum(1)
        self.state = {**self.state, "q": q, "qd": qd, "ee": self.end_effector(q)}
        dist = self._distance()
        return {
            "distance": -dist,
            "success": (dist < self.config.success_tolerance).float(),
            "action": -ACTION_PENALTY * (a * a).sum(1),
            "energy": -ENERGY_PENALTY * power / self.config.substeps,
        }

    def _distance(self) -> torch.Tensor:
        return (self.target() - self.state["ee"]).norm(dim=1)  # [N]

    def _terminated(self) -> torch.Tensor:
        return torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)

    def _final_values(self) -> torch.Tensor:
        dist = self._distance()
        return torch.stack([(dist < self.config.success_tolerance).float(), dist], 1)

    def _observe(self) -> torch.Tensor:
        q, qd = self.state["q"], self.state["qd"]
        noise = self.params["obs_noise"][:, None]
        if self.randomizer.active:
            jitter = self.random.normal(q.shape[0], 2 * q.shape[1])
            q = q + noise * jitter[:, : q.shape[1]]
            qd = qd + noise * jitter[:, q.shape[1] :]
        ee = self.state["ee"]
        target = self.target()
        return torch.cat([q, qd, ee, target, target - ee], 1)  # [N, 17]

    def set_state(self, q: torch.Tensor, qd: torch.Tensor) -> None:
        """Place every env at joint positions and velocities [N, n] (tests)."""
        self.state = {**self.state, "q": q.clone(), "qd": qd.clone(), "ee": self.end_effector(q)}
