"""The quadruped's simulation in JAX: MuJoCo MJX steps every env, one jitted call per control
step does the physics substeps, reward terms, termination, time limit and the reset of the
envs that finished. The simulation state never leaves JAX; `envs.quadruped` exchanges
actions, parameters and results with torch through DLPack.

Shapes: N envs, J = 12 joints, P = 4 randomised parameters.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Before JAX starts its GPU backend: allocate on demand instead of taking 75 % of the
# GPU, which torch shares.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import contextlib  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

# JAX logs each accelerator plugin it does not find (TPU) when it lists devices.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)

# MJX prints that its optional Warp backend is missing; vecbench uses the JAX one.
with contextlib.redirect_stdout(io.StringIO()):
    from mujoco import mjx  # noqa: E402

LEGS = ("FL", "FR", "HL", "HR")
STAND = (0.0, 0.8, -1.5) * 4  # abduction, hip, knee per leg [rad]
FOOT_RADIUS = 0.025  # [m], the foot spheres in the XML
CONTACT_TOLERANCE = 0.005  # a foot this close to the floor counts as in contact [m]
TORSO_CLEARANCE = 0.01  # the torso's lowest corner this close to the floor ends the episode
MAX_TILT = math.radians(60.0)  # a torso tilted further has fallen
CPU_CHUNK = 256  # envs per vmapped call on CPU (XLA's batched solve hangs on 2 cores above)
PARAMS = ("mass_scale", "payload", "friction", "motor_gain")  # columns of params [N, P]

# Reward weights and widths, per control step.
TRACKING_SIGMA = 0.25  # [(m/s)^2] and [(rad/s)^2]
WEIGHTS = {
    "tracking_lin_vel": 1.0,
    "tracking_ang_vel": 0.5,
    "upright": 1.0,
    "energy": 2e-4,
    "action_rate": 0.01,
    "foot_slip": 0.1,
}
TERMS = tuple(WEIGHTS)
OBS_SIZE = 52


@dataclass(frozen=True)
class TaskSpec:
    substeps: int
    max_episode_steps: int
    action_scale: float  # [rad] per unit action
    reset_noise: float  # [rad] uniform jitter of the joints on reset
    command_ranges: tuple[tuple[float, float], ...]  # vx [m/s], vy [m/s], yaw rate [rad/s]


def load_model(path: Path) -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(str(path))


def stand_qpos(m: mujoco.MjModel) -> np.ndarray:
    """[nq] the standing pose with the feet touching the floor (C MuJoCo's kinematics)."""
    d = mujoco.MjData(m)
    d.qpos[:] = 0.0
    d.qpos[3] = 1.0
    d.qpos[7:] = STAND
    mujoco.mj_kinematics(m, d)
    feet = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, f"{leg}_foot") for leg in LEGS]
    lowest = float(d.geom_xpos[feet, 2].min()) - FOOT_RADIUS
    qpos = d.qpos.copy()
    qpos[2] -= lowest
    return qpos


def set_params(m: mujoco.MjModel, params: np.ndarray) -> None:
    """Apply one env's parameters [P] to a C MuJoCo model in place (tests' reference): the
    same fields the MJX step sets."""
    mass_scale, payload, friction, gain = (float(x) for x in params)
    torso = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "torso")
    m.body_mass[:] *= mass_scale
    m.body_mass[torso] += payload
    m.geom_friction[:, 0] *= friction
    m.actuator_gainprm[:, 0] *= gain
    m.actuator_biasprm[:, 1] *= gain


def _rotate_inverse(quat: jax.Array, v: jax.Array) -> jax.Array:
    """World vectors v [N, 3] in the body frames of unit quaternions quat [N, 4] (w, x, y, z)."""
    w, u = quat[:, :1], quat[:, 1:]
    return (
        v * (2.0 * w * w - 1.0)
        - 2.0 * w * jnp.cross(u, v)
        + 2.0 * u * jnp.sum(u * v, axis=1, keepdims=True)
    )


class Simulation:
    """N quadrupeds on one JAX device; `step` and `reset` are jitted once."""

    def __init__(
        self,
        model: mujoco.MjModel,
        spec: TaskSpec,
        num_envs: int,
        device: jax.Device,
        cpu_chunk: int = CPU_CHUNK,
        members: int = 1,
    ) -> None:
        self.spec = spec
        self.num_envs = num_envs
        # Blocks of a batch (envs.members): M keys, one per member, each drawing for its own
        # num_envs / M envs as a simulation of that size alone draws.
        self.members = members
        self.device = device
        self.mx = mjx.put_model(model, device=device)
        self.template = mjx.make_data(self.mx, device=device)  # one env's Data
        geom = mujoco.mjtObj.mjOBJ_GEOM
        self.feet = np.array([mujoco.mj_name2id(model, geom, f"{leg}_foot") for leg in LEGS])
        torso_geom = mujoco.mj_name2id(model, geom, "torso")
        self.torso_half = jnp.asarray(model.geom_size[torso_geom], jnp.float32)  # [3]
        torso = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "torso")
        self.payload_onehot = jnp.asarray(np.eye(model.nbody)[torso], jnp.float32)
        self.stand = jnp.asarray(stand_qpos(model), jnp.float32)  # [nq]
        self.default_joints = jnp.asarray(STAND, jnp.float32)  # [J]
        self.control_dt = float(model.opt.timestep) * spec.substeps
        lo, hi = np.array(spec.command_ranges, np.float32).T
        self.command_low, self.command_high = jnp.asarray(lo), jnp.asarray(hi)
        cpu = device.platform == "cpu"
        self.cpu_chunk = cpu_chunk
        self._batched = self._chunked if cpu and num_envs > cpu_chunk else jax.vmap
        donate = () if cpu else (0,)
        self.step = jax.jit(self._step, donate_argnums=donate)
        self.reset = jax.jit(self._reset)

    # One env ------------------------------------------------------------------------------

    def _model(self, params: jax.Array) -> mjx.Model:
        """The model with one env's randomised fields; only these are batched under vmap."""
        mx = self.mx
        mass_scale, payload, friction, gain = params[0], params[1], params[2], params[3]
        return mx.tree_replace(
            {
                "body_mass": mx.body_mass * mass_scale + self.payload_onehot * payload,
                "geom_friction": mx.geom_friction.at[:, 0].multiply(friction),
                "actuator_gainprm": mx.actuator_gainprm.at[:, 0].multiply(gain),
                "actuator_biasprm": mx.actuator_biasprm.at[:, 1].multiply(gain),
            }
        )

    def _physics(
        self, params: jax.Array, qpos: jax.Array, qvel: jax.Array, warm: jax.Array, ctrl: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        m = self._model(params)
        d = self.template.replace(qpos=qpos, qvel=qvel, qacc_warmstart=warm, ctrl=ctrl)
        d = jax.lax.fori_loop(0, self.spec.substeps, lambda _, d: mjx.step(m, d), d)
        return d.qpos, d.qvel, d.qacc_warmstart, d.actuator_force

    def _foot_positions(self, qpos: jax.Array) -> jax.Array:
        """[4, 3] world positions of the foot centres at qpos."""
        d = mjx.kinematics(self.mx, self.template.replace(qpos=qpos))
        return d.geom_xpos[self.feet]

    def _chunked(self, f: Any) -> Any:
        def run(*xs: jax.Array) -> Any:
            return jax.lax.map(lambda x: f(*x), xs, batch_size=self.cpu_chunk)

        return run

    # Batched -----------------------------------------------------------------------------

    def split(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(next key, subkey) of the key, or of each member's key."""
        if self.members == 1:
            key, sub = jax.random.split(key)
            return key, sub
        pairs = jax.vmap(jax.random.split)(key)  # [M, 2]
        return pairs[:, 0], pairs[:, 1]

    def _uniform(self, key: jax.Array, width: int, **bounds: float) -> jax.Array:
        """[N, width] uniform draws; with members, block k's from member k's key."""
        if self.members == 1:
            return jax.random.uniform(key, (self.num_envs, width), **bounds)
        block = (self.num_envs // self.members, width)
        draws = jax.vmap(lambda k: jax.random.uniform(k, block, **bounds))(key)
        return draws.reshape(self.num_envs, width)

    def _fresh(self, key: jax.Array) -> dict[str, jax.Array]:
        n, s = self.num_envs, self.spec
        k_joint, k_command = self.split(key)
        noise = self._uniform(k_joint, 12, minval=-1.0, maxval=1.0) * s.reset_noise
        qpos = jnp.broadcast_to(self.stand, (n, self.stand.shape[0])).at[:, 7:].add(noise)
        u = self._uniform(k_command, 3)
        command = self.command_low + (self.command_high - self.command_low) * u
        feet = self._batched(self._foot_positions)(qpos)
        return {
            "qpos": qpos,
            "qvel": jnp.zeros((n, self.mx.nv), jnp.float32),
            "warm": jnp.zeros((n, self.mx.nv), jnp.float32),
            "last_action": jnp.zeros((n, 12), jnp.float32),
            "command": command,
            "feet": feet,
            "steps": jnp.zeros((n,), jnp.int32),
        }

    def _observe(self, state: dict[str, jax.Array]) -> jax.Array:
        """[N, 52]: base linear and angular velocity (body frame), projected gravity, joint
        positions (from standing) and velocities, last action, command, foot contacts."""
        qpos, qvel = state["qpos"], state["qvel"]
        quat = qpos[:, 3:7]
        down = jnp.broadcast_to(jnp.array([0.0, 0.0, -1.0]), (qpos.shape[0], 3))
        contact = state["feet"][..., 2] - FOOT_RADIUS < CONTACT_TOLERANCE
        return jnp.concatenate(
            [
                _rotate_inverse(quat, qvel[:, :3]),
                qvel[:, 3:6],  # a free joint's angular velocity is in the body frame
                _rotate_inverse(quat, down),
                qpos[:, 7:] - self.default_joints,
                qvel[:, 6:],
                state["last_action"],
                state["command"],
                contact.astype(jnp.float32),
            ],
            axis=1,
        )

    def _reset(self, key: jax.Array) -> tuple[dict[str, Any], jax.Array]:
        key, sub = self.split(key)
        state = {**self._fresh(sub), "key": key}
        return state, self._observe(state)

    def _step(self, state: dict[str, Any], inputs: jax.Array) -> tuple[dict[str, Any], jax.Array]:
        """One control step of every env from inputs [N, 12 + P]: actions, then the per-env
        parameters (one array: each exchange with torch costs the host ~0.1 ms). Returns the
        new state and one [N, 2 * 52 + 1 + K + 4] f32 array: obs (after resets), final_obs
        (before), reward, reward terms [K], terminated, truncated, and the final metrics mean
        velocity x and velocity error."""
        s = self.spec
        action, params = inputs[:, :12], inputs[:, 12:]
        a = jnp.clip(action, -1.0, 1.0)
        ctrl = self.default_joints + s.action_scale * a  # MuJoCo clamps to ctrlrange
        qpos, qvel, warm, force = self._batched(self._physics)(
            params, state["qpos"], state["qvel"], state["warm"], ctrl
        )
        feet = self._batched(self._foot_positions)(qpos)
        steps = state["steps"] + 1
        after = {**state, "qpos": qpos, "qvel": qvel, "warm": warm, "feet": feet}
        after["last_action"] = a
        after["steps"] = steps

        quat = qpos[:, 3:7]
        v = _rotate_inverse(quat, qvel[:, :3])
        w = qvel[:, 3:6]
        gravity = _rotate_inverse(quat, jnp.broadcast_to(jnp.array([0.0, 0.0, -1.0]), v.shape))
        command = state["command"]
        contact = (feet[..., 2] - FOOT_RADIUS < CONTACT_TOLERANCE).astype(jnp.float32)
        foot_speed2 = jnp.sum(((feet - state["feet"])[..., :2] / self.control_dt) ** 2, axis=2)
        raw = {
            "tracking_lin_vel": jnp.exp(
                -jnp.sum((command[:, :2] - v[:, :2]) ** 2, axis=1) / TRACKING_SIGMA
            ),
            "tracking_ang_vel": jnp.exp(-((command[:, 2] - w[:, 2]) ** 2) / TRACKING_SIGMA),
            "upright": -jnp.sum(gravity[:, :2] ** 2, axis=1),
            "energy": -jnp.sum(jnp.abs(force * qvel[:, 6:]), axis=1),
            "action_rate": -jnp.sum((a - state["last_action"]) ** 2, axis=1),
            "foot_slip": -jnp.sum(contact * foot_speed2, axis=1),
        }
        terms = jnp.stack([WEIGHTS[k] * raw[k] for k in TERMS], axis=1)  # [N, K]

        # The torso's lowest corner: its centre height less the box's vertical extent.
        x, y, z = quat[:, 1], quat[:, 2], quat[:, 3]
        wq = quat[:, 0]
        up_rows = jnp.stack(
            [2 * (x * z - wq * y), 2 * (y * z + wq * x), 1 - 2 * (x * x + y * y)], axis=1
        )
        lowest = qpos[:, 2] - jnp.sum(jnp.abs(up_rows) * self.torso_half, axis=1)
        terminated = (lowest < TORSO_CLEARANCE) | (gravity[:, 2] > -math.cos(MAX_TILT))
        truncated = steps >= s.max_episode_steps
        done = terminated | truncated
        final_obs = self._observe(after)
        elapsed = steps.astype(jnp.float32) * self.control_dt
        mean_velocity = qpos[:, :2] / elapsed[:, None]  # reset puts every torso at x = y = 0
        velocity_error = jnp.linalg.norm(mean_velocity - command[:, :2], axis=1)

        key, sub = self.split(state["key"])
        fresh = self._fresh(sub)
        new = {
            k: jnp.where(done.reshape(-1, *([1] * (v.ndim - 1))), fresh[k], v)
            for k, v in after.items()
            if k != "key"
        }
        new["key"] = key
        # Envs that go on keep final_obs itself as their observation: observing `new` again
        # gave bit-different values on some CPUs (XLA fuses the two computations differently).
        obs = jnp.where(done[:, None], self._observe(fresh), final_obs)
        out = jnp.concatenate(
            [
                obs,
                final_obs,
                terms.sum(axis=1, keepdims=True),
                terms,
                terminated[:, None].astype(jnp.float32),
                truncated[:, None].astype(jnp.float32),
                mean_velocity[:, :1],
                velocity_error[:, None],
            ],
            axis=1,
        )
        return new, out


def raw_steps_per_second(
    model: mujoco.MjModel,
    num_envs: int,
    substeps: int,
    device: jax.Device,
    steps: int = 200,
    targets: np.ndarray | None = None,
    states: list[dict[str, jax.Array]] | None = None,
) -> float:
    """The floor to compare the env with: ``jit(vmap(mjx.step))`` with ``substeps`` physics
    steps per call, constant controls (the standing pose, or joint ``targets``
    [num_envs, 12]), and no rewards, resets, randomisation or exchange with torch. Control
    steps per second.

    By default the batched Data starts standing and is carried from call to call. With
    ``states`` (an env's qpos, qvel and warm start before each of its steps) call i steps
    ``states[i]``, as many calls as there are states (``steps`` is ignored): MJX's solver
    iterates until it converges, so its cost follows the robots' motion, and this floor
    does the physics work of the env's own steps."""
    mx = mjx.put_model(model, device=device)
    one = mjx.make_data(mx, device=device).replace(qpos=jnp.asarray(stand_qpos(model)))
    data = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_envs, *x.shape)), one)
    if targets is None:
        targets = np.broadcast_to(np.asarray(STAND, np.float32), (num_envs, 12))
    data = data.replace(ctrl=jax.device_put(jnp.asarray(targets, jnp.float32), device))

    def physics(d: mjx.Data) -> mjx.Data:
        return jax.lax.fori_loop(0, substeps, lambda _, d: mjx.step(mx, d), d)

    if states is not None:
        given = [
            data.replace(qpos=s["qpos"], qvel=s["qvel"], qacc_warmstart=s["warm"]) for s in states
        ]
        step = jax.jit(jax.vmap(physics))
        for d in given[:2]:
            out = step(d)
        jax.block_until_ready(out)
        start = time.perf_counter()
        for d in given:
            out = step(d)
        jax.block_until_ready(out)
        return len(given) * num_envs / (time.perf_counter() - start)

    donate = () if device.platform == "cpu" else (0,)
    step = jax.jit(jax.vmap(physics), donate_argnums=donate)
    for _ in range(max(2, steps // 10)):  # the second call's inputs are the first's outputs
        data = step(data)
    jax.block_until_ready(data)
    start = time.perf_counter()
    for _ in range(steps):
        data = step(data)
    jax.block_until_ready(data)
    return steps * num_envs / (time.perf_counter() - start)
