"""Throughput benchmarks, as the field reports them: env-only, env + policy inference, and
end-to-end training steps/s, over a list of num_envs.

Timing: a warm-up, then one synchronisation before and after the timed steps.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from harness.config import RunConfig
from harness.device import device_name, make_generators, resolve_device
from harness.errors import ConfigError
from harness.graphs import GRAPH_WARMUP, GraphedRegion, side_stream
from harness.registry import ENVS, env_stepping, make_algo, make_env, speed_up_env
from harness.runner import train
from harness.tracking import WandbTracker, environment_meta

log = logging.getLogger("vecbench")
MODES = ("env", "inference", "train")
ALL_MODES = (*MODES, "launch")  # launch: a fresh process trains until a mean return


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


def random_actions(env: Any, generator: torch.Generator) -> torch.Tensor:
    space, n, dev = env.action_space, env.num_envs, env.device
    if space.kind == "discrete":
        return torch.randint(0, space.n, (n,), device=dev, generator=generator)
    return torch.rand(n, space.shape, device=dev, generator=generator) * 2 - 1


GRAPH_STEPS = 16  # env steps per captured graph in the env and inference benchmarks


def _stepper(
    config: RunConfig, step: Callable[[torch.Tensor], torch.Tensor], env: Any, obs: torch.Tensor
) -> tuple[Callable[[], None], int]:
    """A call that advances the env, and how many env steps each call makes: one eager
    step, or with experiment.cuda_graph a replay of GRAPH_STEPS captured steps."""
    state = {"obs": obs}
    wanted = config.experiment.cuda_graph
    if wanted and env.not_capturable:
        raise ConfigError(f"experiment.cuda_graph cannot run: {env.not_capturable}")
    if wanted is False or (wanted is None and (env.device.type != "cuda" or env.not_capturable)):

        def eager() -> None:
            state["obs"] = step(state["obs"])

        return eager, 1
    if env.device.type != "cuda":
        raise ConfigError(f"experiment.cuda_graph needs a CUDA device, got {env.device}")

    def region(obs: torch.Tensor) -> tuple[torch.Tensor, None]:
        for _ in range(GRAPH_STEPS):
            obs = step(obs)
        return obs, None

    with side_stream(env.device):
        for _ in range(2):
            obs, _ = region(obs)
    graph = GraphedRegion(region, env, [], obs)
    return (lambda: graph()), GRAPH_STEPS


def _speed_up(config: RunConfig, env: Any) -> None:
    exp = config.experiment
    if exp.compile:
        import torch._dynamo

        torch._dynamo.reset()  # each benchmark its own compile: no recompile limit reached
    speed_up_env(env, exp.fused_env, exp.compile)


def env_steps_per_second(config: RunConfig, warmup: int = 20, steps: int = 200) -> float:
    """Env stepping alone, with one fixed batch of random actions."""
    device = resolve_device(config.experiment.device)
    env_gen, _ = make_generators(config.experiment.seed, device)
    env = make_env(config.env, device, env_gen)
    _speed_up(config, env)
    actions = random_actions(env, env_gen)
    call, per_call = _stepper(config, lambda obs: env.step(actions).obs, env, env.reset())
    calls = max(1, steps // per_call)
    seconds = _timed(call, max(1, warmup // per_call), calls, device)
    return calls * per_call * env.num_envs / seconds


def inference_steps_per_second(config: RunConfig, warmup: int = 20, steps: int = 200) -> float:
    """Env stepping with the (untrained) policy choosing every action; experiment.compile
    compiles the policy too."""
    device = resolve_device(config.experiment.device)
    env_gen, algo_gen = make_generators(config.experiment.seed, device)
    env = make_env(config.env, device, env_gen)
    _speed_up(config, env)
    algo = make_algo(config.algo, env, device, algo_gen)
    policy = torch.compile(algo.policy) if config.experiment.compile else algo.policy

    def step(obs: torch.Tensor) -> torch.Tensor:
        return env.step(policy(obs, deterministic=False)).obs

    with torch.no_grad():
        call, per_call = _stepper(config, step, env, env.reset())
        calls = max(1, steps // per_call)
        seconds = _timed(call, max(1, warmup // per_call), calls, device)
    return calls * per_call * env.num_envs / seconds


def steady_window(iterations: int, warmup: int) -> tuple[int, int]:
    """(iterations to run, log interval) such that the last metrics row times exactly the
    final ``iterations`` iterations, after at least ``warmup`` set-up ones."""
    lead = math.ceil(warmup / iterations) * iterations
    return lead + iterations, iterations


def warmup_iterations(config: RunConfig) -> int:
    """Iterations before training runs at its steady rate: the burn-in, the CUDA graph's
    eager warm-up and capture, and an off-policy run's random-action iterations before
    learning (they run eagerly and update nothing)."""
    algo, per_env = config.algo, config.algo.num_steps
    random = 0
    if hasattr(algo, "learning_starts"):
        random = max(
            math.ceil(algo.n_step / per_env),
            math.ceil(algo.learning_starts / (config.env.num_envs * per_env)),
        )
    return 1 + GRAPH_WARMUP + random


def train_steps_per_second(
    config: RunConfig, iterations: int = 20, run_dir: Path | None = None
) -> float:
    """Training throughput over ``iterations`` steady iterations, timed after the set-up
    ones (`warmup_iterations`) by the run's own last metrics row; ``run_dir`` keeps the run."""
    total, interval = steady_window(iterations, warmup_iterations(config))
    experiment = dataclasses.replace(
        config.experiment,
        total_env_steps=config.env.num_envs * config.algo.num_steps * total,
        log_interval=interval,
        eval_interval=0,
        checkpoint_interval=10**9,
        stop_at_return=None,
    )
    tracking = dataclasses.replace(config.tracking, wandb="disabled", tensorboard=False)
    config = dataclasses.replace(config, experiment=experiment, tracking=tracking)
    with tempfile.TemporaryDirectory() as tmp:
        result = train(config, run_dir=run_dir or Path(tmp) / "bench")
        with open(result.run_dir / "metrics.csv", newline="") as f:
            last = list(csv.DictReader(f))[-1]
    return float(last["interval_env_steps_per_second"])


def launch_to_return(
    config: RunConfig, threshold: float, budget: int = 100_000_000
) -> dict[str, float]:
    """Wall time from starting a fresh ``vecbench train`` process (W&B off) to its exit,
    stopping at the first logged mean return >= ``threshold`` (within at least ``budget``
    env steps); the same clock as timing the command in a shell. A run that ends without
    reaching the threshold raises."""
    import subprocess
    import sys

    import yaml

    from harness.config import to_dict

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(to_dict(config)))
        command = [
            sys.executable, "-m", "harness.cli", "train", "--config", str(path),
            "--wandb", "disabled", "--run-dir", str(Path(tmp) / "run"),
            "--set", f"experiment.stop_at_return={threshold}",
            f"experiment.total_env_steps={max(config.experiment.total_env_steps, budget)}",
        ]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        launch = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"launch benchmark failed:\n{done.stderr[-2000:]}")
        summary = json.loads((Path(tmp) / "run" / "summary.json").read_text())
    if not summary["final_return"] >= threshold:
        raise RuntimeError(
            f"launch benchmark: the run ended at mean return {summary['final_return']:.1f} "
            f"after {summary['env_steps']:,} env steps, short of {threshold}"
        )
    return {
        "launch_s": launch,
        "train_s": summary["wall_time_s"],
        "final_return": summary["final_return"],
        "env_steps": summary["env_steps"],
        "threshold": threshold,
        "steps_per_second": summary["env_steps_per_second"],
    }


def _policy_hidden(config: RunConfig) -> tuple[int, ...]:
    """The policy's hidden sizes: PPO's actor_hidden, SAC's and TD3's hidden."""
    algo = config.algo
    return tuple(getattr(algo, "actor_hidden", None) or getattr(algo, "hidden", ()))


def _graph_scope(config: RunConfig, device: torch.device, mode: str) -> str | None:
    """What a benchmark row replayed from CUDA graphs (experiment.cuda_graph, null = auto):
    "iteration" (env modes: the env steps), "update" (training on an env that steps outside
    torch: harness.graphs.Updates) or None."""
    wanted = config.experiment.cuda_graph
    outside = ENVS[config.env.name].not_capturable
    if mode in ("env", "inference"):
        graphed = not outside and (bool(wanted) or (wanted is None and device.type == "cuda"))
        return "iteration" if graphed else None
    auto = wanted is None and device.type == "cuda" and not config.algo.not_capturable
    if not (wanted or auto):
        return None
    return "update" if outside else "iteration"


def _env_stepping(config: RunConfig, device: torch.device) -> str:
    """How a benchmark row's env stepped: "fused", "compiled", "eager" or the simulator
    of a task that torch does not step ("mjx")."""
    task = ENVS[config.env.name]
    if task.not_capturable:
        return task.simulator
    env = make_env(dataclasses.replace(config.env, num_envs=1), device, torch.Generator(device))
    return env_stepping(env, config.experiment.fused_env, config.experiment.compile)


def _algo_stepping(config: RunConfig, device: torch.device, mode: str) -> str | None:
    """How a training or launch row's algorithm ran: "fused" (PPO's Triton kernels),
    "compiled" or "eager"; None for modes that run no update."""
    if mode not in ("train", "launch"):
        return None
    exp, algo = config.experiment, config.algo
    if algo.name != "ppo":
        return "eager"  # SAC and TD3 compile nothing (experiment.compile warns so)
    from algos.ppo import fused_unavailable

    task = ENVS[config.env.name]
    env = (
        None
        if task.not_capturable
        else make_env(dataclasses.replace(config.env, num_envs=1), device, torch.Generator(device))
    )
    if env is not None and exp.fused_algo is not False:
        space = env.action_space
        size = space.n if space.kind == "discrete" else space.shape
        batch = algo.num_steps * config.env.num_envs
        if fused_unavailable(algo, device, env.observation_size, size, batch) is None:
            return "fused"
    return "compiled" if exp.compile else "eager"


def run_bench(
    config: RunConfig,
    num_envs: list[int],
    modes: tuple[str, ...] = MODES,
    steps: int = 200,
    train_iterations: int = 20,
    threshold: float = 475.0,
    repeats: int = 1,
    on_row: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per (mode, num_envs) with the hardware and software it ran on: the median
    of ``repeats`` measurements, with their minimum and maximum. ``on_row`` gets the rows
    so far after each one (to save them before a long benchmark is done)."""
    if repeats <= 0:
        raise ConfigError(f"--repeats must be > 0, got {repeats}")
    device = resolve_device(config.experiment.device)
    meta = environment_meta(device, device_name(device))
    rows = []
    for n in num_envs:
        cfg = dataclasses.replace(config, env=dataclasses.replace(config.env, num_envs=n))
        for mode in modes:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            measured: list[tuple[float, dict[str, float]]] = []
            for _ in range(repeats):
                extra: dict[str, float] = {}
                if mode == "launch":
                    extra = launch_to_return(cfg, threshold)
                    rate = extra.pop("steps_per_second")
                elif mode == "env":
                    rate = env_steps_per_second(cfg, steps=steps)
                elif mode == "inference":
                    rate = inference_steps_per_second(cfg, steps=steps)
                else:
                    rate = train_steps_per_second(cfg, iterations=train_iterations)
                measured.append((rate, extra))
            rates = sorted(r for r, _ in measured)
            rate = statistics.median(rates)
            extra = sorted(measured, key=lambda m: m[0])[(repeats - 1) // 2][1]  # the median's
            if mode == "launch":  # the launch's own figures: medians of their repeats too
                for key in ("launch_s", "train_s"):
                    times = sorted(e[key] for _, e in measured)
                    extra = {**extra, key: statistics.median(times)}
                    extra[f"{key}_min"], extra[f"{key}_max"] = times[0], times[-1]
            row = {
                "task": cfg.env.name,
                "algo": cfg.algo.name,
                "mode": mode,
                "num_envs": n,
                "cuda_graph": _graph_scope(cfg, device, mode) is not None,
                "graph_scope": _graph_scope(cfg, device, mode),
                "compile": cfg.experiment.compile,
                "env_stepping": _env_stepping(cfg, device),
                "algo_stepping": _algo_stepping(cfg, device, mode),
                "policy_precision": getattr(cfg.algo, "policy_precision", "float32"),
                "actor_hidden": "x".join(map(str, _policy_hidden(cfg))),
                "steps_per_second": rate,
                "steps_per_second_min": rates[0],
                "steps_per_second_max": rates[-1],
                "repeats": repeats,
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
                **extra,
            }
            log.info("%-9s %9d envs  %14s steps/s %s", mode, n, f"{rate:,.0f}", extra or "")
            rows.append(row)
            if on_row is not None:
                on_row(rows)
    return rows


def write_results(rows: list[dict[str, Any]], out: Path) -> None:
    """``out``.json (rows + metadata) and ``out``.csv, for reports to read."""
    import pandas as pd

    from harness.files import atomic_write, strict_json

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out.with_suffix(".json"), strict_json(rows))
    atomic_write(out.with_suffix(".csv"), pd.DataFrame(rows).to_csv(index=False))


def log_bench(
    config: RunConfig, rows: list[dict[str, Any]], folder: Path, settings: dict[str, Any]
) -> str | None:
    """The benchmark as a W&B run of job type ``bench`` in ``folder``/wandb (offline by
    default; none with tracking.wandb disabled): the config and the bench's settings as its
    config, the rows as a table, and ``steps_per_second/<mode>/<num_envs>`` (with _min and
    _max) as its summary. Returns the W&B run's id."""
    import pandas as pd

    name = f"bench-{config.env.name}-{config.algo.name}"
    tracker = WandbTracker(config, folder, None, {"bench": settings}, "bench", name=name)
    if tracker.run is None:
        return None
    import wandb

    tracker.run.log({"bench": wandb.Table(dataframe=pd.DataFrame(rows))})
    summary: dict[str, Any] = {}
    for row in rows:
        for key in ("steps_per_second", "steps_per_second_min", "steps_per_second_max"):
            if key in row:
                summary[f"{key}/{row['mode']}/{row['num_envs']}"] = row[key]
    run_id = tracker.run.id
    tracker.finish(summary)
    return run_id


def format_table(rows: list[dict[str, Any]]) -> str:
    repeats = max((r.get("repeats", 1) for r in rows), default=1)
    head = f"steps/s (median of {repeats}, min-max)" if repeats > 1 else "steps/s"
    lines = [f"| mode | num_envs | {head} |", "| --- | ---: | ---: |"]
    for r in rows:
        rate = r["steps_per_second"]
        shown = "nan" if math.isnan(rate) else f"{rate:.3g}"
        if r["mode"] == "launch":
            spread = (
                f" ({r['launch_s_min']:.1f}-{r['launch_s_max']:.1f})" if "launch_s_min" in r else ""
            )
            shown += (
                f" (launch to {r['threshold']:g}: {r['launch_s']:.1f} s{spread}, "
                f"training {r['train_s']:.1f} s)"
            )
        if r.get("repeats", 1) > 1:
            shown += f" ({r['steps_per_second_min']:.3g}-{r['steps_per_second_max']:.3g})"
        lines.append(f"| {r['mode']} | {r['num_envs']} | {shown} |")
    if rows:
        r = rows[0]
        lines.append(f"\n{r['device_name']}, torch {r['torch']}, commit {r['git_commit']}")
    return "\n".join(lines)
