"""The scaling benchmark's own path on CPU: gloo processes stand in for GPUs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from reports.multi_gpu_benchmark import main, run


def test_benchmark_compares_one_process_with_two_and_reads_back(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    args = ["--device", "cpu", "--num-envs", "32", "--iterations", "15", "--log-interval", "5"]
    proc = subprocess.run(
        [sys.executable, "-m", "reports.multi_gpu_benchmark", str(out), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((out / "multi_gpu_benchmark.json").read_text())
    assert result["gpus"] == 2 and result["torch"] and result["git_commit"]
    one, two = result["rows"]
    assert (one["gpus"], two["gpus"]) == (1, 2) and two["world_size"] == 2
    for row in (one, two):
        assert row["intervals"] == 2  # 3 log rows, the first (set-up) left out
        assert row["steps_per_second_min"] <= row["steps_per_second"]
        assert row["steps_per_second"] <= row["steps_per_second_max"]
        # the median interval rate is one of the run's own rows
        metrics = pd.read_csv(out / "runs" / f"eager-{row['gpus']}gpu-32" / "metrics.csv")
        assert row["steps_per_second"] == pytest.approx(
            metrics["interval_env_steps_per_second"].iloc[1:].median()
        )
        assert metrics["env_steps"].iloc[-1] == 15 * 16 * 32 * row["gpus"]
    assert one["speedup"] == 1.0
    assert two["speedup"] == pytest.approx(two["steps_per_second"] / one["steps_per_second"])
    assert two["efficiency"] == pytest.approx(two["speedup"] / 2)
    assert len(pd.read_csv(out / "multi_gpu_benchmark.csv")) == 2


def test_benchmark_names_the_run_that_failed(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    with pytest.raises(SystemExit, match=r"(?s)broken failed \(exit 2\).*env.bogus"):
        run(tmp_path, "broken", 1, ["env.bogus=1"], "cpu")


@pytest.mark.parametrize(
    "bad",
    [
        ["--num-envs", "0"],
        ["--gpus", "1"],
        ["--iterations", "5", "--log-interval", "5"],
        ["--eager", "--eager-iterations", "5", "--log-interval", "5"],
        ["--set", "algo.bogus=1"],
    ],
)
def test_benchmark_refuses_settings_it_cannot_measure(tmp_path: Path, bad: list[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main([str(tmp_path), "--device", "cpu", *bad])
    assert raised.value.code == 2
    assert not (tmp_path / "runs").exists()
