"""Batched trials on CUDA: graphed members follow their runs alone, and a batched
iteration has no host sync (run on the GPU machine; deselected where torch sees no CUDA)."""

from __future__ import annotations

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
