"""Where a batch of members spends an iteration (CUDA): graphed iteration time, then the
torch profiler's kernel table of one eager iteration.

    python -m reports.members_profile [--members K] [--num-envs N] [--iterations I]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness.config import load_config
from harness.members import Member, _Batch


def batch(members: int, num_envs: int, root: Path, graph: bool) -> _Batch:
    configs = [
        load_config(
            None,
            [
                "tracking.wandb=disabled",
                "experiment.device=cuda",
                f"experiment.cuda_graph={str(graph).lower()}",
                f"env.num_envs={num_envs}",
                f"experiment.seed={i}",
                f"algo.lr={1e-4 * (1 + i % 9)}",
            ],
        )
        for i in range(members)
    ]
    return _Batch([Member(c, root / f"m{i}") for i, c in enumerate(configs)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=64)
    parser.add_argument("--num-envs", type=int, default=4096)
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args(argv)
    from torch.profiler import ProfilerActivity, profile

    with tempfile.TemporaryDirectory() as tmp:
        graphed = batch(args.members, args.num_envs, Path(tmp), graph=True)
        obs = graphed.env.reset()
        obs, _ = graphed.iterate(obs)  # lazy CUDA set-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(3):  # the rest of the warm-up, the capture and one replay
            obs, _ = graphed.iterate(obs)
        torch.cuda.synchronize()
        capture = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(args.iterations):
            obs, _ = graphed.iterate(obs)
        torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / args.iterations
        steps = args.members * args.num_envs * graphed.algo.steps_per_update
        print(
            f"{torch.cuda.get_device_name()}, torch {torch.__version__}: {args.members} members "
            f"x {args.num_envs} envs, graphed iteration {seconds * 1e3:.1f} ms "
            f"({steps / seconds:.3g} env steps/s); warm-up, capture and one replay {capture:.2f} s"
        )
        eager = batch(args.members, args.num_envs, Path(tmp), graph=False)
        obs = eager.env.reset()
        obs, _ = eager.iterate(obs)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            eager.iterate(obs)
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15))
    return 0


if __name__ == "__main__":
    sys.exit(main())
