"""Which envs and algorithms exist, by the name a config gives them.

Adding a task or an algorithm is one line in each table here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from algos.base import Algorithm
from algos.ppo import PPO, PPOConfig
from algos.sac import SAC, SACConfig
from algos.td3 import TD3, TD3Config
from envs.arm import Arm, ArmConfig
from envs.base import VecEnv
from envs.cartpole import Cartpole, CartpoleConfig
from envs.quadruped import Quadruped, QuadrupedConfig
from harness.errors import ConfigError, FieldError, one_line

AlgoFactory = Callable[..., Algorithm]

ENV_CONFIGS: dict[str, type] = {
    "cartpole": CartpoleConfig,
    "arm": ArmConfig,
    "quadruped": QuadrupedConfig,
}
ENVS: dict[str, type[VecEnv]] = {"cartpole": Cartpole, "arm": Arm, "quadruped": Quadruped}

ALGO_CONFIGS: dict[str, type] = {"ppo": PPOConfig, "sac": SACConfig, "td3": TD3Config}
ALGOS: dict[str, AlgoFactory] = {"ppo": PPO, "sac": SAC, "td3": TD3}


def make_env(config: Any, device: torch.device, generator: torch.Generator) -> VecEnv:
    try:
        return ENVS[config.name](config, device, generator)
    except FieldError as err:
        raise ConfigError(f"env.{err.key} {err.message}") from None
    except (MemoryError, torch.OutOfMemoryError) as err:
        raise _too_many(config.num_envs, device, err) from None
    except RuntimeError as err:  # the CPU allocator's "can't allocate memory"
        if "allocate" not in str(err):
            raise
        raise _too_many(config.num_envs, device, err) from None


def _too_many(num_envs: int, device: torch.device, err: BaseException) -> ConfigError:
    reason = one_line(str(err), 160) or type(err).__name__
    return ConfigError(f"env.num_envs={num_envs}: out of memory on {device} ({reason})")


def env_stepping(env: VecEnv, fused_env: bool | None, compile: bool) -> str:
    """How ``env`` steps under experiment.fused_env and experiment.compile: "fused" (its
    one-kernel step, when wanted and available), "compiled" or "eager"; a task simulated
    outside torch gives its simulator's name ("mjx")."""
    if env.not_capturable:
        for key, wanted in (("fused_env", fused_env), ("compile", compile)):
            if wanted:
                raise ConfigError(f"experiment.{key}: {env.not_capturable}")
        return env.simulator
    why_not = env.fused_step_unavailable()
    if fused_env and why_not:
        raise ConfigError(f"experiment.fused_env: {why_not}")
    if fused_env is not False and why_not is None:
        return "fused"
    return "compiled" if compile else "eager"


def refuse_speedups(env_name: str, fused_env: bool | None, compile: bool) -> None:
    """Torch-only speed-ups asked of a task simulated elsewhere fail before the task is
    built (its simulator's import takes seconds), as `env_stepping` says. (A CUDA graph
    can still replay such a run's update: harness.graphs.Updates.)"""
    why = ENVS[env_name].not_capturable
    if not why:
        return
    for key, wanted in (("fused_env", fused_env), ("compile", compile)):
        if wanted:
            raise ConfigError(f"experiment.{key}: {why}")


def speed_up_env(env: VecEnv, fused_env: bool | None, compile: bool) -> str:
    """Apply `env_stepping`'s choice to ``env``; returns it."""
    how = env_stepping(env, fused_env, compile)
    if how == "fused":
        env.fuse()
    elif how == "compiled":
        env.compile()
    return how


def speed_up_algo(algo: Algorithm, fused_algo: bool | None, compile: bool) -> str:
    """Apply experiment.fused_algo and experiment.compile to ``algo``; returns how it runs:
    "fused", "compiled" or "eager". The fused kernels replace everything compile would
    compile, so they take precedence (as fused_env does for the env)."""
    why_not = algo.fused_unavailable()
    if fused_algo and why_not:
        raise ConfigError(f"experiment.fused_algo: {why_not}")
    if fused_algo is not False and why_not is None:
        algo.fuse()
        return "fused"
    if compile:
        algo.compile()
        return "compiled"
    return "eager"


def make_algo(
    config: Any, env: VecEnv, device: torch.device, generator: torch.Generator
) -> Algorithm:
    try:
        return ALGOS[config.name](
            config, env.observation_size, env.action_space, env.num_envs, device, generator
        )
    except FieldError as err:  # checks that need the env (batch sizes)
        raise ConfigError(f"algo.{err.key} {err.message}") from None
