"""experiment.compile on CUDA: PPO's compiled iteration against the eager one."""

from __future__ import annotations

import pytest
import torch

from harness.config import load_config
from harness.runner import train
from reports.iteration_kernels import measure
from tests.helpers.graphs import ppo_iteration_without_host_sync

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def _run(tmp_path, action_type: str, graph: bool, compile: bool):
    import pandas as pd

    config = load_config(
        overrides=[
            "tracking.wandb=disabled",
            "experiment.device=cuda",
            f"experiment.cuda_graph={str(graph).lower()}",
            f"experiment.compile={str(compile).lower()}",
            "experiment.fused_algo=false",  # the compiled update, not the Triton one
            f"env.action_type={action_type}",
            "env.num_envs=1024",
            "env.randomization.pole_mass={low: 0.05, high: 0.2}",
            "experiment.total_env_steps=81920",  # 5 iterations
            "experiment.log_interval=1",
        ]
    )
    result = train(config, run_dir=tmp_path / f"{action_type}-{graph}-{compile}")
    rows = pd.read_csv(result.run_dir / "metrics.csv")
    state = torch.load(result.run_dir / "checkpoint.pt", map_location="cpu")["algo"]
    return rows, state


KEYS = ("episode_return", "policy_loss", "value_loss", "approx_kl", "lr")


def _close(a, b, tol: float, rows: int = 5) -> None:
    a_rows, b_rows = a[0], b[0]
    assert len(a_rows) == len(b_rows) == 5
    for key in KEYS:
        torch.testing.assert_close(
            torch.tensor(a_rows[key].to_numpy()[:rows]),
            torch.tensor(b_rows[key].to_numpy()[:rows]),
            atol=tol,
            rtol=tol,
            equal_nan=True,
            msg=lambda m, key=key: f"{key}: {m}",
        )


@pytest.mark.parametrize("action_type", ["discrete", "continuous"])
def test_compiled_ppo_follows_eager_training_and_replays_in_a_graph(
    tmp_path, action_type: str
) -> None:
    """The same seeded run: compiled inside a CUDA graph equals compiled without one (the
    same kernels), and both follow eager training over the first iterations (Inductor's
    fused kernels round differently, so later on an action may flip)."""
    eager = _run(tmp_path, action_type, graph=False, compile=False)
    compiled = _run(tmp_path, action_type, graph=False, compile=True)
    graphed = _run(tmp_path, action_type, graph=True, compile=True)
    _close(graphed, compiled, 1e-5)
    for name, value in compiled[1]["model"].items():
        torch.testing.assert_close(graphed[1]["model"][name], value, atol=1e-5, rtol=1e-5)
    assert torch.equal(graphed[1]["optimizer"]["steps"], eager[1]["optimizer"]["steps"])
    _close(compiled, eager, 1e-3, rows=2)


def test_compiled_iteration_has_fewer_kernels_and_no_host_sync() -> None:
    """Compiling fuses an iteration into far fewer kernels (counted by the torch profiler
    over one eager iteration), and its iterations make no host sync."""
    unfused = ["experiment.fused_algo=false"]
    eager = measure(2048, compile=False, overrides=unfused, iterations=5)
    compiled = measure(2048, compile=True, overrides=unfused, iterations=5)
    print("kernels per iteration:", eager["kernels"], "eager,", compiled["kernels"], "compiled")
    assert compiled["kernels"] < 0.4 * eager["kernels"], (eager, compiled)

    stats = ppo_iteration_without_host_sync("compile", warmup=2)
    assert torch.isfinite(torch.stack(list(stats.values()))).all()


def test_compiled_graphed_ppo_learns_cartpole(tmp_path) -> None:
    config = load_config(
        overrides=[
            "tracking.wandb=disabled",
            "experiment.device=cuda",
            "experiment.compile=true",
            "env.num_envs=4096",
            "experiment.total_env_steps=40000000",
            "experiment.stop_at_return=475",
        ]
    )
    result = train(config, run_dir=tmp_path / "run")
    assert result.final_return >= 475
