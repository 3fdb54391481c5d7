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
    sac_td3 = configs("env.action_type=continuous", members=[["algo.name=sac"], ["algo.name=td3"]])
    with pytest.raises(ConfigError, match="shape and loop"):
        train_members([Member(c, tmp_path / f"s{i}") for i, c in enumerate(sac_td3)])
    evaluating = configs(members=[["experiment.eval_interval=2"]] * 2)
    with pytest.raises(ConfigError, match="experiment.eval_interval: batched trials do not"):
        train_members([Member(c, tmp_path / f"e{i}") for i, c in enumerate(evaluating)])
    c51 = configs(
        "env.action_type=continuous",
        "algo.name=td3",
        members=[["algo.distributional=true"]] * 2,
    )
    with pytest.raises(ConfigError, match="algo.distributional: batched trials train scalar"):
        train_members([Member(c, tmp_path / f"c{i}") for i, c in enumerate(c51)])
    fused = configs(members=[["experiment.fused_env=true"]] * 2)  # as a run: CUDA only
    with pytest.raises(ConfigError, match="experiment.fused_env: .* needs a CUDA device"):
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


OFF_POLICY = [
    "env.action_type=continuous",
    "env.num_envs=16",
    "algo.buffer_size=4096",
    "algo.batch_size=64",
    "algo.learning_starts=160",
    "algo.hidden=[32, 32]",
    "experiment.log_interval=10",
    "experiment.checkpoint_interval=10",
]
OFF_POLICY_MEMBERS = {
    "td3": [
        ["experiment.seed=3", "algo.actor_lr=1e-3", "algo.exploration_noise_min=0.05"],
        ["experiment.seed=5", "algo.gamma=0.95", "algo.tau=0.01", "algo.policy_noise=0.1"],
        ["experiment.seed=7", "algo.critic_lr=1e-3", "algo.max_grad_norm=0.5"],
    ],
    "sac": [
        ["experiment.seed=3", "algo.actor_lr=1e-3", "algo.init_alpha=0.2"],
        ["experiment.seed=5", "algo.gamma=0.95", "algo.tau=0.01", "algo.target_entropy=-0.5"],
        ["experiment.seed=7", "algo.alpha_lr=1e-3", "algo.max_grad_norm=0.5"],
    ],
}


def flat_tensors(state: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a nested checkpoint by its path (optimiser moments included)."""
    if torch.is_tensor(state):
        return {prefix: state}
    if isinstance(state, dict):
        items = list(state.items())
    elif isinstance(state, (list, tuple)):
        items = list(enumerate(state))
    else:
        return {}
    out: dict[str, torch.Tensor] = {}
    for key, value in items:
        out.update(flat_tensors(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


@pytest.mark.parametrize(("algo", "n_step"), [("td3", 1), ("sac", 3)], ids=["td3", "sac-3-step"])
def test_off_policy_members_train_as_their_runs_alone(
    tmp_path: Path, algo: str, n_step: int
) -> None:
    """Three SAC or TD3 cartpole runs with their own seeds and hyperparameters, batched:
    each member draws the random actions, replay indices and noise of its run alone, so
    its episodes match (30 iterations, 60 gradient steps); losses, weights, optimiser
    moments and its replay buffer agree within float rounding, and its checkpoint is a
    run's: `vecbench eval` plays it."""
    from harness.evaluate import evaluate

    runs = configs(
        *OFF_POLICY,
        f"algo.name={algo}",
        f"algo.n_step={n_step}",
        "experiment.total_env_steps=640",
        members=OFF_POLICY_MEMBERS[algo],
    )
    for i, config in enumerate(runs):
        train(config, run_dir=tmp_path / f"alone-{i}")
    results = train_members([Member(c, tmp_path / f"member-{i}") for i, c in enumerate(runs)])
    assert [r.env_steps for r in results] == [640] * 3
    losses = ["critic_loss", "actor_loss", "q_mean"] + (
        ["alpha", "entropy"] if algo == "sac" else []
    )
    for i in range(3):
        a, b = metrics(tmp_path / f"alone-{i}"), metrics(tmp_path / f"member-{i}")
        assert len(a) == len(b) == 4
        for column in ["episodes", "episode_return", "episode_length", *losses]:
            assert b[column].to_numpy() == pytest.approx(
                a[column].to_numpy(), rel=1e-3, abs=1e-5, nan_ok=True
            ), column
        alone = torch.load(tmp_path / f"alone-{i}" / "checkpoint.pt", weights_only=False)
        member = torch.load(tmp_path / f"member-{i}" / "checkpoint.pt", weights_only=False)
        ta, tb = flat_tensors(alone["algo"]), flat_tensors(member["algo"])
        assert set(ta) == set(tb)
        for name, value in ta.items():
            torch.testing.assert_close(
                tb[name].float(), value.float(), rtol=2e-3, atol=2e-3, msg=name
            )
        assert member["algo"]["counters"] == alone["algo"]["counters"]
        assert member["algo"]["replay"]["size"] == alone["algo"]["replay"]["size"] == 640
        played = evaluate(tmp_path / f"member-{i}", episodes=2)
        assert played.episodes == 2


def test_a_stopped_off_policy_member_leaves_the_others_unchanged(tmp_path: Path) -> None:
    """TD3: member 0 is pruned at its first row (which is before learning starts), the
    batch drops it (replay buffers and optimiser states cut), and the other two log
    exactly what they log when nobody stops."""
    runs = configs(
        *OFF_POLICY,
        "algo.name=td3",
        "experiment.total_env_steps=480",
        members=OFF_POLICY_MEMBERS["td3"],
    )
    train_members([Member(c, tmp_path / f"all-{i}") for i, c in enumerate(runs)])

    def prune_first(member: int, row: object) -> str:
        return "pruned" if member == 0 else ""

    results = train_members(
        [Member(c, tmp_path / f"some-{i}") for i, c in enumerate(runs)], prune_first
    )
    assert results[0].iterations == 10
    columns = ["episodes", "episode_return", "critic_loss", "actor_loss", "q_mean"]
    for i in (1, 2):
        a, b = metrics(tmp_path / f"all-{i}"), metrics(tmp_path / f"some-{i}")
        pd.testing.assert_frame_equal(a[columns], b[columns])
        assert results[i].iterations == 30


@pytest.mark.parametrize("algo", ["ppo", "td3"])
def test_a_next_batch_of_the_same_shapes_reuses_the_batch_and_follows_its_runs(
    tmp_path: Path, algo: str, caplog
) -> None:
    """A worker keeps its last batch (on CUDA with the captured graph): the next batch of the
    same shapes and size is copied into the same objects, and each of its members still
    trains exactly as its run alone, nothing of the previous batch left in it."""
    if algo == "ppo":
        base = ["env.num_envs=32", "experiment.total_env_steps=1024", "experiment.log_interval=1"]
        first, second = DISCRETE[:2], [["experiment.seed=11", "algo.lr=5e-4"], DISCRETE[2]]
    else:
        base = [*OFF_POLICY, "algo.name=td3", "experiment.total_env_steps=480"]
        first, second = OFF_POLICY_MEMBERS["td3"][:2], OFF_POLICY_MEMBERS["td3"][1:]
    runs = configs(*base, members=second)
    for i, config in enumerate(runs):
        train(config, run_dir=tmp_path / f"alone-{i}")
    train_members(
        [Member(c, tmp_path / f"a-{i}") for i, c in enumerate(configs(*base, members=first))]
    )
    with caplog.at_level(logging.INFO, logger="vecbench.run"):
        train_members([Member(c, tmp_path / f"b-{i}") for i, c in enumerate(runs)])
    assert "the last batch's objects and captured iteration serve this batch too" in caplog.messages
    columns = ["episodes", "episode_return", "episode_length"]
    columns += LOSSES if algo == "ppo" else ["critic_loss", "actor_loss", "q_mean"]
    for i in range(2):
        a, b = metrics(tmp_path / f"alone-{i}"), metrics(tmp_path / f"b-{i}")
        assert len(a) == len(b) > 1
        for column in columns:
            assert b[column].to_numpy() == pytest.approx(
                a[column].to_numpy(), rel=1e-3, abs=1e-5, nan_ok=True
            ), column
