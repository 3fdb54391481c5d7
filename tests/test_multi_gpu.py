"""Data-parallel training over NCCL with the iteration captured in a CUDA graph on every rank;
run on a machine with two GPUs (deselected where torch sees fewer)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from harness.config import load_config
from harness.device import make_generators
from harness.graphs import Iterations
from harness.registry import make_algo, make_env, speed_up_env
from harness.runner import collect
from reports.multi_gpu_benchmark import train_command
from tests.harness.test_distributed import free_port

pytestmark = [pytest.mark.gpu, pytest.mark.multi_gpu]
ITERATIONS = 8


ALGOS = {
    "ppo": ["algo.lr_schedule=adaptive"],
    "td3": ["algo.name=td3", "env.action_type=continuous", "algo.learning_starts=0"],
    "sac": ["algo.name=sac", "env.action_type=continuous", "algo.learning_starts=0"],
}


def weights(algo: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every learned tensor of PPO's model or of SAC's and TD3's networks and temperature."""
    if hasattr(algo, "model"):
        return {k: v.clone() for k, v in algo.model.state_dict().items()}
    out = {}
    for name, obj in algo._modules().items():
        if isinstance(obj, torch.nn.Module):
            out.update({f"{name}.{k}": v.clone() for k, v in obj.state_dict().items()})
        elif isinstance(obj, torch.Tensor):
            out[name] = obj.clone()
    return out


def _rank_main(rank: int, port: int, out: str, name: str, graph: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device("cuda", rank)
    torch.cuda.set_device(device)
    dist.init_process_group("nccl", rank=rank, world_size=2, device_id=device)
    try:
        config = load_config(
            overrides=[
                "env.num_envs=1024",
                "env.randomization.pole_mass={low: 0.05, high: 0.2}",
                *ALGOS[name],
            ]
        )
        env_gen, algo_gen = make_generators(0, device, rank)
        env = make_env(config.env, device, env_gen)
        algo = make_algo(config.algo, env, device, algo_gen)
        speed_up_env(env, None, False)

        def region(obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            obs = collect(env, algo, obs)
            return obs, algo.update()

        init = weights(algo)
        iterate = Iterations(region, env, [algo_gen], device, graph, algo)
        obs = env.reset()
        stats = []
        for i in range(ITERATIONS):
            if i == ITERATIONS - 2:  # replays from here on (graph); eager: set up long ago
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("error")
            obs, outputs = iterate(obs)
            stats.append({k: v.clone() for k, v in outputs.items()})
        torch.cuda.set_sync_debug_mode("default")
        replays = iterate.graph is not None
        iterate.release()
        torch.save(
            {
                "init": init,
                "weights": weights(algo),
                "stats": {k: torch.stack([s[k] for s in stats if k in s]) for k in stats[-1]},
                "obs_norm_count": (algo.model if name == "ppo" else algo).obs_norm.count,
                "replays": replays,
            },
            f"{out}/{name}-{'graph' if graph else 'eager'}-rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", list(ALGOS))
def test_graphed_data_parallel_iterations_equal_eager_ones_on_every_rank(
    tmp_path: Path, name: str
) -> None:
    for graph in (False, True):
        mp.spawn(_rank_main, args=(free_port(), str(tmp_path), name, graph), nprocs=2, join=True)
    load = {
        (how, r): torch.load(tmp_path / f"{name}-{how}-rank{r}.pt", map_location="cpu")
        for how in ("eager", "graph")
        for r in (0, 1)
    }
    assert load["graph", 0]["replays"] and not load["eager", 0]["replays"]
    for how in ("eager", "graph"):  # every rank holds the very same weights
        for key, value in load[how, 0]["weights"].items():
            assert torch.equal(load[how, 1]["weights"][key], value), (how, key)
    # observation statistics count both ranks' envs: 2 x 1024 per step
    steps = 16 if name == "ppo" else 1
    assert load["graph", 0]["obs_norm_count"].item() == pytest.approx(
        1e-4 + 2 * 1024 * steps * ITERATIONS
    )
    for r in (0, 1):  # the graph replays what eager iterations compute
        eager, graphed = load["eager", r]["stats"], load["graph", r]["stats"]
        for key, value in eager.items():
            torch.testing.assert_close(
                graphed[key], value, atol=1e-3, rtol=1e-3, msg=f"{key}: {graphed[key]} {value}"
            )
        for key, value in load["eager", r]["weights"].items():
            torch.testing.assert_close(
                load["graph", r]["weights"][key], value, atol=1e-4, rtol=1e-4, msg=key
            )
    init, trained = load["graph", 0]["init"], load["graph", 0]["weights"]
    assert any(not torch.equal(trained[k], init[k]) for k in init)  # it learned


def test_two_gpu_graphed_run_learns_cartpole(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = [
        "env.num_envs=4096",
        "experiment.cuda_graph=true",
        "experiment.total_env_steps=40000000",
        "experiment.stop_at_return=475",
    ]
    proc = subprocess.run(
        train_command(2, run_dir, overrides, "cuda"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["cuda_graph"] is True
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_return"] >= 475
    rows = pd.read_csv(run_dir / "metrics.csv")
    assert (rows["env_steps"] == rows["iteration"] * 2 * 4096 * 16).all()
