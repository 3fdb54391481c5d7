"""Training one trial's seeds, in whichever process runs it (the worker's own, or a trial
process of its own): every metrics row and every finished seed goes to ``emit``."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.config import config_from_dict
from harness.evaluate import evaluate
from harness.runner import RunResult, train
from studies.messages import RowLogged, SeedFinished, TrialEvent, TrialJob


class TrialStopped(Exception):
    """Raised from ``emit`` to end the trial (pruned); the run keeps what it wrote."""


def run_job(job: TrialJob, emit: Callable[[TrialEvent], None]) -> None:
    """Train each seed of ``job`` into ``<trial_dir>/seed-<seed>``."""
    for index, (seed, config_data) in enumerate(zip(job.seeds, job.configs, strict=True)):
        config = config_from_dict(config_data, f"trial {job.trial} seed {seed}")
        rows: list[dict[str, Any]] = []

        def on_log(row: Any, index: int = index, rows: list = rows) -> None:
            rows.append(dict(row))
            emit(RowLogged(index, dict(row)))

        run_dir = Path(job.trial_dir) / f"seed-{seed}"
        result = train(config, run_dir=run_dir, on_log=on_log, context=job.context)
        metrics = seed_metrics(result, rows, job.threshold)
        if job.eval_episodes:
            metrics["eval_return"] = evaluate(
                run_dir, episodes=job.eval_episodes, overrides=list(job.eval_set)
            ).mean_return
        emit(SeedFinished(index, seed, str(run_dir), metrics))


def seed_metrics(
    result: RunResult, rows: list[dict[str, Any]], threshold: float | None
) -> dict[str, float]:
    """Every objective metric for one finished seed."""
    reached = [r for r in rows if threshold is not None and r["episode_return"] >= threshold]
    return {
        "final_return": result.final_return,
        "best_return": result.best_return,
        "env_steps_per_second": result.env_steps_per_second,
        "wall_time_s": result.wall_time_s,
        "steps_to_threshold": float(reached[0]["env_steps"]) if reached else math.inf,
        "time_to_threshold": float(reached[0]["wall_time_s"]) if reached else math.inf,
    }
