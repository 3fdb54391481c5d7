"""Batched members (harness.members): each member trains as its run would alone."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness.config import RunConfig, load_config
from harness.errors import ConfigError
from harness.members import Member, train_members
from harness.runner import train
from harness.tracking import RunStore

BASE = [
    "tracking.wandb=disabled",
    "experiment.device=cpu",
    "experiment.log_interval=2",
    "experiment.checkpoint_interval=2",
]
EPISODES = ["episodes", "episode_return", "episode_length"]
LOSSES = ["policy_loss", "value_loss", "entropy", "approx_kl", "lr"]


def configs(*extra: str, members: list[list[str]]) -> list[RunConfig]:
    return [load_config(None, [*BASE, *extra, *m]) for m in members]


def metrics(run_dir: Path) -> pd.DataFrame:
    return RunStore.open(run_dir).metrics()


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    return state["algo"]["model"]


def assert_same_run(alone: Path, member: Path, exact_episodes: bool = True) -> None:
    a, b = metrics(alone), metrics(member)
    assert list(a["env_steps"]) == list(b["env_steps"])
    for column in [c for c in a.columns if c.startswith(("episode", "reward_", "final_"))]:
        if exact_episodes:  # same actions, so the same transitions
            assert list(a[column]) == list(b[column]), column
        else:
            assert b[column].to_numpy() == pytest.approx(
                a[column].to_numpy(), rel=1e-4, nan_ok=True
            ), column
    for column in LOSSES:
        assert b[column].to_numpy() == pytest.approx(a[column].to_numpy(), rel=1e-3, abs=1e-5)
    wa, wb = weights(alone), weights(member)
    assert set(wa) == set(wb)
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-4, atol=1e-4)


DISCRETE = [
    ["experiment.seed=3", "algo.lr=1e-3"],
    ["experiment.seed=5", "algo.lr=3e-4", "algo.entropy_coef=0.01", "algo.clip_coef=0.1"],
    ["experiment.seed=7", "algo.gamma=0.95", "algo.gae_lambda=0.9", "algo.max_grad_norm=0.3"],
]


def test_each_member_of_a_batch_trains_as_its_run_alone(tmp_path: Path) -> None:
    """Three cartpole runs with different seeds and hyperparameters, batched: each
    member's episodes equal its run alone exactly (same actions, same env transitions)
    over 2 iterations; losses and weights agree within float rounding. (Batched and solo
    matrix products round differently, about 1e-7 here; over more iterations a near-tie in
    a sampled action can send one env another way, after which its run differs by far
    more: seen after 4 iterations with one thread.)"""
    runs = configs("env.num_envs=32", "experiment.total_env_steps=1024", members=DISCRETE)
    for i, config in enumerate(runs):
        train(config, run_dir=tmp_path / f"alone-{i}")
    results = train_members([Member(c, tmp_path / f"member-{i}") for i, c in enumerate(runs)])
    assert [r.env_steps for r in results] == [1024] * 3
    for i in range(3):
        assert_same_run(tmp_path / f"alone-{i}", tmp_path / f"member-{i}")
        assert RunStore.open(tmp_path / f"member-{i}").summary()["completed"] is True


def test_members_with_their_own_randomisation_ranges_on_the_arm(tmp_path: Path) -> None:
    """Continuous actions (Gaussian head) and per-member randomisation ranges: each block
    draws its envs' parameters from its member's range, as the run alone does."""
    ranges = ["0.5, high: 1.5", "0.8, high: 1.2"]
    runs = configs(
        "env.name=arm",
        "env.num_envs=16",
        "env.max_episode_steps=20",
        "experiment.total_env_steps=1280",
        members=[
            [f"experiment.seed={s}", f"env.randomization={{link_mass: {{low: {r}}}}}"]
            for s, r in zip((1, 2), ranges, strict=True)
        ],
    )
    for i, config in enumerate(runs):
        train(config, run_dir=tmp_path / f"alone-{i}")
    train_members([Member(c, tmp_path / f"member-{i}") for i, c in enumerate(runs)])
    for i in range(2):
        assert_same_run(tmp_path / f"alone-{i}", tmp_path / f"member-{i}", exact_episodes=False)


def test_a_stopped_member_leaves_the_others_unchanged(tmp_path: Path, caplog) -> None:
    """Member 0 is stopped at its first row (as a pruned trial is): it leaves the batch
    (which stops computing for it), writes no more rows and no summary; members 1 and 2
    log exactly what they log when nobody stops."""
    runs = configs("env.num_envs=32", "experiment.total_env_steps=3072", members=DISCRETE)
    train_members([Member(c, tmp_path / f"all-{i}") for i, c in enumerate(runs)])

    def prune_first(member: int, row: object) -> str:
        return "pruned" if member == 0 else ""

    with caplog.at_level(logging.INFO, logger="vecbench.run"):
        results = train_members(
            [Member(c, tmp_path / f"some-{i}") for i, c in enumerate(runs)], prune_first
        )
    assert "1 member(s) left the batch; 2 go on" in caplog.messages
    assert len(metrics(tmp_path / "some-0")) == 1
    assert results[0].iterations == 2
    assert not (tmp_path / "some-0" / "summary.json").exists()
    for i in (1, 2):
        a, b = metrics(tmp_path / f"all-{i}"), metrics(tmp_path / f"some-{i}")
        pd.testing.assert_frame_equal(a[EPISODES + LOSSES], b[EPISODES + LOSSES])
        assert results[i].iterations == 6


def test_members_that_disagree_on_shapes_or_algorithm_are_refused(tmp_path: Path) -> None:
    mixed = configs(members=[["env.num_envs=32"], ["env.num_envs=64"]])
    with pytest.raises(ConfigError, match="shape and loop"):
        train_members([Member(c, tmp_path / f"m{i}") for i, c in enumerate(mixed)])
    sac = configs(members=[["algo.name=sac", "env.action_type=continuous"]] * 2)
    with pytest.raises(ConfigError, match="algo.name is sac"):
        train_members([Member(c, tmp_path / f"s{i}") for i, c in enumerate(sac)])
    fused = configs(members=[["experiment.fused_env=true"]] * 2)
    with pytest.raises(ConfigError, match="experiment.fused_env: a batch steps its envs unfused"):
        train_members([Member(c, tmp_path / f"f{i}") for i, c in enumerate(fused)])


def test_each_member_has_its_own_offline_wandb_run(tmp_path: Path) -> None:
    """Two members, W&B offline: each member's directory holds its own W&B run, whose
    history is its metrics.csv row by row and whose config is its own."""
    from tests.helpers.wandb_records import logged_config, logged_history, run_file

    runs = configs(
        "env.num_envs=32",
        "experiment.total_env_steps=2048",
        "tracking.wandb=offline",
        members=[["experiment.seed=1", "algo.lr=1e-3"], ["experiment.seed=2", "algo.lr=5e-4"]],
    )
    train_members([Member(c, tmp_path / f"m{i}") for i, c in enumerate(runs)])
    for i, lr in enumerate((1e-3, 5e-4)):
        path = run_file(tmp_path / f"m{i}")
        history = logged_history(path)
        rows = metrics(tmp_path / f"m{i}")
        assert [h["episode_return"] for h in history] == pytest.approx(
            list(rows["episode_return"]), nan_ok=True
        )
        assert logged_config(path)["algo"]["lr"] == lr


def test_a_batch_of_one_is_the_run_alone(tmp_path: Path) -> None:
    (config,) = configs("env.num_envs=32", "experiment.total_env_steps=3072", members=DISCRETE[1:2])
    train(config, run_dir=tmp_path / "alone")
    train_members([Member(config, tmp_path / "member")])
    assert_same_run(tmp_path / "alone", tmp_path / "member")
