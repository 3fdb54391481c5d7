"""Cartpole against gymnasium's CartPole-v1, step by step."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs.cartpole import THETA_THRESHOLD, X_THRESHOLD, Cartpole, CartpoleConfig


def make(n: int, **kwargs) -> Cartpole:
    env = Cartpole(
        CartpoleConfig(num_envs=n, **kwargs), torch.device("cpu"), torch.Generator().manual_seed(0)
    )
    env.reset()
    return env


def random_states(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([2.4, 2.0, 0.21, 2.0])
    return (torch.rand(n, 4, generator=g) * 2 - 1) * scale  # [n, 4], many near the limits


def gym_step(state: np.ndarray, action: int) -> tuple[np.ndarray, float, bool]:
    env = gym.make("CartPole-v1").unwrapped
    env.reset(seed=0)
    env.state = state.astype(np.float64)
    obs, reward, terminated, _, _ = env.step(action)
    return obs, reward, terminated


def test_discrete_step_equals_gymnasium() -> None:
    n = 2000
    states = random_states(n, seed=1)
    actions = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(2))
    env = make(n)
    env.set_state(states)
    step = env.step(actions)

    expected = [gym_step(s, int(a)) for s, a in zip(states.numpy(), actions.numpy(), strict=True)]
    exp_obs = np.stack([e[0] for e in expected])
    exp_reward = np.array([e[1] for e in expected], dtype=np.float32)
    exp_term = np.array([e[2] for e in expected])

    np.testing.assert_allclose(step.info["final_obs"].numpy(), exp_obs, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(step.reward.numpy(), exp_reward)
    # Termination is a comparison; skip the few states within float32 noise of a limit.
    clear = (np.abs(np.abs(exp_obs[:, 0]) - X_THRESHOLD) > 1e-5) & (
        np.abs(np.abs(exp_obs[:, 2]) - THETA_THRESHOLD) > 1e-5
    )
    assert clear.sum() > 0.99 * n
    np.testing.assert_array_equal(step.terminated.numpy()[clear], exp_term[clear])
    assert 50 < exp_term.sum() < n - 50  # the sample really exercises both outcomes
    assert not step.truncated.any()


def test_trajectory_follows_gymnasium_for_a_whole_episode() -> None:
    gym_env = gym.make("CartPole-v1")
    obs, _ = gym_env.reset(seed=3)
    env = make(1)
    env.set_state(torch.tensor(obs).unsqueeze(0))
    rng = np.random.default_rng(4)
    for _ in range(500):
        action = int(rng.integers(2))
        obs, reward, terminated, truncated, _ = gym_env.step(action)
        step = env.step(torch.tensor([action]))
        np.testing.assert_allclose(step.info["final_obs"][0].numpy(), obs, rtol=1e-4, atol=1e-5)
        assert bool(step.terminated[0]) == terminated
        assert bool(step.truncated[0]) == truncated
        if terminated or truncated:
            break
    assert terminated  # random actions drop the pole well before the limit


def test_continuous_force_is_scaled_by_motor_gain() -> None:
    n = 500
    states = random_states(n, seed=5)
    force = torch.rand(n, 1, generator=torch.Generator().manual_seed(6)) * 2 - 1  # [-1, 1]
    env = make(n, action_type="continuous")
    env.set_state(states)
    step = env.step(force)
    for i in range(0, n, 50):
        gym_env = gym.make("CartPole-v1").unwrapped
        gym_env.reset(seed=0)
        gym_env.force_mag = 10.0 * float(force[i, 0])  # action 1 pushes with +force_mag
        gym_env.state = states[i].numpy().astype(np.float64)
        obs, _, _, _, _ = gym_env.step(1)
        np.testing.assert_allclose(step.info["final_obs"][i].numpy(), obs, rtol=1e-5, atol=1e-6)
    # Actions beyond the bounds are clipped to +-1.
    env.set_state(states)
    clipped = env.step(torch.full((n, 1), 7.0)).info["final_obs"]
    env.set_state(states)
    unit = env.step(torch.ones(n, 1)).info["final_obs"]
    torch.testing.assert_close(clipped, unit)


def test_done_envs_reset_in_step_and_keep_final_obs() -> None:
    n = 64
    env = make(n)
    states = torch.zeros(n, 4)
    states[: n // 2, 2] = 0.2094  # just inside the angle limit and falling: ends next step
    states[: n // 2, 3] = 1.0
    env.set_state(states)
    env.episode_step.fill_(7)
    step = env.step(torch.ones(n, dtype=torch.long))
    ended = step.terminated
    assert ended[: n // 2].all() and not ended[n // 2 :].any()
    # The terminal state is in final_obs; obs already holds a fresh start for those envs.
    assert (step.info["final_obs"][: n // 2, 2] > THETA_THRESHOLD).all()
    assert (step.obs[: n // 2].abs() <= 0.05).all()
    torch.testing.assert_close(step.obs[n // 2 :], step.info["final_obs"][n // 2 :])
    assert (env.episode_step[: n // 2] == 0).all() and (env.episode_step[n // 2 :] == 8).all()


def test_truncated_exactly_at_500_steps() -> None:
    env = make(4)
    upright = torch.zeros(4, 4)
    for t in range(1, 501):
        env.set_state(upright)  # keep the pole up so only the time limit can end it
        step = env.step(torch.zeros(4, dtype=torch.long))
        assert not step.terminated.any()
        assert bool(step.truncated.all()) == (t == 500), t
    assert (env.episode_step == 0).all()
    stats = env.stats.reset_interval()
    assert stats["episodes"].item() == 4
    assert stats["episode_return"].item() == 500.0
    assert stats["reward_alive"].item() == 500.0


def test_episode_statistics_average_finished_episodes() -> None:
    env = make(3, max_episode_steps=5)
    lengths = []
    for _ in range(12):
        env.set_state(torch.zeros(3, 4))
        env.step(torch.zeros(3, dtype=torch.long))
    lengths = env.stats.reset_interval()
    assert lengths["episodes"].item() == 6  # two 5-step episodes per env in 12 steps
    assert lengths["episode_length"].item() == 5.0
    # An interval with no finished episode reports the previous means, not NaN.
    env.step(torch.zeros(3, dtype=torch.long))
    again = env.stats.reset_interval()
    assert again["episodes"].item() == 0 and again["episode_return"].item() == 5.0


@pytest.mark.parametrize("action_type", ["discrete", "continuous"])
def test_contract_shapes_and_dtypes(action_type: str) -> None:
    env = make(8, action_type=action_type)
    obs = env.reset()
    assert obs.shape == (8, 4) and obs.dtype == torch.float32
    actions = torch.zeros(8, dtype=torch.long) if action_type == "discrete" else torch.zeros(8, 1)
    step = env.step(actions)
    assert step.obs.shape == (8, 4) and step.reward.shape == (8,)
    assert step.terminated.dtype == torch.bool and step.truncated.dtype == torch.bool
    assert step.info["final_obs"].shape == (8, 4)
