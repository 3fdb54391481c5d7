from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "egl")  # before any test module imports mujoco (videos)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one test process per core (pytest-xdist): one thread each, which the
    # subprocesses that tests start inherit, so the processes never fight over the cores.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--learning-seed",
        type=int,
        default=0,
        help="experiment.seed of the learning tests, to check that they hold for other seeds",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without CUDA the gpu-marked tests, with fewer than two GPUs the multi_gpu-marked
    ones, are deselected (reported), not skipped."""
    marker = "gpu" if not torch.cuda.is_available() else "multi_gpu"
    if marker == "multi_gpu" and torch.cuda.device_count() >= 2:
        return
    unrunnable = [item for item in items if item.get_closest_marker(marker)]
    if unrunnable:
        config.hook.pytest_deselected(items=unrunnable)
        items[:] = [item for item in items if not item.get_closest_marker(marker)]


@pytest.fixture(autouse=True)
def _quiet_logs() -> None:
    logging.getLogger("vecbench").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def seed_override(request: pytest.FixtureRequest) -> str:
    """The learning tests' seed as a config override (``--learning-seed``, default 0)."""
    return f"experiment.seed={request.config.getoption('--learning-seed')}"


@pytest.fixture
def cpu() -> torch.device:
    return torch.device("cpu")


@pytest.fixture(scope="session", autouse=True)
def _jax_compilation_cache() -> None:
    """MJX steps compile once per test session: identical programs come from JAX's
    persistent cache (about 15 s each on 2 cores otherwise)."""
    import jax

    cache = Path(__file__).resolve().parent.parent / ".pytest_cache" / "jax"
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@pytest.fixture(scope="session")
def solved_cartpole(tmp_path_factory: pytest.TempPathFactory, seed_override: str):
    """PPO on discrete cartpole (256 envs) trained until solved (tests.helpers.recipes.solve);
    shared by the learning and evaluation tests."""
    from harness.config import load_config
    from harness.runner import train
    from tests.helpers.recipes import solve

    config = load_config(
        overrides=[
            "tracking.wandb=disabled",
            "env.num_envs=256",
            "experiment.total_env_steps=600000",
            seed_override,
            *solve(475, 5),
        ]
    )
    return train(config, run_dir=tmp_path_factory.mktemp("solved") / "run")
