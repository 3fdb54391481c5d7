"""The arm's rigid-body dynamics against MuJoCo, and the reaching task's contract."""

from __future__ import annotations

import math
from pathlib import Path

import mujoco
import numpy as np
import pytest
import torch

from envs.arm import HOME, MODEL_PATH, Arm, ArmConfig
from envs.randomization import ParamRange
from envs.rigid_body import FRICTION_VELOCITY, ChainDynamics, Scales, load_chain
from harness.errors import ConfigError

F64 = torch.float64
CPU = torch.device("cpu")


def mujoco_model(path: Path | str) -> tuple[mujoco.MjModel, mujoco.MjData]:
    """MuJoCo's model of the file, dry friction handed to qfrc_applied (see arm.xml)."""
    model = mujoco.MjModel.from_xml_path(str(path))
    model.dof_frictionloss[:] = 0.0
    return model, mujoco.MjData(model)


def mujoco_friction(friction: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    return -friction * np.tanh(qvel / FRICTION_VELOCITY)


def mujoco_forward(path: Path | str, q: np.ndarray, qd: np.ndarray, ctrl: np.ndarray) -> tuple:
    """(qacc [B, n], mass matrix [B, n, n]) from MuJoCo for a batch of states."""
    model, data = mujoco_model(path)
    friction = load_chain(path).friction
    n = model.nv
    qacc, mass = np.zeros((len(q), n)), np.zeros((len(q), n, n))
    for k in range(len(q)):
        data.qpos[:], data.qvel[:], data.ctrl[:] = q[k], qd[k], ctrl[k]
        data.qfrc_applied[:] = mujoco_friction(friction, qd[k])
        mujoco.mj_forward(model, data)
        qacc[k] = data.qacc
        mujoco.mj_fullM(model, data, mass[k])
    return qacc, mass


def ours(path: Path | str, q: np.ndarray, qd: np.ndarray, ctrl: np.ndarray) -> tuple:
    chain = load_chain(path)
    dyn = ChainDynamics(chain, CPU, F64)
    qt, qdt = torch.tensor(q), torch.tensor(qd)
    nominal = Scales.nominal(len(q), F64)
    tau = torch.tensor(ctrl * chain.gear)
    qacc = dyn.acceleration(qt, qdt, tau, nominal)
    mass = dyn.mass_matrix(dyn.kinematics(qt), nominal.mass)
    return qacc.numpy(), mass.numpy()


def test_arm_mass_matrix_and_accelerations_equal_mujocos() -> None:
    rng = np.random.default_rng(0)
    b = 200
    q = rng.uniform(-2.0, 2.0, (b, 4))
    qd = rng.uniform(-4.0, 4.0, (b, 4))
    ctrl = rng.uniform(-1.0, 1.0, (b, 4))
    ref_qacc, ref_mass = mujoco_forward(MODEL_PATH, q, qd, ctrl)
    qacc, mass = ours(MODEL_PATH, q, qd, ctrl)
    np.testing.assert_allclose(mass, ref_mass, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(qacc, ref_qacc, rtol=1e-9, atol=1e-10)
    assert np.abs(ref_qacc).max() > 10  # the states are far from rest


def random_chain_xml(rng: np.random.Generator, n: int) -> str:
    """A random spatial chain: tilted bodies, oblique axes, rotated and full inertias."""

    def vec(k: int, scale: float = 1.0) -> str:
        return " ".join(f"{v:.6f}" for v in rng.normal(size=k) * scale)

    body_xml = ""
    for i in reversed(range(n)):
        inertial = (
            f'<inertial pos="{vec(3, 0.1)}" mass="{rng.uniform(0.2, 2):.4f}" '
            f'diaginertia="{" ".join(f"{v:.5f}" for v in rng.uniform(0.02, 0.04, 3))}" '
            f'quat="{vec(4)}"/>'
            if i % 2
            else f'<inertial pos="{vec(3, 0.1)}" mass="{rng.uniform(0.2, 2):.4f}" '
            'fullinertia="0.04 0.03 0.05 0.004 -0.003 0.002"/>'
        )
        body_xml = (
            f'<body name="b{i}" pos="{vec(3, 0.2)}" quat="{vec(4)}">'
            f'<joint name="j{i}" type="hinge" axis="{vec(3)}" damping="{rng.uniform(0, 1):.3f}" '
            f'armature="{rng.uniform(0, 0.05):.4f}" frictionloss="{rng.uniform(0, 0.2):.3f}"/>'
            f"{inertial}{body_xml}</body>"
        )
    motors = "".join(f'<motor joint="j{i}" gear="{rng.uniform(1, 10):.3f}"/>' for i in range(n))
    return (
        '<mujoco><compiler angle="radian" inertiafromgeom="false"/>'
        '<option timestep="0.002" gravity="0.3 -0.5 -9.81"/>'
        f"<worldbody>{body_xml}</worldbody><actuator>{motors}</actuator></mujoco>"
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_spatial_chains_equal_mujocos_dynamics(seed: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(seed)
    n = 7
    path = tmp_path / "chain.xml"
    path.write_text(random_chain_xml(rng, n))
    b = 50
    q = rng.uniform(-math.pi, math.pi, (b, n))
    qd = rng.uniform(-3.0, 3.0, (b, n))
    ctrl = rng.uniform(-1.0, 1.0, (b, n))
    ref_qacc, ref_mass = mujoco_forward(path, q, qd, ctrl)
    qacc, mass = ours(path, q, qd, ctrl)
    np.testing.assert_allclose(mass, ref_mass, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(qacc, ref_qacc, rtol=1e-8, atol=1e-8)


KP, KD = 2.0, 0.2  # PD gains in control units per rad and per rad/s


def references(steps: int, num_envs: int, seed: int) -> np.ndarray:
    """[steps, num_envs, 4] smooth joint targets around HOME, inside the joint range."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)[:, None, None] * 0.02
    freq = rng.uniform(0.3, 1.2, (1, num_envs, 4))
    phase = rng.uniform(0, 2 * math.pi, (1, num_envs, 4))
    return np.array(HOME) + 0.6 * np.sin(2 * math.pi * freq * t + phase)


def pd(ref: np.ndarray, q: np.ndarray, qd: np.ndarray) -> np.ndarray:
    """Each simulator's own PD control toward the reference (keeps the arm off its stops)."""
    return np.clip(KP * (ref - q) - KD * qd, -1.0, 1.0)


def mujoco_rollout(q0: np.ndarray, refs: np.ndarray, substeps: int) -> np.ndarray:
    """[steps, n] joint positions after every control step, from one start q0 [n]."""
    model, data = mujoco_model(MODEL_PATH)
    friction = load_chain(MODEL_PATH).friction
    data.qpos[:] = q0
    out = []
    for ref in refs:
        data.ctrl[:] = pd(ref, data.qpos, data.qvel)
        for _ in range(substeps):
            data.qfrc_applied[:] = mujoco_friction(friction, data.qvel)
            mujoco.mj_step(model, data)
        out.append(data.qpos.copy())
    return np.array(out)


def test_arm_trajectories_follow_mujoco_for_150_control_steps() -> None:
    """The env itself (float32, two physics steps per control step) against mj_step."""
    num_envs, steps = 8, 150
    env = Arm(ArmConfig(num_envs=num_envs, max_episode_steps=1000), CPU, torch.Generator())
    env.reset()
    q0 = env.state["q"].double().numpy()
    refs = references(steps, num_envs, seed=4)
    traj = []
    for ref in refs:
        q, qd = env.state["q"].double().numpy(), env.state["qd"].double().numpy()
        env.step(torch.tensor(pd(ref, q, qd), dtype=torch.float32))
        traj.append(env.state["q"].double().numpy())
    ours_q = np.stack(traj, 1)  # [num_envs, steps, n]
    chain = load_chain(MODEL_PATH)
    for k in range(num_envs):
        ref = mujoco_rollout(q0[k], refs[:, k], ArmConfig().substeps)
        low, high = chain.joint_range[:, 0], chain.joint_range[:, 1]
        assert ((ref > low + 0.05) & (ref < high - 0.05)).all(), "rollout touched a joint stop"
        assert np.abs(ref - q0[k]).max() > 0.5  # the arm really moves
        np.testing.assert_allclose(ours_q[k], ref, atol=1e-4)  # float32 over 300 physics steps


def test_float64_trajectory_equals_mujoco_to_1e_10() -> None:
    chain = load_chain(MODEL_PATH)
    dyn = ChainDynamics(chain, CPU, F64)
    refs = references(150, 1, seed=5)[:, 0]
    q = torch.tensor([HOME], dtype=F64)
    qd = torch.zeros_like(q)
    nominal = Scales.nominal(1, F64)
    traj = []
    for ref in refs:
        tau = torch.tensor(pd(ref, q[0].numpy(), qd[0].numpy()) * chain.gear)[None]
        for _ in range(2):
            q, qd = dyn.step(q, qd, tau, nominal)
        traj.append(q[0].numpy())
    np.testing.assert_allclose(np.array(traj), mujoco_rollout(np.array(HOME), refs, 2), atol=1e-10)


def make_arm(n: int = 16, seed: int = 0, **kwargs) -> Arm:
    env = Arm(ArmConfig(num_envs=n, **kwargs), CPU, torch.Generator().manual_seed(seed))
    env.reset()
    return env


def test_heavier_links_need_more_torque_to_hold_against_gravity() -> None:
    """The torque that holds the nominal arm still lets an arm with 1.5x link mass sag."""
    env = make_arm(2, randomization={"link_mass": ParamRange(1.0, 1.5)})
    env.params["link_mass"] = torch.tensor([1.0, 1.5])
    dyn = env.dynamics
    q = torch.tensor([[0.0, -0.2, 0.4, 0.0]] * 2)  # arm reaching forward, nearly level
    qd = torch.zeros_like(q)
    hold = dyn.bias(dyn.kinematics(q), qd, env.params["link_mass"])  # [2, 4]
    torch.testing.assert_close(hold[1], 1.5 * hold[0])  # gravity torque scales with mass
    env.set_state(q, qd)
    action = (hold[0] / env.gear).expand(2, 4)  # nominal holding torque, both envs
    for _ in range(10):
        env.step(action)
    drift = env.state["q"] - q
    assert drift[0].abs().max() < 1e-3  # the nominal arm holds (friction aside)
    assert drift[1, 1] > 0.02  # the heavy arm's shoulder sags (positive pitch is down)


def test_motor_gain_damping_and_friction_scale_the_dynamics() -> None:
    env = make_arm(3, randomization={"motor_gain": ParamRange(0.5, 2.0)})
    env.params["motor_gain"] = torch.tensor([0.5, 1.0, 2.0])
    torque = env.torque(torch.full((3, 4), 0.5))
    torch.testing.assert_close(torque[:, 1], torch.tensor([5.0, 10.0, 20.0]))  # gear 20
    dyn = env.dynamics
    qd = torch.full((2, 4), 1.0)
    scales = Scales(torch.ones(2), torch.tensor([1.0, 2.0]), torch.tensor([1.0, 3.0]))
    damping, friction = dyn.passive(qd, scales)
    torch.testing.assert_close(damping[1], 2.0 * damping[0])
    torch.testing.assert_close(friction[1], 3.0 * friction[0])
    expected = -torch.tensor([0.05, 0.05, 0.03, 0.01]) * math.tanh(1.0 / FRICTION_VELOCITY)
    torch.testing.assert_close(friction[0], expected)


def test_targets_stay_in_their_scaled_box_and_noise_has_its_std() -> None:
    env = make_arm(
        4000,
        randomization={
            "target_scale": ParamRange(0.5, 0.5),
            "obs_noise": ParamRange(0.1, 0.1),
        },
    )
    obs = env.reset()
    target = obs[:, 11:14]
    centre = torch.tensor([0.35, 0.0, 0.2])
    half = torch.tensor([0.15, 0.25, 0.2]) * 0.5
    assert ((target - centre).abs() <= half + 1e-6).all()
    assert ((target - centre).abs().amax(0) > 0.9 * half).all()  # the box is filled
    noise = obs[:, :4] - env.state["q"]
    assert abs(noise.std().item() - 0.1) < 0.005
    assert abs(noise.mean().item()) < 0.005


def test_joint_stop_holds_the_joint_at_its_limit() -> None:
    env = make_arm(1)
    action = torch.tensor([[0.0, 0.0, 1.0, 0.0]])  # elbow driven hard toward +2.5 rad
    for _ in range(60):
        step = env.step(action)
    assert env.state["q"][0, 2].item() == pytest.approx(2.5)
    assert env.state["qd"][0, 2].item() == 0.0
    assert torch.isfinite(step.obs).all()


def test_contract_time_limit_final_obs_and_success() -> None:
    env = make_arm(6, max_episode_steps=5)
    obs = env.reset()
    assert obs.shape == (6, 17) and obs.dtype == torch.float32
    assert env.action_space.kind == "continuous" and env.action_space.shape == 4
    for i in range(5):
        step = env.step(torch.zeros(6, 4))
        assert not step.terminated.any()
        assert step.truncated.all() == (i == 4)
    # After the limit every env restarted near home; final_obs kept the old state.
    assert (env.episode_step == 0).all()
    assert (step.obs[:, :4] - torch.tensor(HOME)).abs().max() <= 0.1 + 1e-6
    final_distance = step.info["final_obs"][:, 14:17].norm(dim=1)
    stats = env.stats.reset_interval()
    assert stats["episodes"].item() == 6
    assert stats["final_distance"].item() == pytest.approx(final_distance.mean().item(), rel=1e-5)
    expected = (final_distance < 0.05).float().mean().item()
    assert stats["success"].item() == pytest.approx(expected)
    assert set(stats) >= {"reward_distance", "reward_success", "reward_action", "reward_energy"}


def test_end_effector_sits_on_the_target_gives_success() -> None:
    env = make_arm(1, max_episode_steps=1)
    target = env.target()
    env.state["target_unit"] = (env.state["ee"] - env.target_center) / env.target_half
    step = env.step(torch.zeros(1, 4))  # torque 0: the arm moves a little under gravity
    assert step.reward.item() > 0.5  # success bonus outweighs the small penalties
    assert env.stats.reset_interval()["success"].item() == 1.0
    assert target.shape == (1, 3)


def test_model_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.xml: model file not found"):
        load_chain(tmp_path / "missing.xml")
    bad = tmp_path / "bad.xml"
    bad.write_text(
        '<mujoco><compiler angle="radian"/><worldbody><body name="a">'
        '<joint type="slide"/><inertial pos="0 0 0" mass="1" diaginertia="1 1 1"/>'
        "</body></worldbody></mujoco>"
    )
    with pytest.raises(ConfigError, match="bad.xml: body 'a': needs exactly one hinge"):
        load_chain(bad)
    bad.write_text('<mujoco><compiler angle="degree"/></mujoco>')
    with pytest.raises(ConfigError, match='bad.xml: needs <compiler angle="radian">'):
        load_chain(bad)


def test_unrolled_solver_used_on_cuda_equals_linalg_solve() -> None:
    from envs.rigid_body import _small_spd_solve

    g = torch.Generator().manual_seed(0)
    a = torch.randn(100, 7, 7, generator=g, dtype=F64)
    a = a @ a.transpose(1, 2) + 0.1 * torch.eye(7, dtype=F64)
    b = torch.randn(100, 7, generator=g, dtype=F64)
    torch.testing.assert_close(_small_spd_solve(a, b), torch.linalg.solve(a, b))
