"""Test-only switches of what a CUDA graph captures."""

from __future__ import annotations

import pytest


def graph_updates_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Graphed runs take the path of an env that steps outside torch (MJX): collection
    eager, the update alone replayed from a CUDA graph (harness.graphs.Updates)."""
    from harness import runner

    scope = runner._graph_scope
    monkeypatch.setattr(runner, "_graph_scope", lambda *args: "update" if scope(*args) else None)


def ppo_iteration_without_host_sync(speed_up: str, warmup: int) -> dict:
    """One PPO iteration on the fused cartpole env (4096 envs, CUDA) under
    ``set_sync_debug_mode("error")``, after ``warmup`` iterations (where compilers run), with
    PPO sped up by its method ``speed_up`` ("fuse" or "compile"); returns its statistics."""
    import torch

    from algos.ppo import PPO, PPOConfig
    from envs.cartpole import Cartpole, CartpoleConfig
    from harness.runner import collect

    cuda = torch.device("cuda")
    env = Cartpole(CartpoleConfig(num_envs=4096), cuda, torch.Generator(cuda).manual_seed(0))
    env.fuse()
    ppo = PPO(PPOConfig(), 4, env.action_space, 4096, cuda, torch.Generator(cuda).manual_seed(1))
    getattr(ppo, speed_up)()
    obs = env.reset()
    for _ in range(warmup):
        obs = collect(env, ppo, obs)
        ppo.update()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        obs = collect(env, ppo, obs)
        return ppo.update()
    finally:
        torch.cuda.set_sync_debug_mode("default")
