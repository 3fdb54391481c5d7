"""The MJX quadruped on CPU: the VecEnv contract, agreement with C MuJoCo, randomisation and
repeatability. Every env here has 4 envs and the same settings, so JAX compiles the step
once per pytest session (the persistent cache in conftest.py keeps it)."""

from __future__ import annotations

import faulthandler
import math

import mujoco
import numpy as np
import pytest
import torch

from envs import quadruped_mjx as sim
from envs.quadruped import MODEL_PATH
from harness.config import load_config
from harness.errors import ConfigError
from harness.registry import make_env

N = 4
RANDOMIZED = [
    "env.randomization.mass_scale={low: 0.8, high: 1.2}",
    "env.randomization.payload={low: 0.0, high: 2.0}",
    "env.randomization.friction={low: 0.5, high: 1.5}",
    "env.randomization.motor_gain={low: 0.7, high: 1.3}",
]
RANGES = {"mass_scale": (0.8, 1.2), "payload": (0.0, 2.0), "friction": (0.5, 1.5),
          "motor_gain": (0.7, 1.3)}  # fmt: skip


@pytest.fixture(autouse=True)
def _never_hang():
    """A hung XLA call ends the test run with every thread's stack instead of blocking CI."""
    faulthandler.dump_traceback_later(600, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def quadruped(*overrides: str, seed: int = 0):
    config = load_config(overrides=["env.name=quadruped", f"env.num_envs={N}", *overrides])
    return make_env(config.env, torch.device("cpu"), torch.Generator().manual_seed(seed))


def actions(steps: int, seed: int = 0) -> torch.Tensor:
    """[steps, N, 12] moderate random joint targets."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(steps, N, 12, generator=g) * 2 - 1) * 0.5


def test_contract_shapes_dtypes_and_reward_terms() -> None:
    env = quadruped(*RANDOMIZED)
    obs = env.reset()
    assert obs.shape == (N, 52) and obs.dtype == torch.float32 and obs.device.type == "cpu"
    # A fresh env stands still, level, with the command it was given.
    assert torch.allclose(obs[:, :6], torch.zeros(N, 6))
    assert torch.allclose(obs[:, 6:9], torch.tensor([0.0, 0.0, -1.0]).expand(N, 3), atol=1e-6)
    assert torch.allclose(obs[:, 45:48], torch.tensor([0.5, 0.0, 0.0]).expand(N, 3))
    step = env.step(actions(1)[0])
    assert step.obs.shape == (N, 52) and step.reward.shape == (N,)
    assert step.terminated.dtype == torch.bool and step.truncated.dtype == torch.bool
    assert step.info["final_obs"].shape == (N, 52)
    assert step.info["final_metrics"].shape == (N, 2)
    # The action is observed next step.
    assert torch.allclose(step.obs[:, 33:45], actions(1)[0])
    # The reward is the sum of the named terms the statistics log.
    means = env.stats.reset_interval()
    assert set(means) >= {f"reward_{t}" for t in env.reward_terms} | {"velocity_error"}


def test_time_limit_truncates_and_resets_every_env() -> None:
    env = quadruped("env.max_episode_steps=3")
    env.reset()
    acts = actions(3)
    rewards = []
    for t in range(3):
        step = env.step(acts[t])
        rewards.append(step.reward.clone())
        assert bool(step.truncated.all()) == (t == 2)
    # After the reset: velocities zero, last action zero, torso back at the origin.
    assert torch.allclose(step.obs[:, :6], torch.zeros(N, 6))
    assert torch.equal(step.obs[:, 33:45], torch.zeros(N, 12))
    assert torch.allclose(step.info["final_obs"][:, 33:45], acts[2])
    qpos = np.asarray(env.state["qpos"])
    assert np.allclose(qpos[:, :2], 0.0)
    sums = env.stats.sums
    assert sums[0].item() == N  # N episodes of length 3
    assert sums[2].item() == 3 * N
    # Their returns are the rewards stepped, and the sum of the reward terms.
    torch.testing.assert_close(sums[1], torch.stack(rewards).sum())
    torch.testing.assert_close(sums[3 : 3 + len(env.reward_terms)].sum(), sums[1])


def test_a_fallen_torso_terminates_and_only_that_env_resets() -> None:
    env = quadruped()
    env.reset()
    for t in range(3):
        env.step(actions(3)[t])
    # Drop env 1 onto the floor: its torso's lowest corner is below the clearance.
    env.state["qpos"] = env.state["qpos"].at[1, 2].set(0.04)
    before = np.asarray(env.state["qpos"]).copy()
    step = env.step(torch.zeros(N, 12))
    assert step.terminated.tolist() == [False, True, False, False]
    assert not step.truncated.any()
    after = np.asarray(env.state["qpos"])
    assert np.allclose(after[1, :2], 0.0) and after[1, 2] > 0.2  # standing again
    assert not np.allclose(after[0], sim.stand_qpos(sim.load_model(MODEL_PATH)))
    assert np.abs(after[[0, 2, 3], :2] - before[[0, 2, 3], :2]).max() < 0.05
    final = step.info["final_obs"]
    assert not torch.allclose(final[1], step.obs[1])
    assert torch.equal(final[[0, 2, 3]], step.obs[[0, 2, 3]])


def reference_rollout(qpos0: np.ndarray, params: np.ndarray, acts: np.ndarray) -> np.ndarray:
    """C MuJoCo (float64) from the same start, one model per env with its parameters:
    qpos [steps, N, nq] after each control step."""
    out = np.zeros((len(acts), *qpos0.shape))
    for i in range(len(qpos0)):
        model = sim.load_model(MODEL_PATH)
        sim.set_params(model, params[i])
        data = mujoco.MjData(model)
        data.qpos[:] = qpos0[i]
        for t, a in enumerate(acts):
            data.ctrl[:] = np.array(sim.STAND) + 0.5 * np.clip(a[i], -1, 1)
            for _ in range(4):
                mujoco.mj_step(model, data)
            out[t, i] = data.qpos
    return out


def test_mjx_agrees_with_c_mujoco_with_each_envs_parameters() -> None:
    env = quadruped(*RANDOMIZED)
    env.reset()
    params = env.param_matrix().numpy().astype(np.float64)
    qpos0 = np.asarray(env.state["qpos"], np.float64)
    acts = actions(25).numpy()
    mjx_qpos = []
    for a in acts:
        step = env.step(torch.from_numpy(a))
        assert not (step.terminated | step.truncated).any()
        mjx_qpos.append(np.asarray(env.state["qpos"], np.float64))
    reference = reference_rollout(qpos0, params, acts)
    err = np.abs(np.stack(mjx_qpos) - reference).max()
    assert err < 1e-4, err  # float32 against float64 over 100 physics steps
    # The parameters matter: the nominal model ends elsewhere.
    nominal = reference_rollout(qpos0, np.tile([1.0, 0.0, 1.0, 1.0], (N, 1)), acts)
    assert np.abs(nominal[-1] - reference[-1]).max() > 100 * err


def test_randomisation_draws_each_envs_parameters_inside_its_range_on_reset() -> None:
    env = quadruped(*RANDOMIZED, "env.max_episode_steps=3")
    env.reset()
    first = env.param_matrix().clone()
    for column, name in enumerate(sim.PARAMS):
        low, high = RANGES[name]
        values = first[:, column]
        assert ((values >= low) & (values <= high)).all(), name
        assert len(set(values.tolist())) == N, name  # every env its own
    for _ in range(2):
        env.step(torch.zeros(N, 12))
        assert torch.equal(env.param_matrix(), first)  # kept within an episode
    env.step(torch.zeros(N, 12))  # the time limit resets every env
    assert (env.param_matrix() != first).all()


def test_a_seeded_rollout_repeats_exactly() -> None:
    def rollout(seed: int) -> torch.Tensor:
        env = quadruped(*RANDOMIZED, "env.max_episode_steps=3", seed=seed)
        out = [env.reset()]
        for a in actions(8):
            step = env.step(a)
            out += [step.obs.clone(), step.reward.clone()[:, None]]
        return torch.cat(out, 1)

    assert torch.equal(rollout(0), rollout(0))
    assert not torch.equal(rollout(0), rollout(1))


def test_more_envs_than_a_cpu_chunk_step_like_one_batch(monkeypatch) -> None:
    """On CPU, batches above CPU_CHUNK envs run in chunks (XLA hangs on big batched solves
    there); the chunks give what one batch gives."""
    plain = quadruped(*RANDOMIZED)
    monkeypatch.setattr(sim, "CPU_CHUNK", 3)  # 4 envs: a chunk of 3 and one of 1
    chunked = quadruped(*RANDOMIZED)
    assert chunked.sim._batched == chunked.sim._chunked
    plain.reset(), chunked.reset()
    for a in actions(3):
        one, other = plain.step(a), chunked.step(a)
    assert torch.allclose(one.obs, other.obs, atol=1e-5)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("env.command_vx=[1.0, 0.5]", "env.command_vx must be [low, high]"),
        ("env.substeps=0", "env.substeps must be > 0"),
        ("env.randomization.pole_mass={low: 0.1, high: 0.2}", "env.randomization.pole_mass"),
    ],
)
def test_bad_settings_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        quadruped(override)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("experiment.compile=true", "experiment.compile"),
        ("experiment.fused_env=true", "experiment.fused_env"),
    ],
)
def test_torch_only_speedups_are_refused_for_mjx(override: str, key: str, tmp_path) -> None:
    from harness.runner import train

    config = load_config(overrides=["env.name=quadruped", f"env.num_envs={N}", override])
    with pytest.raises(ConfigError, match=key):
        train(config, run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_ppo_trains_on_the_quadruped_through_the_runner(tmp_path) -> None:
    from harness.runner import train
    from harness.tracking import RunStore

    config = load_config(
        overrides=[
            "env.name=quadruped",
            f"env.num_envs={N}",
            "env.max_episode_steps=3",
            "algo.num_steps=16",
            "algo.num_minibatches=2",
            "experiment.total_env_steps=256",
            "experiment.log_interval=2",
            "tracking.wandb=disabled",
        ]
    )
    result = train(config, run_dir=tmp_path / "run")
    assert result.env_steps == 256
    store = RunStore.open(result.run_dir)
    assert store.meta()["env_stepping"] == "mjx"
    rows = store.metrics()
    assert (rows["episodes"] > 0).all()
    assert math.isfinite(rows["reward_tracking_lin_vel"].iloc[-1])
    assert rows["velocity_error"].notna().all()


def test_blocks_of_a_batch_step_as_each_members_env_alone() -> None:
    """Two quadrupeds with their own seeds and payload ranges as blocks of one batched env
    (batched trials): each block's resets, randomised parameters and episode ends equal its
    env stepped alone exactly, through resets after the time limit, and its observations and
    rewards within float rounding (XLA compiles 8 envs' physics apart from 4's)."""
    from envs.members import make_member_env

    ranges = ["{low: 0.0, high: 2.0}", "{low: 0.5, high: 1.0}"]
    configs = [
        load_config(
            overrides=[
                "env.name=quadruped",
                f"env.num_envs={N}",
                "env.max_episode_steps=3",
                f"env.randomization.payload={r}",
            ]
        ).env
        for r in ranges
    ]
    cpu = torch.device("cpu")
    batch = make_member_env(configs, cpu, [torch.Generator().manual_seed(s) for s in (1, 2)])
    alone = [
        make_env(c, cpu, torch.Generator().manual_seed(s))
        for c, s in zip(configs, (1, 2), strict=True)
    ]
    assert torch.equal(batch.reset(), torch.cat([env.reset() for env in alone]))
    for a, b in zip(actions(6, seed=1), actions(6, seed=2), strict=True):
        together = batch.step(torch.cat([a, b]))
        apart = [env.step(x) for env, x in zip(alone, (a, b), strict=True)]
        for field in ("terminated", "truncated"):
            assert torch.equal(
                getattr(together, field), torch.cat([getattr(s, field) for s in apart])
            ), field
        # Rounding grows through contacts and depends on the CPU (XLA compiles for its vector
        # units): on one AMD EPYC machine a joint velocity differed by 1.7e-5 after 6 steps.
        for field in ("obs", "reward"):
            torch.testing.assert_close(
                getattr(together, field),
                torch.cat([getattr(s, field) for s in apart]),
                rtol=1e-4,
                atol=1e-4,
            )
        assert torch.equal(
            batch.params["payload"], torch.cat([env.params["payload"] for env in alone])
        )
    assert together.truncated.all()  # every block reset on the same step as alone
