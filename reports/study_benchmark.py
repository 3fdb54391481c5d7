"""A study's wall time by how its trials run: a process per trial, warm workers, batched.

    python -m reports.study_benchmark OUTPUT_DIR [--num-envs N] [--steps S] [--trials T]
        [--algo ppo|sac|td3] [--setups process:1:1 worker:1:1 worker:8:1 worker:32:2:2 ...]

Each setup ``isolation:batch_trials:workers[:gpus]`` runs the same study of T cartpole
trials (PPO: random lr and entropy coefficient; SAC/TD3 on continuous actions: random actor
and critic learning rates; W&B off) through ``vecbench study run`` in a fresh
process, timed from launch to exit; with a fourth field G, its workers are pinned to GPUs
0..G-1 in turn (``--gpus``). Writes OUTPUT_DIR/study_benchmark.{json,csv} with the
GPU or CPU name, torch version and commit, and prints a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from reports.bench_files import write_result

SPACES = {
    "ppo": {
        "algo.lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-3, "log": True},
        "algo.entropy_coef": {"type": "float", "low": 0.0, "high": 0.01},
    },
    "offpolicy": {
        "algo.actor_lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-3, "log": True},
        "algo.critic_lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-3, "log": True},
    },
}


def study_file(out: Path, name: str, isolation: str, batch: int, args: Any) -> Path:
    data = {
        "name": name,
        "study_dir": str(out / name),
        "trial_isolation": isolation,
        "batch_trials": batch,
        "config": {
            "tracking": {"wandb": "disabled"},
            "experiment": {"total_env_steps": args.steps, "log_interval": 20},
            "env": {"num_envs": args.num_envs},
            "algo": {"name": args.algo},
        },
        "space": SPACES["ppo" if args.algo == "ppo" else "offpolicy"],
        "n_trials": args.trials,
        "sampler": {"name": "random", "seed": 0},
    }
    if args.algo != "ppo":
        data["config"]["env"]["action_type"] = "continuous"  # type: ignore[index]
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def measure(out: Path, setup: str, args: Any) -> dict[str, Any]:
    isolation, batch, workers, *gpus = setup.split(":")
    count = int(gpus[0]) if gpus else 0
    name = f"study-{isolation}-b{batch}-w{workers}" + (f"-g{count}" if count else "")
    path = study_file(out, name, isolation, int(batch), args)
    cmd = [sys.executable, "-m", "harness.cli", "study", "run", str(path), "--workers", workers]
    if count:
        cmd += ["--gpus", *map(str, range(count))]
    start = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
    wall = time.perf_counter() - start
    summaries = [
        json.loads(p.read_text()) for p in sorted((out / name).glob("trials/*/seed-*/summary.json"))
    ]
    if not summaries:
        raise SystemExit(f"{name}: no trial finished; see {out / f'{name}.log'}")
    steps = sum(s["env_steps"] for s in summaries)
    memory = [s["gpu_memory_peak_mb"] for s in summaries if s["gpu_memory_peak_mb"] is not None]
    return {
        "isolation": isolation,
        "batch_trials": int(batch),
        "workers": int(workers),
        "gpus": count or int(args.cuda),  # unpinned: the first GPU, if any
        "trials": len(summaries),
        "wall_s": round(wall, 2),
        "study_env_steps_per_s": steps / wall,
        "run_env_steps_per_s_median": sorted(s["env_steps_per_second"] for s in summaries)[
            len(summaries) // 2
        ],
        "final_return_median": sorted(s["final_return"] for s in summaries)[len(summaries) // 2],
        "gpu_memory_peak_mb": max(memory) if memory else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--num-envs", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=8_000_000, help="env steps per trial")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--algo", choices=["ppo", "sac", "td3"], default="ppo")
    parser.add_argument("--setups", nargs="+", default=["process:1:1", "worker:1:1", "worker:8:1"])
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    import torch

    from harness.device import device_name, resolve_device
    from harness.tracking import environment_meta

    device = resolve_device("auto")
    args.cuda = device.type == "cuda"
    meta = environment_meta(device, device_name(device))
    rows = []
    for setup in args.setups:
        row = measure(args.output, setup, args)
        rows.append(row)
        print(json.dumps(row), flush=True)
    first = rows[0]["wall_s"]
    for row in rows:
        row["wall_vs_first"] = round(row["wall_s"] / first, 3)
    result = {
        "device_name": meta["device_name"],
        "driver": meta["driver"],
        "torch": torch.__version__,
        "git_commit": meta["git_commit"],
        "algo": args.algo,
        "num_envs": args.num_envs,
        "env_steps_per_trial": args.steps,
        "setups": rows,
    }
    table = write_result(args.output, "study_benchmark", result, rows)
    print(
        f"{meta['device_name']}, torch {torch.__version__}, commit {meta['git_commit']}, "
        f"{args.trials} {args.algo} trials x {args.steps:,} env steps at {args.num_envs} envs"
    )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
