"""The MJX quadruped on CUDA; run on the GPU machine (deselected where torch sees no CUDA)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from harness.config import load_config
from harness.runner import train

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def _quadrupeds(device: torch.device, n: int = 64):
    from harness.registry import make_env

    config = load_config(
        overrides=[
            "env.name=quadruped",
            f"env.num_envs={n}",
            "env.randomization.mass_scale={low: 0.8, high: 1.2}",
            "env.randomization.friction={low: 0.5, high: 1.5}",
        ]
    )
    # One CPU generator for both devices: the same seed draws, so the same envs.
    return make_env(config.env, device, torch.Generator().manual_seed(0))


def test_quadruped_on_cuda_equals_cpu_without_copies_or_host_syncs() -> None:
    import jax

    gpu, cpu = _quadrupeds(CUDA), _quadrupeds(torch.device("cpu"))
    free, total = torch.cuda.mem_get_info()
    assert free / total > 0.5, "JAX took the GPU's memory (XLA_PYTHON_CLIENT_PREALLOCATE)"
    gpu.reset(), cpu.reset()
    g = torch.Generator().manual_seed(0)
    acts = [(torch.rand(64, 12, generator=g) * 2 - 1) * 0.5 for _ in range(10)]
    acts_gpu = [a.to(CUDA) for a in acts]
    errors = []
    for a, a_gpu in zip(acts, acts_gpu, strict=True):
        on_cpu = cpu.step(a)
        torch.cuda.set_sync_debug_mode("error")
        try:
            on_gpu = gpu.step(a_gpu)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        errors.append((on_gpu.obs.cpu() - on_cpu.obs).abs() / (1.0 + on_cpu.obs.abs()))
    # float32 contact dynamics on two devices. After one step nearly every env agrees to
    # 1e-3 of each value; over 10 steps contacts part a few envs further (at 7423f1a one of
    # 64 differed after the first step, a contact solved differently within MJX's 4 solver
    # iterations), while the typical value still agrees to 1e-4. CPU MJX equals C MuJoCo
    # (tests/envs/test_quadruped.py).
    first = errors[0].max(1).values > 1e-3
    assert first.sum().item() <= 2, first.nonzero().flatten().tolist()
    assert errors[-1].median().item() < 1e-4
    # The exchange shares memory both ways.
    inputs = torch.cat([acts[0].to(CUDA), gpu.param_matrix()], dim=1)
    from_torch = jax.dlpack.from_dlpack(inputs)
    assert from_torch.unsafe_buffer_pointer() == inputs.data_ptr()
    _, packed = gpu.sim.step(gpu.state, from_torch)
    assert torch.from_dlpack(packed).data_ptr() == packed.unsafe_buffer_pointer()


def test_quadruped_bookkeeping_replayed_from_a_graph_equals_eager() -> None:
    """The torch work after each JAX step (statistics, parameter redraws, step counters) is
    a graph replay on CUDA by default: given the same step results it keeps the same books
    as the eager code, across episodes that end every 3 steps and a reset in between, and
    waits on nothing. (Two MJX envs on one GPU need not agree bit for bit: XLA's scatters
    add in any order, so the eager twin books the graphed env's own results.)"""
    from harness.registry import make_env

    config = load_config(
        overrides=[
            "env.name=quadruped",
            "env.num_envs=64",
            "env.max_episode_steps=3",
            "env.randomization.mass_scale={low: 0.8, high: 1.2}",
            "env.randomization.payload={low: 0.0, high: 1.0}",
        ]
    )
    env, twin = (make_env(config.env, CUDA, torch.Generator().manual_seed(0)) for _ in "ab")
    graphed = env._accounting
    assert graphed is not None  # the default on CUDA
    seen = []

    def book(results: torch.Tensor) -> None:
        seen.append(results.clone())
        graphed(results)

    env._accounting = book
    env.reset(), twin.reset()
    g = torch.Generator().manual_seed(1)
    for i in range(12):
        actions = ((torch.rand(64, 12, generator=g) * 2 - 1) * 0.5).to(CUDA)
        if i == 7:
            env.reset(), twin.reset()
        if i >= 3:  # replays, and copies of what the reset replaced
            torch.cuda.set_sync_debug_mode("error")
        try:
            env.step(actions)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        twin._account(seen[-1])
    assert graphed.graph is not None
    assert torch.equal(env.episode_step, twin.episode_step)
    for name, value in twin.params.items():
        assert torch.equal(env.params[name], value), name
    for name in ("sums", "running_return", "running_length", "running_terms"):
        assert torch.equal(getattr(env.stats, name), getattr(twin.stats, name)), name
    assert twin.stats.sums[0].item() >= 3 * 64  # each env ended 3 episodes (falls: more)


@pytest.mark.parametrize("name", ["ppo", "td3"])
def test_the_quadruped_trains_on_cuda_with_its_update_graphed(name: str, tmp_path) -> None:
    """MJX steps outside torch: collection runs eagerly and each update is a graph replay."""
    import pandas as pd

    # PPO: 4 iterations (2 eager, a capture, 2 replays); TD3: 2 random ones, then 6 learning
    algo = ["algo.learning_starts=2048", "algo.n_step=3"] if name == "td3" else []
    steps = 65536 if name == "ppo" else 8192
    config = load_config(
        overrides=[
            "env.name=quadruped",
            "env.num_envs=1024",
            f"algo.name={name}",
            *algo,
            f"experiment.total_env_steps={steps}",
            "experiment.log_interval=2",
            "tracking.wandb=disabled",
        ]
    )
    result = train(config, run_dir=tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["env_stepping"] == "mjx" and meta["cuda_graph"] is True
    assert meta["graph_scope"] == "update"
    rows = pd.read_csv(result.run_dir / "metrics.csv")
    loss = "policy_loss" if name == "ppo" else "critic_loss"
    assert math.isfinite(rows[loss].iloc[-1])
    if name == "td3":  # 6 learning iterations of 2 updates, 4 of them replays
        state = torch.load(result.run_dir / "checkpoint.pt", map_location="cpu")["algo"]
        assert state["counters"] == {"env_steps": 8, "updates": 12}
