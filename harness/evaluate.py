"""Evaluate a trained run: one full episode per env, from its checkpoint."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from algos.base import Algorithm
from envs.base import VecEnv
from harness.device import make_generators, resolve_device
from harness.errors import RunDirError
from harness.registry import make_algo, make_env
from harness.tracking import RunStore, WandbTracker, run_name

log = logging.getLogger("vecbench.eval")

EVAL_SEED_OFFSET = 7_777  # evaluation envs draw from seed + this, apart from training's


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
    config = store.policy_config(overrides)
    experiment = config.experiment
    dev = resolve_device(device if device is not None else experiment.device)
    env_config = dataclasses.replace(config.env, num_envs=episodes)
    if seed is None:
        seed = experiment.seed + EVAL_SEED_OFFSET  # the episodes of evaluations in training
    env_gen, algo_gen = make_generators(seed, dev)
    env = make_env(env_config, dev, env_gen)
    algo = make_algo(config.algo, env, dev, algo_gen)
    store.load_algo(algo, store.load_checkpoint(dev))

    return run_episodes(env, algo, deterministic)


def record_eval(
    run_dir: Path, result: EvalResult, deterministic: bool, overrides: list[str] | None
) -> dict[str, Any]:
    """Write ``result`` to the run's eval.json and, unless the run's tracking is disabled,
    to W&B: the training run's summary as ``eval/<name>`` (resumed by its id in meta.json),
    and a W&B run of its own, job type ``eval``, named ``<run>-eval``, in the same group,
    with the run's config and the result as its summary (files in ``<run dir>/eval``).
    Offline unless the run's config says online. Returns what was written."""
    store = RunStore.open(Path(run_dir))
    record: dict[str, Any] = {
        "mean_return": result.mean_return,
        "std_return": result.std_return,
        "mean_length": result.mean_length,
        "episodes": result.episodes,
        "deterministic": deterministic,
        "overrides": list(overrides or []),
        "metrics": result.metrics,
        "evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    store.write_eval(record)
    try:
        meta = store.meta()
    except RunDirError as err:  # the result is written; only W&B's link to the run is lost
        log.warning("%s; the evaluation is not added to the run's W&B summary", err)
        meta = {}
    config, context = store.config(), meta.get("context")
    flat = {**{k: v for k, v in record.items() if k != "metrics"}, **result.metrics}
    flat["overrides"] = " ".join(record["overrides"])
    run_id = meta.get("wandb_run_id")
    if run_id:  # the tracker does nothing when the run's tracking is disabled
        tracker = WandbTracker(config, store.dir, run_id, context)
        tracker.finish({f"eval/{k}": v for k, v in flat.items()})
    if config.tracking.wandb != "disabled":
        name = f"{run_name(config, store.dir, context)}-eval"
        WandbTracker(config, store.dir / "eval", None, context, "eval", name=name).finish(flat)
    return record


def run_episodes(env: VecEnv, algo: Algorithm, deterministic: bool = True) -> EvalResult:
    """One episode in each of ``env``'s envs, from a reset, with ``algo.policy``.

    Changes no training state of ``algo``; the one host read is at the end.
    """
    n = env.num_envs
    device = env.device
    obs = env.reset()
    returns = torch.zeros(n, device=device)  # [E]
    lengths = torch.zeros(n, device=device)  # [E]
    running = torch.ones(n, dtype=torch.bool, device=device)  # [E] first episode not over
    finals = torch.zeros(n, len(env.final_metrics), device=device)  # [E, F]
    with torch.no_grad():
        for _ in range(env.config.max_episode_steps):
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
        std_return=returns.std().item() if n > 1 else 0.0,
        mean_length=lengths.mean().item(),
        episodes=n,
        metrics=dict(zip(env.final_metrics, finals.mean(0).tolist(), strict=True)),
    )
