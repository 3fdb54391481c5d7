"""PPO learns cartpole, repeats itself exactly when seeded, and schedules its lr."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from algos.ppo import PPO, PPOConfig
from envs.cartpole import Cartpole, CartpoleConfig
from harness.config import load_config
from harness.runner import collect, train
from tests.helpers.recipes import greedy_returns, solve

TIMING = [
    "wall_time_s",
    "env_steps_per_second",
    "interval_env_steps_per_second",
    "collection_s",
    "update_s",
]


def quick(tmp: Path, *overrides: str):
    config = load_config(
        overrides=[
            "tracking.wandb=disabled",
            "env.num_envs=256",
            "experiment.total_env_steps=600000",
            *overrides,
        ]
    )
    return train(config, run_dir=tmp)


@pytest.mark.slow
def test_discrete_cartpole_is_solved(solved_cartpole) -> None:
    """Solved (CartPole-v1's threshold): the greedy policy's mean return over 100 evaluation
    episodes >= 475 at two evaluations in a row, within 600k env steps."""
    assert solved_cartpole.env_steps < 600_000, solved_cartpole
    assert min(greedy_returns(solved_cartpole.run_dir)[-2:]) >= 475


@pytest.mark.slow
def test_continuous_cartpole_is_solved(tmp_path: Path, seed_override: str) -> None:
    # The same criterion for the continuous task (force in [-1, 1] x 10 N).
    result = quick(tmp_path, "env.action_type=continuous", seed_override, *solve(475, 5))
    assert result.env_steps < 600_000, result
    assert min(greedy_returns(result.run_dir)[-2:]) >= 475


def test_seeded_runs_repeat_exactly(tmp_path: Path) -> None:
    args = ("experiment.total_env_steps=40000", "experiment.log_interval=2", "experiment.seed=5")
    a = quick(tmp_path / "a", *args)
    b = quick(tmp_path / "b", *args)
    ma = pd.read_csv(a.run_dir / "metrics.csv").drop(columns=TIMING)
    mb = pd.read_csv(b.run_dir / "metrics.csv").drop(columns=TIMING)
    assert len(ma) == 5
    pd.testing.assert_frame_equal(ma, mb)
    c = quick(tmp_path / "c", *args[:2], "experiment.seed=6")
    mc = pd.read_csv(c.run_dir / "metrics.csv").drop(columns=TIMING)
    assert not ma["policy_loss"].equals(mc["policy_loss"])


def make_ppo(**kwargs) -> tuple[PPO, Cartpole]:
    cpu = torch.device("cpu")
    env = Cartpole(CartpoleConfig(num_envs=32), cpu, torch.Generator().manual_seed(0))
    ppo = PPO(
        PPOConfig(num_steps=8, **kwargs),
        4,
        env.action_space,
        32,
        cpu,
        torch.Generator().manual_seed(1),
    )
    return ppo, env


def rollout_and_update(ppo: PPO, env: Cartpole) -> dict[str, torch.Tensor]:
    collect(env, ppo, env.reset())
    return ppo.update()


def test_linear_schedule_follows_progress() -> None:
    ppo, env = make_ppo(lr=1e-3, lr_schedule="linear")
    ppo.set_progress(0.25)
    stats = rollout_and_update(ppo, env)
    assert stats["lr"].item() == pytest.approx(7.5e-4)
    assert ppo.optimizer.lr.item() == pytest.approx(7.5e-4)  # the optimizer reads the same lr


def test_adaptive_schedule_shrinks_lr_when_kl_is_large() -> None:
    # The first minibatch sees the unchanged policy (KL exactly 0, lr x 1.5); with a tiny
    # target each later minibatch's KL is "too large" (lr / 1.5): 1.5 / 1.5**3 = 1 / 1.5**2.
    ppo, env = make_ppo(
        lr=1e-3, lr_schedule="adaptive", desired_kl=1e-9, num_epochs=1, num_minibatches=4
    )
    stats = rollout_and_update(ppo, env)
    assert stats["lr"].item() == pytest.approx(1e-3 / 1.5**2, rel=1e-5)


def test_update_needs_a_full_rollout() -> None:
    ppo, _ = make_ppo()
    with pytest.raises(RuntimeError, match="full rollout"):
        ppo.update()


def test_update_changes_the_policy_and_returns_finite_stats() -> None:
    ppo, env = make_ppo()
    before = [p.clone() for p in ppo.model.actor.parameters()]
    stats = rollout_and_update(ppo, env)
    assert all(torch.isfinite(v).all() for v in stats.values())
    assert any(
        not torch.equal(a, b) for a, b in zip(before, ppo.model.actor.parameters(), strict=True)
    )
    assert ppo.model.obs_norm.count.item() == pytest.approx(8 * 32, rel=1e-3)


def test_update_inputs_stay_at_one_address_and_a_replayed_update_rewinds_the_rollout() -> None:
    """A captured update (harness.graphs.Updates, the env stepping outside the graph) reads
    the tensors of its capture: GAE's bootstrap observation is copied into one tensor each
    rollout; `update_replayed` rewinds the storage as `update` does."""
    ppo, env = make_ppo()
    obs = collect(env, ppo, env.reset())
    ppo.update()
    kept = ppo.last_obs
    assert kept is not None and torch.equal(kept, obs)
    obs = collect(env, ppo, obs)
    assert ppo.last_obs is kept and torch.equal(kept, obs)
    assert ppo.storage.full
    ppo.update_replayed()
    assert ppo.storage.step == 0
    collect(env, ppo, obs)  # a full rollout again, from row 0
    assert ppo.storage.full and torch.isfinite(ppo.update()["policy_loss"])


@pytest.mark.parametrize("action_type", ["discrete", "continuous"])
def test_compiled_iterations_equal_eager_ones(monkeypatch, action_type: str) -> None:
    """PPO.compile traces every piece whole (fullgraph: a graph break would raise) and, with
    the tracer's own backend (no code generation: the kernels themselves are the GPU tests'),
    computes exactly what eager PPO does, the lr schedule's in-place updates included."""
    import algos.ppo

    monkeypatch.setattr(algos.ppo, "BACKEND", "aot_eager")
    results = []
    for compiled in (False, True):
        cpu = torch.device("cpu")
        env = Cartpole(
            CartpoleConfig(num_envs=32, action_type=action_type),
            cpu,
            torch.Generator().manual_seed(0),
        )
        torch.manual_seed(0)  # the networks' init
        ppo = PPO(
            PPOConfig(num_steps=8, num_minibatches=2),
            4,
            env.action_space,
            32,
            cpu,
            torch.Generator().manual_seed(1),
        )
        if compiled:
            ppo.compile()
            assert hasattr(ppo._losses, "_torchdynamo_orig_callable")
        obs = env.reset()
        rows = []
        for _ in range(3):
            obs = collect(env, ppo, obs)
            rows.append(torch.stack(list(ppo.update().values())))
        results.append((torch.stack(rows), ppo.state_dict()))
    (eager_rows, eager), (compiled_rows, compiled) = results
    assert torch.equal(compiled_rows, eager_rows)
    for name, value in eager["model"].items():
        assert torch.equal(compiled["model"][name], value), name
    assert torch.equal(compiled["optimizer"]["steps"], eager["optimizer"]["steps"])
