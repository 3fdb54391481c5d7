"""pytest-benchmark micro-benchmarks of the hot paths (run once as tests in CI).

Figures: ``make bench`` (or ``pytest tests/benchmarks --benchmark-enable``), on the CPU
here and on the GPU machine with ``--device cuda`` fixtures below.
"""

from __future__ import annotations

import pytest
import torch

from algos.ppo import PPO, PPOConfig
from envs.cartpole import Cartpole, CartpoleConfig
from harness.runner import collect

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@pytest.mark.parametrize("device_name", DEVICES)
@pytest.mark.parametrize("num_envs", [4096, 65536])
def test_cartpole_step(benchmark, device_name: str, num_envs: int) -> None:
    device = torch.device(device_name)
    env = Cartpole(
        CartpoleConfig(num_envs=num_envs), device, torch.Generator(device).manual_seed(0)
    )
    env.reset()
    actions = torch.randint(0, 2, (num_envs,), device=device)

    def step_100() -> None:
        for _ in range(100):
            env.step(actions)
        sync(device)

    benchmark(step_100)
    stats = env.stats.reset_interval()
    assert stats["episodes"].item() > 0  # the envs really ran and reset


@pytest.mark.parametrize("device_name", DEVICES)
def test_ppo_update(benchmark, device_name: str) -> None:
    device = torch.device(device_name)
    num_envs = 4096
    env = Cartpole(
        CartpoleConfig(num_envs=num_envs), device, torch.Generator(device).manual_seed(0)
    )
    ppo = PPO(
        PPOConfig(), 4, env.action_space, num_envs, device, torch.Generator(device).manual_seed(1)
    )
    obs = env.reset()

    def rollout_and_update() -> dict[str, torch.Tensor]:
        nonlocal obs
        obs = collect(env, ppo, obs)
        stats = ppo.update()
        sync(device)
        return stats

    stats = benchmark(rollout_and_update)
    assert torch.isfinite(stats["value_loss"])
