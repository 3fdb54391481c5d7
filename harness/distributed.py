"""One training run across processes, launched by ``torchrun`` (PyTorch's own launcher).

``torchrun --nproc_per_node K -m harness.cli train ...`` starts K ranks; each steps its own
``env.num_envs`` envs on its own GPU (gloo on CPU) and PPO averages gradients and
statistics over ranks. Rank 0 alone writes the run directory, logs and tracks.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from harness.device import resolve_device
from harness.errors import ConfigError


@dataclass(frozen=True)
class Rank:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device_name: str) -> tuple[Rank, torch.device]:
    """Join the process group torchrun describes (if any); this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Rank(), resolve_device(device_name)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"rank {rank} wants cuda:{local}, but only {torch.cuda.device_count()} GPU(s) "
                "are visible; start fewer processes per node"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            timeout=datetime.timedelta(minutes=10),
            **({"device_id": device} if device.type == "cuda" else {}),
        )
    return Rank(rank, world, local), device


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
