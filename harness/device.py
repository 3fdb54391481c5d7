"""Device choice and seeding, done once at the entry point."""

from __future__ import annotations

import torch

from harness.config import DEVICE_NAMES
from harness.errors import ConfigError, shown


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not DEVICE_NAMES.fullmatch(name):  # torch.device raises RuntimeError on nonsense
        raise ConfigError(f"experiment.device must be auto, cpu, cuda or cuda:K, got {shown(name)}")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"experiment.device is {name!r} but this torch ({torch.__version__}) sees no CUDA "
                "device; use --device cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"experiment.device is {name!r} but only {torch.cuda.device_count()} GPU(s) exist"
            )
    return device


def make_generators(
    seed: int, device: torch.device, rank: int = 0
) -> tuple[torch.Generator, torch.Generator]:
    """(env generator, algorithm generator) on ``device``, and the global seed for init.

    Data-parallel ranks share the init seed but draw their own envs and actions.
    """
    torch.manual_seed(seed)  # network initialisation draws from the global generator
    offset = 7_919 * rank
    env_gen = torch.Generator(device=device).manual_seed(seed + offset)
    algo_gen = torch.Generator(device=device).manual_seed(seed + 1_000_003 + offset)
    return env_gen, algo_gen


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"
