"""experiment.fused_algo on CUDA: PPO's Triton kernels against its eager steps."""

from __future__ import annotations

import json

import pytest
import torch

from algos.ppo import PPO, PPOConfig
from envs.cartpole import Cartpole, CartpoleConfig
from harness.config import load_config
from harness.runner import collect, train
from reports.iteration_kernels import measure
from tests.helpers.graphs import ppo_iteration_without_host_sync

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def _run(tmp_path, fused: bool, graph: bool, extra: list[str]):
    import pandas as pd

    config = load_config(
        overrides=[
            "tracking.wandb=disabled",
            "experiment.device=cuda",
            f"experiment.cuda_graph={str(graph).lower()}",
            f"experiment.fused_algo={str(fused).lower()}",
            "env.num_envs=2048",
            "experiment.total_env_steps=163840",  # 5 iterations
            "experiment.log_interval=1",
            *extra,
        ]
    )
    result = train(config, run_dir=tmp_path / f"{fused}-{graph}-{len(extra)}")
    meta = json.loads((result.run_dir / "meta.json").read_text())
    assert meta["algo_stepping"] == ("fused" if fused else "eager")
    rows = pd.read_csv(result.run_dir / "metrics.csv")
    state = torch.load(result.run_dir / "checkpoint.pt", map_location="cpu")["algo"]
    return rows, state


@pytest.mark.parametrize(
    "extra",
    [
        ["env.randomization.pole_mass={low: 0.05, high: 0.2}"],
        ["env.action_type=continuous", "algo.entropy_coef=0.01", "algo.activation=elu"],
        ["algo.clip_value_loss=false", "algo.lr_schedule=linear", "algo.critic_hidden=[128,32]"],
    ],
    ids=["discrete", "continuous-elu-entropy", "linear-unclipped-128"],
)
def test_fused_ppo_follows_eager_training_and_replays_in_a_graph(tmp_path, extra) -> None:
    """The same seeded run: the first iteration's losses and the weights after it agree with
    the eager update to float32 rounding; graphed and ungraphed fused runs agree on every
    iteration (the same kernels, summing in a fixed order)."""
    eager = _run(tmp_path, fused=False, graph=False, extra=extra)
    fused = _run(tmp_path, fused=True, graph=False, extra=extra)
    graphed = _run(tmp_path, fused=True, graph=True, extra=extra)
    keys = ("episode_return", "policy_loss", "value_loss", "entropy", "approx_kl", "lr")
    for key in keys:
        a, b = eager[0][key].to_numpy(), fused[0][key].to_numpy()
        torch.testing.assert_close(torch.tensor(b[:2]), torch.tensor(a[:2]), atol=1e-4, rtol=1e-3)
        g = graphed[0][key].to_numpy()
        torch.testing.assert_close(
            torch.tensor(g), torch.tensor(b), atol=1e-6, rtol=1e-5, equal_nan=True
        )
    for name, value in fused[1]["model"].items():
        torch.testing.assert_close(graphed[1]["model"][name], value, atol=1e-6, rtol=1e-5)
    assert torch.equal(fused[1]["optimizer"]["steps"], eager[1]["optimizer"]["steps"])


def test_one_update_equals_the_eager_update() -> None:
    """From one rollout: the fused update's weights, Adam moments and statistics against the
    eager update's, at 8192 envs (more row blocks than programs, so programs loop)."""
    results = []
    for fused in (False, True):
        env = Cartpole(CartpoleConfig(num_envs=8192), CUDA, torch.Generator(CUDA).manual_seed(0))
        gen = torch.Generator(CUDA).manual_seed(1)
        torch.manual_seed(0)  # the networks' initial weights
        ppo = PPO(PPOConfig(), 4, env.action_space, 8192, CUDA, gen)
        if fused:
            ppo.fuse()
        collect(env, ppo, env.reset())
        stats = ppo.update()
        results.append((stats, ppo.model.state_dict(), ppo.optimizer.state_dict()))
    (s0, m0, o0), (s1, m1, o1) = results
    for name, value in m0.items():  # tf32x3 products and another order of sums: ~1e-6 apart
        torch.testing.assert_close(m1[name], value, atol=1e-5, rtol=1e-4)
    # the policy loss is a mean of terms that nearly cancel: its rounding is absolute
    for key, value in s0.items():
        torch.testing.assert_close(s1[key], value, atol=1e-4, rtol=1e-4)
    moments = zip(o0["exp_avg"] + o0["exp_avg_sq"], o1["exp_avg"] + o1["exp_avg_sq"], strict=True)
    for a, b in moments:  # near-zero gradients carry the products' rounding: 1 % of the scale
        torch.testing.assert_close(b, a, atol=1e-2 * a.abs().max().item(), rtol=1e-2)


def test_fused_iteration_has_few_kernels_and_no_host_sync() -> None:
    eager = measure(2048, False, ["experiment.fused_algo=false"], iterations=5)
    fused = measure(2048, False, [], iterations=5)
    print("kernels per iteration:", eager["kernels"], "eager,", fused["kernels"], "fused")
    assert fused["algo"] == "fused" and eager["algo"] == "eager"
    assert fused["kernels"] < 0.3 * eager["kernels"], (eager, fused)

    stats = ppo_iteration_without_host_sync("fuse", warmup=1)
    assert torch.isfinite(torch.stack(list(stats.values()))).all()
