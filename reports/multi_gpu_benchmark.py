"""Data-parallel PPO scaling: one GPU against K GPUs at the same per-GPU num_envs.

    python -m reports.multi_gpu_benchmark OUTPUT_DIR [--gpus K] [--num-envs 4096 16384 65536]
        [--iterations 300] [--log-interval 25] [--eager [--eager-iterations 75]] [--learn]
        [--set KEY=VALUE ...]

Every figure comes from one call, each run in a fresh process: ``vecbench train`` on one
GPU and ``torchrun --nproc_per_node K`` (the CUDA graph on every rank, as on one GPU;
``--eager`` adds K-GPU runs with experiment.cuda_graph=false). Steady training steps/s is
the median (min, max) of the per-log-interval rates after the first interval, which holds
the capture. ``--learn`` also trains cartpole to a mean return of 475 on 1 and K GPUs and
records the env steps per GPU it took. ``--set`` applies config overrides to every run
(e.g. ``algo.name=td3 env.action_type=continuous``). Writes
OUTPUT_DIR/multi_gpu_benchmark.{json,csv} with the GPU, driver, torch, CUDA, NCCL version
and commit, and prints a table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from reports.bench_files import write_result


def train_command(gpus: int, run_dir: Path, overrides: list[str], device: str) -> list[str]:
    launcher = [sys.executable, "-m", "harness.cli"]
    if gpus > 1:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(gpus),
            "-m",
            "harness.cli",
        ]
    return [
        *launcher,
        "train",
        "--device",
        device,
        "--wandb",
        "disabled",
        "--run-dir",
        str(run_dir),
        "--set",
        *overrides,
    ]


def run(out: Path, name: str, gpus: int, overrides: list[str], device: str) -> tuple[Path, float]:
    run_dir, log_path = out / "runs" / name, out / "runs" / f"{name}.log"
    shutil.rmtree(run_dir, ignore_errors=True)  # this benchmark's own earlier output
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(
            train_command(gpus, run_dir, overrides, device), stdout=log, stderr=subprocess.STDOUT
        )
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-15:])
        raise SystemExit(f"{name} failed (exit {proc.returncode}); {log_path} ends:\n{tail}")
    return run_dir, time.perf_counter() - start


def steady_rates(run_dir: Path) -> list[float]:
    import pandas as pd

    rows = pd.read_csv(run_dir / "metrics.csv")
    return [float(r) for r in rows["interval_env_steps_per_second"].iloc[1:]]


def throughput(
    out: Path, gpus: int, num_envs: int, graph: bool, iterations: int, args: Any
) -> dict[str, Any]:
    name = f"{'graph' if graph else 'eager'}-{gpus}gpu-{num_envs}"
    run_dir, wall = run(
        out,
        name,
        gpus,
        [
            f"env.num_envs={num_envs}",
            f"experiment.total_env_steps={num_envs * args.num_steps * gpus * iterations}",
            f"experiment.log_interval={args.log_interval}",
            f"experiment.checkpoint_interval={iterations}",  # no checkpoint inside the timing
            f"experiment.cuda_graph={str(graph).lower()}",
            *args.set,
        ],
        args.device,
    )
    rates = steady_rates(run_dir)
    meta = json.loads((run_dir / "meta.json").read_text())
    return {
        "kind": "throughput",
        "gpus": gpus,
        "num_envs_per_gpu": num_envs,
        "cuda_graph": graph,
        "steps_per_second": statistics.median(rates),
        "steps_per_second_min": min(rates),
        "steps_per_second_max": max(rates),
        "intervals": len(rates),
        "iterations": iterations,
        "wall_s": round(wall, 2),
        "world_size": meta.get("world_size", 1),
    }


def learning(out: Path, gpus: int, num_envs: int, args: Any) -> dict[str, Any]:
    device = args.device
    run_dir, wall = run(
        out,
        f"learn-{gpus}gpu-{num_envs}",
        gpus,
        [
            f"env.num_envs={num_envs}",
            f"experiment.total_env_steps={20_000_000 * gpus}",
            f"experiment.cuda_graph={str(device == 'cuda').lower()}",
            "experiment.stop_at_return=475",
            "experiment.log_interval=5",
            *args.set,
        ],
        device,
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "kind": "learn",
        "gpus": gpus,
        "num_envs_per_gpu": num_envs,
        "cuda_graph": device == "cuda",
        "final_return": summary["final_return"],
        "env_steps": summary["env_steps"],
        "env_steps_per_gpu": summary["env_steps"] // gpus,
        "iterations": summary["iterations"],
        "wall_s": round(wall, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--num-envs", type=int, nargs="+", default=[4096, 16384, 65536])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--log-interval", type=int, default=25)
    parser.add_argument("--eager", action="store_true", help="also K GPUs without the graph")
    parser.add_argument("--eager-iterations", type=int, default=75)
    parser.add_argument("--learn", action="store_true", help="also train to 475 on 1 and K")
    parser.add_argument("--learn-envs", type=int, default=4096, help="per GPU, with --learn")
    # cpu: K gloo processes instead of K GPUs (the benchmark's own test)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if args.gpus < 2 or min(args.num_envs) < 1 or args.log_interval < 1:
        parser.error("--gpus must be >= 2, --num-envs and --log-interval >= 1")
    if min(args.iterations, args.eager_iterations if args.eager else args.iterations) < (
        2 * args.log_interval
    ):
        parser.error("--iterations (and --eager-iterations) must be >= 2 x --log-interval")
    from harness.config import load_config
    from harness.errors import ConfigError

    try:
        args.num_steps = load_config(overrides=args.set).algo.num_steps  # env steps/iteration
    except ConfigError as err:
        parser.error(str(err))
    (args.output / "runs").mkdir(parents=True, exist_ok=True)
    import torch

    from harness.device import device_name, resolve_device
    from harness.tracking import environment_meta

    if args.device == "cuda" and torch.cuda.device_count() < args.gpus:
        parser.error(f"--gpus {args.gpus}: torch sees {torch.cuda.device_count()} GPU(s)")
    device = resolve_device(args.device)
    meta = environment_meta(device, device_name(device))
    rows = []
    for num_envs in args.num_envs:
        graph = args.device == "cuda"
        setups = [(1, graph, args.iterations), (args.gpus, graph, args.iterations)]
        if args.eager:
            setups.append((args.gpus, False, args.eager_iterations))
        for gpus, graph, iterations in setups:
            rows.append(throughput(args.output, gpus, num_envs, graph, iterations, args))
            print(json.dumps(rows[-1]), flush=True)
    if args.learn:
        for gpus in (1, args.gpus):
            rows.append(learning(args.output, gpus, args.learn_envs, args))
            print(json.dumps(rows[-1]), flush=True)
    throughputs = [r for r in rows if r["kind"] == "throughput"]
    one = {r["num_envs_per_gpu"]: r["steps_per_second"] for r in throughputs if r["gpus"] == 1}
    for r in throughputs:
        r["speedup"] = r["steps_per_second"] / one[r["num_envs_per_gpu"]]
        r["efficiency"] = r["speedup"] / r["gpus"]
    nccl = ".".join(map(str, torch.cuda.nccl.version())) if args.device == "cuda" else None
    result = {
        "device_name": meta["device_name"],
        "gpus": args.gpus,
        "driver": meta["driver"],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "nccl": nccl,
        "git_commit": meta["git_commit"],
        "overrides": args.set,
        "rows": rows,
    }
    table = write_result(args.output, "multi_gpu_benchmark", result, rows)
    print(
        f"{args.gpus} x {meta['device_name']}, driver {meta['driver']}, torch {torch.__version__}, "
        f"NCCL {nccl}, commit {meta['git_commit']}"
    )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
