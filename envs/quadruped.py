"""Quadruped locomotion on MuJoCo MJX: walk at a commanded velocity.

The robot is ``envs/assets/quadruped.xml`` (a box torso, four legs of three hinges, position
servos), simulated by MJX at 200 Hz with ``substeps`` physics steps per 50 Hz control step
(`envs.quadruped_mjx`). The simulation state stays in JAX; each `step` hands the actions and
per-env parameters to one jitted JAX call as one array and takes back one array of results,
both through DLPack without a copy. On CUDA, JAX's `from_dlpack` makes its stream wait for torch's
current stream, and torch's `from_dlpack` makes torch's current stream wait for JAX's
results (the DLPack ``stream`` argument), so neither side waits on the host.

Observation [N, 52]: base linear and angular velocity in the body frame (6), projected
gravity (3), joint positions from standing (12) and velocities (12), last action (12),
velocity command vx, vy, yaw rate (3), foot contacts (4). Action [N, 12] in [-1, 1]: joint
position targets, standing pose + ``action_scale`` x action [rad].
Reward terms: ``tracking_lin_vel`` exp(-|cmd_xy - v_xy|^2 / 0.25), ``tracking_ang_vel``
0.5 exp(-(cmd_yaw - w_z)^2 / 0.25), ``upright`` -|gravity_xy|^2, ``energy`` -2e-4 sum
|torque x joint velocity| [W], ``action_rate`` -0.01 |a - a_prev|^2, ``foot_slip`` -0.1 sum
over feet in contact of |foot velocity_xy|^2. An episode ends when the torso touches the
floor or tilts past 60 degrees, or at the time limit. Logged per episode: ``mean_velocity_x``
(the torso's displacement over the episode's time [m/s]) and ``velocity_error``
(|mean velocity_xy - command_xy|).

Randomised per env (the shared mechanism, redrawn on reset): ``mass_scale`` (every body's
mass), ``payload`` (kg added to the torso), ``friction`` (sliding friction scale of every
geom) and ``motor_gain`` (servo stiffness scale).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from envs.base import ActionSpace, EnvConfig, EnvStep, StepInfo, VecEnv
from harness.errors import FieldError

MODEL_PATH = Path(__file__).parent / "assets" / "quadruped.xml"

NOMINAL_PARAMS = {
    "mass_scale": 1.0,  # scale of every body's mass [-]
    "payload": 0.0,  # mass added to the torso [kg]
    "friction": 1.0,  # scale of every geom's sliding friction [-]
    "motor_gain": 1.0,  # scale of every servo's stiffness [-]
}

INSTALL_HINT = (
    "needs JAX and MuJoCo MJX: pip install -e '.[mjx]' && "
    "pip install --no-deps mujoco-mjx==3.17.0 (make test installs both)"
)


@dataclass(frozen=True)
class QuadrupedConfig(EnvConfig):
    name: str = "quadruped"  # the task
    num_envs: int = 256  # envs stepped together by one MJX batch
    max_episode_steps: int = 1000  # 20 s at 50 Hz
    substeps: int = 4  # physics steps of 5 ms per control step
    action_scale: float = 0.5  # [rad] of joint target per unit action
    reset_noise: float = 0.1  # [rad] uniform joint jitter on reset
    command_vx: tuple[float, ...] = (0.5, 0.5)  # [m/s] range the command is drawn from
    command_vy: tuple[float, ...] = (0.0, 0.0)  # [m/s]
    command_yaw: tuple[float, ...] = (0.0, 0.0)  # [rad/s]
    nominal_params: ClassVar[dict[str, float]] = NOMINAL_PARAMS

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("substeps",):
            if getattr(self, key) <= 0:
                raise FieldError(key, f"must be > 0, got {getattr(self, key)}")
        for key in ("action_scale", "reset_noise"):
            if getattr(self, key) < 0:
                raise FieldError(key, f"must be >= 0, got {getattr(self, key)}")
        for key in ("command_vx", "command_vy", "command_yaw"):
            value = getattr(self, key)
            if len(value) != 2 or value[0] > value[1]:
                raise FieldError(key, f"must be [low, high] with low <= high, got {list(value)}")


class Quadruped(VecEnv):
    """N quadrupeds simulated by MJX on the torch device's JAX twin (CPU or the same GPU)."""

    observation_size = 52
    reward_terms = (
        "tracking_lin_vel",
        "tracking_ang_vel",
        "upright",
        "energy",
        "action_rate",
        "foot_slip",
    )
    final_metrics = ("mean_velocity_x", "velocity_error")
    not_capturable = "the quadruped steps on JAX (MJX), which torch cannot capture or compile"
    simulator = "mjx"
    blocks_can_leave = False  # its state lives in JAX: a batch keeps every block

    def __init__(
        self, config: QuadrupedConfig, device: torch.device, generator: torch.Generator
    ) -> None:
        try:
            import jax

            from envs import quadruped_mjx as sim
        except ImportError as err:
            raise FieldError("name", f"quadruped {INSTALL_HINT} ({err})") from None
        self.action_space = ActionSpace("continuous", shape=12, low=-1.0, high=1.0)
        super().__init__(config, device, generator)
        self._jax = jax
        self._sim_module = sim
        self.jax_device = _jax_device(jax, device)
        spec = sim.TaskSpec(
            substeps=config.substeps,
            max_episode_steps=config.max_episode_steps,
            action_scale=config.action_scale,
            reset_noise=config.reset_noise,
            command_ranges=(config.command_vx, config.command_vy, config.command_yaw),
        )
        self._spec = spec
        self.sim = _simulation(spec, self.num_envs, self.jax_device, sim.CPU_CHUNK)
        self._key = self._jax.device_put(jax.random.key(_seed(generator)), self.jax_device)
        self.state: dict[str, Any] | None = None
        self._inputs: tuple[torch.Tensor, ...] = ()  # kept alive while JAX may read them
        k = len(self.reward_terms)
        o = self.observation_size
        self._slices = {
            "obs": slice(0, o),
            "final_obs": slice(o, 2 * o),
            "reward": 2 * o,
            "terms": slice(2 * o + 1, 2 * o + 1 + k),
            "terminated": 2 * o + 1 + k,
            "truncated": 2 * o + 2 + k,
            "final": slice(2 * o + 3 + k, 2 * o + 5 + k),
        }
        self.use_graphs(True)

    def draw_member_keys(self, generators: list[torch.Generator]) -> None:
        """Block k's resets draw from member k's JAX key (a run's key, from its generator):
        the simulation splits and draws per member, so each block resets as its env alone."""
        members = len(generators)
        seeds = self._jax.numpy.asarray([_seed(g) for g in generators], dtype="int32")
        self.sim = _simulation(
            self._spec, self.num_envs, self.jax_device, self._sim_module.CPU_CHUNK, members
        )
        self._key = self._jax.device_put(
            self._jax.vmap(self._jax.random.key)(seeds), self.jax_device
        )
        self.state = None

    def param_matrix(self) -> torch.Tensor:
        """[N, P] parameters in the simulation's column order."""
        return torch.stack([self.params[name] for name in self._sim_module.PARAMS], dim=1)

    def reset(self) -> torch.Tensor:
        self._key, key = self.sim.split(self._key)
        self.params = self.randomizer.sample(self.num_envs)
        self.episode_step.zero_()
        self.state, obs = self.sim.reset(key)
        return torch.from_dlpack(obs)

    def step(self, actions: torch.Tensor) -> EnvStep:
        if self.state is None:
            self.reset()
        params = [self.params[name][:, None] for name in self._sim_module.PARAMS]
        inputs = torch.cat([actions.detach().to(torch.float32), *params], dim=1)  # [N, 12 + P]
        self.state, packed = self.sim.step(self.state, self._jax.dlpack.from_dlpack(inputs))
        self._inputs = (inputs,)
        out = torch.from_dlpack(packed)  # [N, 2 * O + 1 + K + 4]
        s = self._slices
        if self._accounting is None:
            self._account(out[:, s["reward"] :])
        else:
            self._accounting(out[:, s["reward"] :])
        reward = out[:, s["reward"]]
        terminated = out[:, s["terminated"]] > 0.5
        truncated = out[:, s["truncated"]] > 0.5
        final = out[:, s["final"]]
        info = StepInfo(final_obs=lambda: out[:, s["final_obs"]])
        info["final_metrics"] = final
        return EnvStep(out[:, s["obs"]], reward, terminated, truncated, info)

    def _account(self, results: torch.Tensor) -> None:
        """Episode statistics, parameter redraws and step counters from one step's
        ``results`` [N, 1 + K + 4]: reward, reward terms, terminated, truncated, final
        metrics."""
        k = len(self.reward_terms)
        terms = results[:, 1 : 1 + k]
        done = (results[:, 1 + k] > 0.5) | (results[:, 2 + k] > 0.5)
        self.stats.record(results[:, 0], terms, done, results[:, 3 + k :])
        self._redraw_params_where(done)
        self.episode_step = torch.where(done, 0, self.episode_step + 1)

    def use_graphs(self, on: bool) -> None:
        self._accounting = _GraphedAccounting(self) if on and self.device.type == "cuda" else None


class _GraphedAccounting:
    """`Quadruped._account` as one CUDA graph: the torch work after each JAX step is ~20
    small kernels, and MJX keeps the host busy launching its own, so the GPU waits for every
    launch the host makes. A step copies its results in and replays the graph: two launches.

    The first WARMUP steps run eagerly, the next one captures. Tensors that eager code
    replaced since (a reset's parameters, a loaded state) are copied into the graph's own
    before a replay; new episode statistics (a batch's) make it capture again.
    """

    WARMUP = 2

    def __init__(self, env: Quadruped) -> None:
        self.env = env
        self.graph: Any = None
        self.eager = 0  # eager steps since the last capture was dropped
        self.key: tuple[int, ...] = ()

    def __call__(self, results: torch.Tensor) -> None:
        env = self.env
        if self.graph is not None and self.key != _identity(env.stats):
            self.graph, self.eager = None, 0
        if self.graph is None:
            if self.eager < self.WARMUP:
                self.eager += 1
                env._account(results)
                return
            self._capture(results)
        self.results.copy_(results)
        tensors = env.tensors()
        if any(v is not self.inputs[k] for k, v in tensors.items()):
            for k, v in tensors.items():
                if v is not self.inputs[k]:
                    self.inputs[k].copy_(v)
            env.load_tensors(self.inputs)
        self.graph.replay()

    def _capture(self, results: torch.Tensor) -> None:
        from harness.graphs import capture

        env = self.env
        self.results = results.clone()
        self.inputs = inputs = {k: v.clone() for k, v in env.tensors().items()}
        env.load_tensors(inputs)

        def account() -> None:
            env._account(self.results)
            for k, v in env.tensors().items():
                if v is not inputs[k]:
                    inputs[k].copy_(v)

        self.graph, _ = capture(account, [])  # the env draws from its own counter
        env.load_tensors(inputs)  # the capture ran nothing
        self.key = _identity(env.stats)


def _identity(stats: Any) -> tuple[int, ...]:
    """The statistics object and its tensors, as a graph captured on them holds them."""
    return (id(stats), *(id(v) for v in vars(stats).values() if isinstance(v, torch.Tensor)))


def _seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**31, (1,), generator=generator, device=generator.device))


@functools.lru_cache(maxsize=8)
def _simulation(spec: Any, num_envs: int, jax_device: Any, cpu_chunk: int, members: int = 1) -> Any:
    """One compiled simulation per setting: it holds no env state, so envs built alike (a
    study's trials, evaluation, tests) share it and JAX traces and compiles it once."""
    from envs import quadruped_mjx as sim

    model = sim.load_model(MODEL_PATH)
    return sim.Simulation(model, spec, num_envs, jax_device, cpu_chunk, members)


def _jax_device(jax: Any, device: torch.device) -> Any:
    """The JAX device that shares memory with the torch device."""
    if device.type == "cpu":
        return jax.devices("cpu")[0]
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        try:
            return jax.devices("cuda")[index]
        except RuntimeError as err:
            raise FieldError("name", f"quadruped on {device} needs JAX with CUDA ({err})") from None
    raise FieldError("name", f"quadruped runs on cpu or cuda, not {device}")
