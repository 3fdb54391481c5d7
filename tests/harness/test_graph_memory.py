"""A replayed training iteration writes only memory it owns (run on the GPU machine)."""

from __future__ import annotations

import pytest
import torch

from harness.config import load_config
from harness.device import make_generators
from harness.graphs import Iterations
from harness.registry import make_algo, make_env, speed_up_env
from harness.runner import collect

pytestmark = pytest.mark.gpu
SENTINEL = -7.0


@pytest.mark.parametrize(
    ("overrides", "fused"),
    [
        (["algo.name=td3", "env.action_type=continuous", "algo.learning_starts=0"], True),
        (["algo.name=sac", "env.action_type=continuous", "algo.learning_starts=0"], False),
        (["algo.num_steps=3"], True),  # PPO with an odd rollout
        ([], True),
    ],
)
def test_replays_leave_memory_allocated_after_the_capture_alone(
    overrides: list[str], fused: bool
) -> None:
    """Blocks handed out after the capture (the sizes the iteration's own tensors have)
    keep a sentinel through replays: a tensor the graph writes was not freed and reused."""
    cuda = torch.device("cuda")
    config = load_config(overrides=["env.num_envs=1024", *overrides])
    env_gen, algo_gen = make_generators(0, cuda, 0)
    env = make_env(config.env, cuda, env_gen)
    algo = make_algo(config.algo, env, cuda, algo_gen)
    assert speed_up_env(env, fused, False) == ("fused" if fused else "eager")

    def region(obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        obs = collect(env, algo, obs)
        return obs, algo.update()

    iterate = Iterations(region, env, [algo_gen], cuda, True, algo)
    obs = env.reset()
    while iterate.graph is None:
        obs, _ = iterate(obs)
    torch.cuda.synchronize()
    sizes = [1] * 2000 + [1024] * 200 + [4096] * 50 + [65536] * 10
    canaries = [torch.full((n,), SENTINEL, device=cuda) for n in sizes]
    for _ in range(3):
        obs, stats = iterate(obs)
    torch.cuda.synchronize()
    changed = [i for i, c in enumerate(canaries) if (c != SENTINEL).any()]
    assert changed == []
    assert torch.isfinite(torch.stack(list(stats.values()))).all()
