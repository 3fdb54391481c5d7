"""GAE against values worked out by hand (gamma 0.9, lambda 0.8)."""

from __future__ import annotations

import pytest
import torch

from algos.gae import compute_gae

GAMMA, LAM = 0.9, 0.8


def run(terminated: list[bool], truncated: list[bool], final_value: float = 0.0):
    rewards = torch.tensor([[1.0], [2.0], [3.0]])  # [T=3, N=1]
    values = torch.tensor([[0.5], [1.0], [1.5]])
    last = torch.tensor([2.0])
    term = torch.tensor(terminated).unsqueeze(1)
    trunc = torch.tensor(truncated).unsqueeze(1)
    final = torch.full((3, 1), final_value)
    adv, ret = compute_gae(rewards, values, last, term, trunc, final, GAMMA, LAM)
    return adv[:, 0].tolist(), ret[:, 0].tolist()


def test_no_episode_end() -> None:
    # delta2 = 3 + .9*2 - 1.5 = 3.3; delta1 = 2 + .9*1.5 - 1 = 2.35; delta0 = 1 + .9*1 - .5 = 1.4
    # A2 = 3.3; A1 = 2.35 + .72*3.3 = 4.726; A0 = 1.4 + .72*4.726 = 4.80272
    adv, ret = run([False] * 3, [False] * 3)
    assert adv == pytest.approx([4.80272, 4.726, 3.3])
    assert ret == pytest.approx([5.30272, 5.726, 4.8])


def test_termination_stops_bootstrap_and_recursion() -> None:
    # t=1 terminated: delta1 = 2 - 1 = 1, A1 = 1; A0 = 1.4 + .72*1 = 2.12
    adv, _ = run([False, True, False], [False] * 3, final_value=10.0)
    assert adv == pytest.approx([2.12, 1.0, 3.3])


def test_time_out_bootstraps_from_final_observation_value() -> None:
    # t=1 truncated, V(final_obs)=10: r1 = 2 + .9*10 = 11, delta1 = 10, A1 = 10
    # A0 = 1.4 + .72*10 = 8.6 (obs_2 is a new episode: no recursion through it)
    adv, _ = run([False, False, False], [False, True, False], final_value=10.0)
    assert adv == pytest.approx([8.6, 10.0, 3.3])


def test_terminated_and_truncated_together_count_as_terminated() -> None:
    adv, _ = run([False, True, False], [False, True, False], final_value=10.0)
    assert adv == pytest.approx([2.12, 1.0, 3.3])


def test_envs_are_independent_columns() -> None:
    t, n = 5, 3
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(t, n, generator=g), torch.randn(t, n, generator=g)
    last, final = torch.randn(n, generator=g), torch.randn(t, n, generator=g)
    term = torch.rand(t, n, generator=g) < 0.3
    trunc = torch.rand(t, n, generator=g) < 0.3
    adv, _ = compute_gae(rewards, values, last, term, trunc, final, GAMMA, LAM)
    for i in range(n):
        col, _ = compute_gae(
            rewards[:, i : i + 1],
            values[:, i : i + 1],
            last[i : i + 1],
            term[:, i : i + 1],
            trunc[:, i : i + 1],
            final[:, i : i + 1],
            GAMMA,
            LAM,
        )
        torch.testing.assert_close(adv[:, i], col[:, 0])
