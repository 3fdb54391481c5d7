"""SAC and TD3 on CUDA: the iteration without host syncs, and graphed training following
eager training (run on the GPU machine; deselected where torch sees no CUDA)."""

from __future__ import annotations

import pytest
import torch

from harness.config import load_config
from harness.runner import collect, train
from tests.helpers.graphs import graph_updates_only

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


@pytest.mark.parametrize("name", ["sac", "td3", "td3-c51"])
def test_off_policy_iteration_has_no_host_sync(name: str) -> None:
    from harness.registry import make_algo, make_env

    config = load_config(
        overrides=[
            *_algo(name),
            "env.action_type=continuous",
            "env.num_envs=4096",
            "algo.learning_starts=0",
        ]
    )
    env = make_env(config.env, CUDA, torch.Generator(CUDA).manual_seed(0))
    algo = make_algo(config.algo, env, CUDA, torch.Generator(CUDA).manual_seed(1))
    obs = env.reset()

    def iteration() -> dict[str, torch.Tensor]:
        nonlocal obs
        obs = collect(env, algo, obs)
        return algo.update()

    iteration()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            stats = iteration()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(torch.stack(list(stats.values()))).all()


def _algo(name: str) -> list[str]:
    """td3-c51: TD3 with C51 critics over returns in [0, 100]."""
    if name == "td3-c51":
        return ["algo.name=td3", "algo.distributional=true", "algo.v_min=0", "algo.v_max=100"]
    return [f"algo.name={name}"]


@pytest.mark.parametrize("scope", ["iteration", "update"])
@pytest.mark.parametrize("name", ["sac", "td3", "td3-c51"])
def test_graphed_off_policy_training_follows_eager_training(
    name: str, scope: str, tmp_path, monkeypatch
) -> None:
    """The same seeded off-policy run, eager and with experiment.cuda_graph: random steps
    run eagerly, then learning iterations replay one graph (or, as with an env stepping
    outside torch, collect eagerly and replay the update's graph). Same metrics and
    weights, and the host counters (env steps, updates, the buffer's position and fill)
    agree."""
    import json

    import pandas as pd

    if scope == "update":
        graph_updates_only(monkeypatch)

    results = {}
    for graph in (False, True):
        config = load_config(
            overrides=[
                "tracking.wandb=disabled",
                "experiment.device=cuda",
                f"experiment.cuda_graph={str(graph).lower()}",
                *_algo(name),
                "env.action_type=continuous",
                "env.num_envs=1024",
                "algo.learning_starts=3072",  # 3 random iterations first
                "algo.buffer_size=10240",  # wraps after 10 iterations
                "algo.n_step=3",
                "experiment.total_env_steps=16384",  # 16 iterations
                "experiment.log_interval=1",
            ]
        )
        result = train(config, run_dir=tmp_path / f"{name}-{graph}")
        meta = json.loads((result.run_dir / "meta.json").read_text())
        assert meta["graph_scope"] == (scope if graph else None)
        rows = pd.read_csv(result.run_dir / "metrics.csv")
        state = torch.load(result.run_dir / "checkpoint.pt", map_location="cpu")
        results[graph] = rows, state["algo"]
    (eager_rows, eager), (graph_rows, graphed) = results[False], results[True]
    assert len(graph_rows) == len(eager_rows) == 16
    assert graph_rows["critic_loss"].notna().sum() == 14  # learning from iteration 3
    for key in ("episode_return", "critic_loss", "actor_loss", "q_mean"):
        torch.testing.assert_close(
            torch.tensor(graph_rows[key].to_numpy()),
            torch.tensor(eager_rows[key].to_numpy()),
            atol=1e-3,
            rtol=1e-3,
            equal_nan=True,
            msg=key,
        )
    assert graphed["counters"] == eager["counters"] == {"env_steps": 16, "updates": 28}
    assert graphed["replay"]["position"] == eager["replay"]["position"] == 6144
    assert graphed["replay"]["size"] == eager["replay"]["size"] == 10240
    for name, value in eager["critic"].items():
        torch.testing.assert_close(graphed["critic"][name], value, atol=1e-4, rtol=1e-4)
