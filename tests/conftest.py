from __future__ import annotations

import logging

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
