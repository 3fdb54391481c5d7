"""Throughput benchmarks, as the field reports them: env-only, env + policy inference, and
end-to-end training steps/s, over a list of num_envs.

Timing: a warm-up, then one synchronisation before and after the timed steps.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from harness.config import RunConfig
from harness.device import device_name, make_generators, resolve_device
from harness.registry import make_algo, make_env
from harness.runner import train
from harness.tracking import environment_meta

log = logging.getLogger("vecbench")
MODES = ("env", "inference", "train")


def _timed(step: Callable[[], None], warmup: int, steps: int, device: torch.device) -> float:
    """Seconds for ``steps`` calls after ``warmup`` calls, synchronised only at the ends."""
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _random_actions(env: Any, generator: torch.Generator) -> torch.Tensor:
    space, n, dev = env.action_space, env.num_envs, env.device
    if space.kind == "discrete":
        return torch.randint(0, space.n, (n,), device=dev, generator=generator)
    return torch.rand(n, space.shape, device=dev, generator=generator) * 2 - 1


def env_steps_per_second(config: RunConfig, warmup: int = 20, steps: int = 200) -> float:
    """Env stepping alone, with one fixed batch of random actions."""
    device = resolve_device(config.experiment.device)
    env_gen, _ = make_generators(config.experiment.seed, device)
    env = make_env(config.env, device, env_gen)
    env.reset()
    actions = _random_actions(env, env_gen)
    seconds = _timed(lambda: env.step(actions), warmup, steps, device)
    return steps * env.num_envs / seconds


def inference_steps_per_second(config: RunConfig, warmup: int = 20, steps: int = 200) -> float:
    """Env stepping with the (untrained) policy choosing every action."""
    device = resolve_device(config.experiment.device)
    env_gen, algo_gen = make_generators(config.experiment.seed, device)
    env = make_env(config.env, device, env_gen)
    algo = make_algo(config.algo, env, device, algo_gen)
    state = {"obs": env.reset()}

    def step() -> None:
        state["obs"] = env.step(algo.policy(state["obs"], deterministic=False)).obs

    with torch.no_grad():
        seconds = _timed(step, warmup, steps, device)
    return steps * env.num_envs / seconds


def train_steps_per_second(config: RunConfig, iterations: int = 20) -> float:
    """End-to-end training throughput after the first (burn-in) iteration."""
    steps_per_iteration = config.env.num_envs * config.algo.num_steps
    experiment = dataclasses.replace(
        config.experiment,
        total_env_steps=steps_per_iteration * (iterations + 1),
        log_interval=iterations + 1,
        checkpoint_interval=10**9,
        stop_at_return=None,
    )
    tracking = dataclasses.replace(config.tracking, wandb="disabled")
    config = dataclasses.replace(config, experiment=experiment, tracking=tracking)
    with tempfile.TemporaryDirectory() as tmp:
        return train(config, run_dir=Path(tmp) / "bench").env_steps_per_second


def run_bench(
    config: RunConfig,
    num_envs: list[int],
    modes: tuple[str, ...] = MODES,
    steps: int = 200,
    train_iterations: int = 20,
) -> list[dict[str, Any]]:
    """One row per (mode, num_envs) with the hardware and software it ran on."""
    device = resolve_device(config.experiment.device)
    meta = environment_meta(device, device_name(device))
    rows = []
    for n in num_envs:
        cfg = dataclasses.replace(config, env=dataclasses.replace(config.env, num_envs=n))
        for mode in modes:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            if mode == "env":
                rate = env_steps_per_second(cfg, steps=steps)
            elif mode == "inference":
                rate = inference_steps_per_second(cfg, steps=steps)
            else:
                rate = train_steps_per_second(cfg, iterations=train_iterations)
            row = {
                "task": cfg.env.name,
                "algo": cfg.algo.name,
                "mode": mode,
                "num_envs": n,
                "steps_per_second": rate,
                "gpu_memory_peak_mb": (
                    torch.cuda.max_memory_allocated(device) / 2**20
                    if device.type == "cuda"
                    else math.nan
                ),
                "driver": meta.get("driver"),
                "device_name": meta["device_name"],
                "torch": meta["torch"],
                "cuda": meta["cuda"],
                "git_commit": meta["git_commit"],
            }
            log.info("%-9s %9d envs  %14s steps/s", mode, n, f"{rate:,.0f}")
            rows.append(row)
    return rows


def write_results(rows: list[dict[str, Any]], out: Path) -> None:
    """``out``.json (rows + metadata) and ``out``.csv, for reports to read."""
    import pandas as pd

    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    pd.DataFrame(rows).to_csv(out.with_suffix(".csv"), index=False)


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| mode | num_envs | steps/s |", "| --- | ---: | ---: |"]
    for r in rows:
        rate = r["steps_per_second"]
        shown = "nan" if math.isnan(rate) else f"{rate:.3g}"
        lines.append(f"| {r['mode']} | {r['num_envs']} | {shown} |")
    if rows:
        r = rows[0]
        lines.append(f"\n{r['device_name']}, torch {r['torch']}, commit {r['git_commit']}")
    return "\n".join(lines)
