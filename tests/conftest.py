from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without CUDA the gpu-marked tests are deselected (reported), not skipped."""
    if torch.cuda.is_available():
        return
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu:
        config.hook.pytest_deselected(items=gpu)
        items[:] = [item for item in items if not item.get_closest_marker("gpu")]


@pytest.fixture(autouse=True)
def _quiet_logs() -> None:
    logging.getLogger("vecbench").setLevel(logging.WARNING)


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
