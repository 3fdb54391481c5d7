"""Kernels in one PPO iteration on CUDA (what a CUDA graph of it replays), eager and with
experiment.compile, and the graphed iteration's time.

    python -m reports.iteration_kernels [--num-envs N ...] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from typing import Any

import torch

from harness.config import load_config
from harness.device import make_generators
from harness.graphs import GRAPH_WARMUP, Iterations
from harness.registry import make_algo, make_env, speed_up_algo, speed_up_env
from harness.runner import collect


def measure(
    num_envs: int,
    compile: bool,
    overrides: list[str],
    iterations: int,
    top: int = 8,
) -> dict[str, Any]:
    """Kernel count of one iteration (the torch profiler over an eager one after warm-up)
    and ms per graphed iteration (median of three timings of ``iterations`` replays)."""
    from torch.profiler import ProfilerActivity, profile

    config = load_config(None, [f"env.num_envs={num_envs}", *overrides])
    device = torch.device("cuda")
    env_gen, algo_gen = make_generators(0, device, 0)
    env = make_env(config.env, device, env_gen)
    algo = make_algo(config.algo, env, device, algo_gen)
    speed_up_env(env, config.experiment.fused_env, compile)
    algo_stepping = speed_up_algo(algo, config.experiment.fused_algo, compile)

    def iteration(obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        obs = collect(env, algo, obs)
        return obs, algo.update()

    obs = env.reset()
    start = time.perf_counter()
    for _ in range(GRAPH_WARMUP):
        obs, _ = iteration(obs)
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - start
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        obs, _ = iteration(obs)
        torch.cuda.synchronize()
    kernels = collections.Counter(
        e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
    )
    graphed = Iterations(iteration, env, [algo_gen], device, True, algo)
    for _ in range(GRAPH_WARMUP + 1):
        obs, _ = graphed(obs)
    times = []
    for _ in range(3):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iterations):
            obs, _ = graphed(obs)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / iterations)
    ms = sorted(times)[1] * 1e3
    steps = algo.steps_per_update * num_envs
    return {
        "num_envs": num_envs,
        "compile": compile,
        "algo": algo_stepping,
        "kernels": sum(kernels.values()),
        "ms_per_iteration": ms,
        "env_steps_per_s": steps / ms * 1e3,
        "warmup_s": warmup_s,
        "top": kernels.most_common(top),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[2048])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--inductor", nargs="*", default=[], metavar="KEY=VALUE", help="torch._inductor.config"
    )
    parser.add_argument(
        "--compile", choices=("both", "false", "true"), default="both", help="which rows"
    )
    parser.add_argument("--kernels", type=int, default=8, help="most frequent kernels shown")
    args = parser.parse_args(argv)
    if args.inductor:
        import torch._inductor.config as inductor

        for item in args.inductor:
            key, value = item.split("=", 1)
            setattr(inductor, key, type(getattr(inductor, key))(int(value)))
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    for n in args.num_envs:
        for compile in {"both": (False, True), "false": (False,), "true": (True,)}[args.compile]:
            row = measure(n, compile, args.set, args.iterations, args.kernels)
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
