"""The tasks through gymnasium's vector API (envs.gym)."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, VectorEnv

import envs  # noqa: F401 - registers the ids
from harness.errors import ConfigError


def test_make_vec_gives_a_vector_env_with_gymnasium_spaces() -> None:
    env = gym.make_vec("vecbench/CartPole-v1", num_envs=8)
    assert isinstance(env.unwrapped, VectorEnv) and env.num_envs == 8
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert env.single_action_space == gym.spaces.Discrete(2)
    assert env.single_observation_space.shape == (4,)
    assert env.action_space.shape == (8,) and env.observation_space.shape == (8, 4)
    obs, info = env.reset(seed=3)
    assert obs.dtype == np.float32 and obs in env.observation_space and info == {}
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert obs.shape == (8, 4) and reward.shape == terminated.shape == truncated.shape == (8,)
    assert reward.dtype == np.float32 and terminated.dtype == truncated.dtype == np.bool_
    assert {gym.spec(i).vector_entry_point for i in envs.GYM_IDS} == {"envs.gym:VecbenchVectorEnv"}


def test_an_episode_resets_in_the_step_that_ends_it() -> None:
    """Same-step autoreset: the ending step returns a fresh start (every coordinate within
    0.05) and puts the terminal state in info["final_obs"] where info["_final_obs"]."""
    env = gym.make_vec("vecbench/CartPole-v1", num_envs=16)
    env.reset(seed=0)
    ended = 0
    for _ in range(60):
        obs, _, terminated, truncated, info = env.step(np.ones(16, dtype=np.int64))
        mask = info["_final_obs"]
        assert (mask == (terminated | truncated)).all()
        for i in np.flatnonzero(mask):
            x, _, theta, _ = info["final_obs"][i]
            assert abs(x) > 2.4 or abs(theta) > 12 * 2 * math.pi / 360
            assert np.abs(obs[i]).max() <= 0.05
            ended += 1
        assert all(f is None for f in info["final_obs"][~mask])
    assert ended >= 16  # always pushing right ends every episode within 60 steps


def test_a_seed_repeats_its_episodes_and_another_seed_does_not() -> None:
    env = gym.make_vec("vecbench/CartPole-v1", num_envs=4)
    actions = np.random.default_rng(0).integers(0, 2, (30, 4))

    def rollout(seed: int) -> np.ndarray:
        first, _ = env.reset(seed=seed)
        return np.stack([first] + [env.step(a)[0] for a in actions])

    assert np.array_equal(rollout(5), rollout(5))
    assert not np.array_equal(rollout(5), rollout(6))


def test_config_keys_pass_through_and_tensors_stay_on_the_device() -> None:
    env = gym.make_vec(
        "vecbench/CartPole-v1",
        num_envs=4,
        action_type="continuous",
        randomization={"pole_mass": {"low": 0.05, "high": 0.2}},
        tensors=True,
    )
    assert env.single_action_space == gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    obs, _ = env.reset(seed=0)
    assert isinstance(obs, torch.Tensor) and obs.shape == (4, 4)
    masses = env.unwrapped.env.params["pole_mass"]
    assert ((masses >= 0.05) & (masses <= 0.2)).all() and masses.unique().numel() == 4
    obs, reward, terminated, truncated, info = env.step(torch.zeros(4, 1))
    assert isinstance(reward, torch.Tensor) and info["final_obs"].shape == (4, 4)
    with pytest.raises(ConfigError, match="env.action_typo is not a known key"):
        gym.make_vec("vecbench/CartPole-v1", num_envs=2, action_typo="continuous")


def test_the_arm_through_gymnasium() -> None:
    env = gym.make_vec("vecbench/Arm-v0", num_envs=3, max_episode_steps=5)
    obs, _ = env.reset(seed=0)
    assert env.single_action_space.shape == (env.unwrapped.env.action_space.shape,)
    for _ in range(5):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert truncated.all() and info["_final_obs"].all()
