from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.services.postgres import postgres_server

BASE = {
    "tracking": {"wandb": "disabled"},
    "env": {"num_envs": 64},
    "algo": {"num_steps": 8},
    "experiment": {"total_env_steps": 8192, "log_interval": 2},
}


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture
def write_study(tmp_path: Path):
    """Write a study file into tmp_path; returns its path."""

    def write(name: str = "s", **fields) -> Path:
        data = {"name": name, "study_dir": str(tmp_path / name), "config": BASE, **fields}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write
