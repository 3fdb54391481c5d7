"""Evaluate a trained run: one full episode per env, from its checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness.device import make_generators, resolve_device
from harness.registry import make_algo, make_env
from harness.tracking import RunStore


@dataclass(frozen=True)
class EvalResult:
    mean_return: float
    std_return: float
    mean_length: float
    episodes: int
    # The task's final metrics (e.g. success), mean over the same episodes.
    metrics: dict[str, float] = field(default_factory=dict)


def evaluate(
    run_dir: Path,
    episodes: int = 100,
    deterministic: bool = True,
    device: str | None = None,
    overrides: list[str] | None = None,
    seed: int | None = None,
) -> EvalResult:
    """Mean return over ``episodes`` episodes, each env running exactly one.

    Counting only each env's first episode avoids the bias toward short episodes that
    counting every finished episode in a fixed number of steps has.
    """
    store = RunStore.open(Path(run_dir))
    config = store.config(overrides)
    experiment = config.experiment
    if device is not None:
        experiment = dataclasses.replace(experiment, device=device)
    dev = resolve_device(experiment.device)
    env_config = dataclasses.replace(config.env, num_envs=episodes)
    env_gen, algo_gen = make_generators(experiment.seed + 7_777 if seed is None else seed, dev)
    env = make_env(env_config, dev, env_gen)
    algo = make_algo(config.algo, env, dev, algo_gen)
    algo.load_state_dict(store.load_checkpoint(dev)["algo"])

    obs = env.reset()
    returns = torch.zeros(episodes, device=dev)  # [E]
    lengths = torch.zeros(episodes, device=dev)  # [E]
    running = torch.ones(episodes, dtype=torch.bool, device=dev)  # [E] first episode not over
    finals = torch.zeros(episodes, len(env.final_metrics), device=dev)  # [E, F]
    for _ in range(env_config.max_episode_steps):
        step = env.step(algo.policy(obs, deterministic))
        returns += step.reward * running
        lengths += running.float()
        ended = running & (step.terminated | step.truncated)
        if env.final_metrics:
            finals = torch.where(ended[:, None], step.info["final_metrics"], finals)
        running &= ~ended
        obs = step.obs
    return EvalResult(
        mean_return=returns.mean().item(),
        std_return=returns.std().item() if episodes > 1 else 0.0,
        mean_length=lengths.mean().item(),
        episodes=episodes,
        metrics=dict(zip(env.final_metrics, finals.mean(0).tolist(), strict=True)),
    )
