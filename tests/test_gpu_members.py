"""Batched trials on CUDA: graphed members follow their runs alone, and a batched
iteration has no host sync (run on the GPU machine; deselected where torch sees no CUDA)."""

from __future__ import annotations

import json

import pytest
import torch

from algos.ppo import PPOConfig
from envs.cartpole import CartpoleConfig
from envs.randomization import ParamRange
from harness.config import load_config
from harness.runner import collect, train

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def test_graphed_batch_members_follow_their_runs_alone(tmp_path) -> None:
    """Four members with their own seeds, lr and randomisation ranges trained as one
    CUDA-graphed batch, the first stopped after one iteration (the batch drops it and is
    captured again): the others follow their runs alone (eager, same seed) in metrics and
    weights over the first iterations (batched and plain matrix products round apart,
    so after tens of iterations an action flips and the runs part, as two GPUs' would)."""
    import pandas as pd

    from harness.members import Member, train_members

    def config(seed: int, lr: float, high: float, graph: bool):
        return load_config(
            overrides=[
                "tracking.wandb=disabled",
                "experiment.device=cuda",
                f"experiment.cuda_graph={str(graph).lower()}",
                # A batch steps its own stacked torch update; alone, PPO would take the
                # fused kernels (another order of float operations).
                "experiment.fused_algo=false",
                "env.num_envs=1024",
                f"env.randomization.pole_mass={{low: 0.05, high: {high}}}",
                "experiment.total_env_steps=65536",  # 4 iterations
                "experiment.log_interval=1",
                f"experiment.seed={seed}",
                f"algo.lr={lr}",
            ]
        )

    setups = [(1, 3e-4, 0.2), (2, 1e-3, 0.3), (3, 5e-4, 0.15), (4, 1e-3, 0.2)]

    def stop_first(member: int, row: object) -> str:
        return "pruned" if member == 0 else ""  # the batch drops it and captures again

    train_members(
        [Member(config(*s, graph=True), tmp_path / f"member-{i}") for i, s in enumerate(setups)],
        stop_first,
    )
    assert len(pd.read_csv(tmp_path / "member-0" / "metrics.csv")) == 1
    meta = json.loads((tmp_path / "member-1" / "meta.json").read_text())
    assert meta["env_stepping"] == "fused" and meta["cuda_graph"] is True  # one kernel a step
    for i, setup in list(enumerate(setups))[1:]:
        alone = train(config(*setup, graph=False), run_dir=tmp_path / f"alone-{i}")
        a = pd.read_csv(alone.run_dir / "metrics.csv")
        b = pd.read_csv(tmp_path / f"member-{i}" / "metrics.csv")
        assert len(a) == len(b) == 4
        for key in ("episode_return", "policy_loss", "value_loss", "approx_kl", "lr"):
            torch.testing.assert_close(
                torch.tensor(b[key].to_numpy()),
                torch.tensor(a[key].to_numpy()),
                atol=1e-3,
                rtol=1e-3,
                equal_nan=True,
            )
        wa = torch.load(alone.run_dir / "checkpoint.pt", map_location="cpu")["algo"]["model"]
        wb = torch.load(tmp_path / f"member-{i}" / "checkpoint.pt", map_location="cpu")
        for name, value in wa.items():
            torch.testing.assert_close(wb["algo"]["model"][name], value, atol=1e-4, rtol=1e-4)


def test_batched_ppo_iteration_has_no_host_sync() -> None:
    from algos.ppo import ActorCritic
    from algos.ppo_members import PPOMembers
    from envs.members import make_member_env

    configs = [
        CartpoleConfig(num_envs=2048, randomization={"pole_mass": ParamRange(0.05, h)})
        for h in (0.2, 0.3)
    ]
    gens = [torch.Generator(CUDA).manual_seed(s) for s in (0, 1)]
    env = make_member_env(configs, CUDA, gens)
    ppo_configs = [PPOConfig(lr=lr) for lr in (3e-4, 1e-3)]
    models = [ActorCritic(c, 4, env.action_space).to(CUDA) for c in ppo_configs]
    algo = PPOMembers(ppo_configs, models, env.action_space, 2048, CUDA, gens)
    obs = env.reset()

    def iteration() -> dict[str, torch.Tensor]:
        nonlocal obs
        obs = collect(env, algo, obs)
        stats = algo.update()
        env.stats.reset_interval()
        return stats

    iteration()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        stats = iteration()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert stats["lr"].shape == (2,)
    assert torch.isfinite(torch.stack(list(stats.values()))).all()


@pytest.mark.parametrize("algo", ["td3", "sac"])
def test_graphed_off_policy_members_follow_their_runs_alone(tmp_path, algo: str) -> None:
    """Three SAC or TD3 members with their own seeds and hyperparameters as one CUDA-graphed
    batch (random actions first, eager; then captured), the first stopped at its first row
    (the batch drops it and captures again): the others follow their eager runs alone in
    episodes, losses and weights."""
    import pandas as pd

    from harness.members import Member, train_members

    def config(seed: int, lr: float, tau: float, graph: bool):
        return load_config(
            overrides=[
                "tracking.wandb=disabled",
                "experiment.device=cuda",
                f"experiment.cuda_graph={str(graph).lower()}",
                f"algo.name={algo}",
                "env.action_type=continuous",
                "env.num_envs=1024",
                "algo.learning_starts=2048",
                "algo.buffer_size=65536",
                "algo.batch_size=512",
                "algo.hidden=[64, 64]",
                "experiment.total_env_steps=24576",  # 24 iterations, 22 of them learning
                "experiment.log_interval=6",
                f"experiment.seed={seed}",
                f"algo.critic_lr={lr}",
                f"algo.tau={tau}",
            ]
        )

    setups = [(1, 3e-4, 0.005), (2, 1e-3, 0.01), (3, 5e-4, 0.02)]

    def stop_first(member: int, row: object) -> str:
        return "pruned" if member == 0 else ""

    train_members(
        [Member(config(*s, graph=True), tmp_path / f"member-{i}") for i, s in enumerate(setups)],
        stop_first,
    )
    assert len(pd.read_csv(tmp_path / "member-0" / "metrics.csv")) == 1
    meta = json.loads((tmp_path / "member-1" / "meta.json").read_text())
    assert meta["env_stepping"] == "fused" and meta["cuda_graph"] is True  # one kernel a step
    for i, setup in list(enumerate(setups))[1:]:
        alone = train(config(*setup, graph=False), run_dir=tmp_path / f"alone-{i}")
        a = pd.read_csv(alone.run_dir / "metrics.csv")
        b = pd.read_csv(tmp_path / f"member-{i}" / "metrics.csv")
        assert len(a) == len(b) == 4
        for key, tol in (("episode_return", 5e-3), ("critic_loss", 1e-3), ("q_mean", 1e-3)):
            torch.testing.assert_close(
                torch.tensor(b[key].to_numpy()),
                torch.tensor(a[key].to_numpy()),
                atol=tol,
                rtol=tol,
                equal_nan=True,
            )
        wa = torch.load(alone.run_dir / "checkpoint.pt", map_location="cpu")["algo"]
        wb = torch.load(tmp_path / f"member-{i}" / "checkpoint.pt", map_location="cpu")["algo"]
        for module in ("actor", "critic", "critic_target"):
            for name, value in wa[module].items():
                torch.testing.assert_close(wb[module][name], value, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("algo", ["td3", "sac"])
def test_batched_off_policy_iteration_has_no_host_sync(algo: str) -> None:
    from algos.offpolicy_members import OffPolicyMembers
    from algos.sac import SACConfig
    from algos.td3 import TD3Config
    from envs.members import make_member_env

    configs = [
        CartpoleConfig(
            num_envs=2048,
            action_type="continuous",
            randomization={"pole_mass": ParamRange(0.05, h)},
        )
        for h in (0.2, 0.3)
    ]
    gens = [torch.Generator(CUDA).manual_seed(s) for s in (0, 1)]
    env = make_member_env(configs, CUDA, gens)
    kind = SACConfig if algo == "sac" else TD3Config
    algo_configs = [kind(critic_lr=lr, learning_starts=2048) for lr in (3e-4, 1e-3)]
    members = OffPolicyMembers(
        algo_configs, [0, 1], env.observation_size, env.action_space, 2048, CUDA, gens
    )
    obs = env.reset()

    def iteration() -> dict[str, torch.Tensor]:
        nonlocal obs
        obs = collect(env, members, obs)
        stats = members.update()
        env.stats.reset_interval()
        return stats

    iteration()
    iteration()  # learning from here on
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        stats = iteration()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert stats["critic_loss"].shape == (2,)
    assert torch.isfinite(torch.stack(list(stats.values()))).all()


def test_quadruped_members_follow_their_runs_alone_on_cuda(tmp_path) -> None:
    """MJX on the GPU. Two quadrupeds with their own seeds and payload ranges as blocks of
    one batched env step as each env alone through three episodes of 3 steps (resets and
    ends exactly; observations and rewards within 1e-2, against resets drawn apart that
    differ by tenths: XLA compiles 512 envs' physics apart from 256's and runs it
    nondeterministically on the GPU, and contact solves grow the differences, to 1.2e-3 in
    one joint velocity of 26,624 values within 3 steps and past 1e-2 within 24 on an H200,
    so longer horizons part). Two
    PPO members (eager: JAX is outside torch's graph) log their runs' first row."""
    import pandas as pd

    from envs.members import make_member_env
    from harness.members import Member, train_members
    from harness.registry import make_env

    def config(seed: int, lr: float, high: float):
        return load_config(
            overrides=[
                "tracking.wandb=disabled",
                "experiment.device=cuda",
                "env.name=quadruped",
                "env.num_envs=256",
                "env.max_episode_steps=3",
                f"env.randomization.payload={{low: 0.0, high: {high}}}",
                "algo.num_steps=16",
                "experiment.total_env_steps=8192",  # 2 iterations
                "experiment.log_interval=1",
                f"experiment.seed={seed}",
                f"algo.lr={lr}",
            ]
        )

    setups = [(1, 3e-4, 2.0), (2, 1e-3, 1.0)]
    envs = [config(*s).env for s in setups]
    batch = make_member_env(envs, CUDA, [torch.Generator(CUDA).manual_seed(s) for s in (1, 2)])
    alone = [
        make_env(c, CUDA, torch.Generator(CUDA).manual_seed(s))
        for c, s in zip(envs, (1, 2), strict=True)
    ]
    torch.testing.assert_close(batch.reset(), torch.cat([env.reset() for env in alone]))
    g = torch.Generator(CUDA).manual_seed(0)
    for _ in range(9):
        actions = (torch.rand(512, 12, device=CUDA, generator=g) * 2 - 1) * 0.5
        together = batch.step(actions)
        apart = [env.step(a) for env, a in zip(alone, actions.split(256), strict=True)]
        for field in ("terminated", "truncated"):
            assert torch.equal(
                getattr(together, field), torch.cat([getattr(s, field) for s in apart])
            )
        for field in ("obs", "reward"):
            torch.testing.assert_close(
                getattr(together, field),
                torch.cat([getattr(s, field) for s in apart]),
                atol=1e-2,
                rtol=1e-2,
            )

    train_members([Member(config(*s), tmp_path / f"member-{i}") for i, s in enumerate(setups)])
    for i, setup in enumerate(setups):
        alone_run = train(config(*setup), run_dir=tmp_path / f"alone-{i}")
        a = pd.read_csv(alone_run.run_dir / "metrics.csv")
        b = pd.read_csv(tmp_path / f"member-{i}" / "metrics.csv")
        assert len(a) == len(b) == 2
        for key in ("episode_return", "velocity_error", "policy_loss", "value_loss"):
            assert b[key].iloc[0] == pytest.approx(a[key].iloc[0], rel=1e-2, abs=1e-3), key


@pytest.mark.parametrize("algo", ["ppo", "td3"])
def test_a_next_batch_replays_the_kept_graph_and_follows_its_runs_alone(tmp_path, algo) -> None:
    """Warm workers: a second batch of the same shapes and size takes the first batch's
    objects and replays its captured graph (no new capture; TD3 acts at random eagerly
    first, then the graph goes on from that state); its members follow their eager runs
    alone, and TD3's random-action episodes (where a wrong reset draw would show) equal
    theirs."""
    import pandas as pd

    from harness import members as batches
    from harness.members import Member, train_members

    def config(seed: int, lr: float, graph: bool):
        extra = (
            ["algo.name=td3", "env.action_type=continuous", "algo.learning_starts=16384",
             "algo.buffer_size=65536", "algo.batch_size=512", "algo.hidden=[64, 64]",
             f"algo.critic_lr={lr}", "experiment.total_env_steps=24576"]
            if algo == "td3"
            else [f"algo.lr={lr}", "experiment.total_env_steps=65536"]
        )  # fmt: skip
        return load_config(
            overrides=[
                "tracking.wandb=disabled",
                "experiment.device=cuda",
                f"experiment.cuda_graph={str(graph).lower()}",
                "experiment.fused_algo=false",  # as the batch's own update (test above)
                "env.num_envs=1024",
                "experiment.log_interval=1" if algo == "ppo" else "experiment.log_interval=4",
                f"experiment.seed={seed}",
                *extra,
            ]
        )

    first = [(1, 3e-4), (2, 1e-3)]
    second = [(5, 5e-4), (6, 2e-3)]
    train_members(
        [Member(config(*s, graph=True), tmp_path / f"a-{i}") for i, s in enumerate(first)]
    )
    (kept,) = batches._WARM.values()
    graph = kept.iterate.graph
    assert graph is not None
    train_members(
        [Member(config(*s, graph=True), tmp_path / f"b-{i}") for i, s in enumerate(second)]
    )
    (again,) = batches._WARM.values()
    assert again is kept and again.iterate.graph is graph  # no new capture
    keys = ("episode_return", "policy_loss", "value_loss") if algo == "ppo" else (
        "episode_return", "critic_loss", "q_mean")  # fmt: skip
    for i, setup in enumerate(second):
        alone = train(config(*setup, graph=False), run_dir=tmp_path / f"alone-{i}")
        a = pd.read_csv(alone.run_dir / "metrics.csv")
        b = pd.read_csv(tmp_path / f"b-{i}" / "metrics.csv")
        assert len(a) == len(b) == (4 if algo == "ppo" else 6)
        if algo == "td3":  # 16 iterations of random actions (rows 0-3): the same episodes
            random = a["env_steps"] <= 16384
            assert random.sum() == 4 and a["episode_return"][random].notna().sum() >= 2
            torch.testing.assert_close(
                torch.tensor(b["episode_return"][random].to_numpy()),
                torch.tensor(a["episode_return"][random].to_numpy()),
                atol=1e-5,
                rtol=1e-5,
                equal_nan=True,
            )
        for key in keys:
            torch.testing.assert_close(
                torch.tensor(b[key].to_numpy()),
                torch.tensor(a[key].to_numpy()),
                atol=5e-3,
                rtol=5e-3,
                equal_nan=True,
            )
    batches.release_warm()
