"""The vecbench command: what a user types, what they read back."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.tracking import RunStore

SMALL = [
    "env.num_envs=64",
    "algo.num_steps=8",
    "experiment.total_env_steps=4096",
    "experiment.log_interval=2",
]


def vecbench() -> list[str]:
    exe = shutil.which("vecbench", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "harness.cli"]


def test_console_script_trains_shows_progress_and_says_where(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [*vecbench(), "train", "--wandb", "disabled", "--run-dir", str(run_dir), "--set", *SMALL],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    progress = [line for line in proc.stderr.splitlines() if line.startswith("iter")]
    assert len(progress) == 4  # 8 iterations, a line every 2
    assert all(re.search(r"[\d,]+ steps/s \| return +[\d.]+", line) for line in progress)
    assert f"results: {run_dir}" in proc.stdout
    assert len(RunStore.open(run_dir).metrics()) == 4


def test_train_resume_and_eval_in_process(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    assert main(["train", "--wandb", "disabled", "--run-dir", str(run_dir), "--set", *SMALL]) == 0
    assert (
        main(["train", "--resume", str(run_dir), "--set", "experiment.total_env_steps=8192"]) == 0
    )
    assert RunStore.open(run_dir).summary()["env_steps"] == 8192
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--episodes", "16"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"mean return [\d.]+ \+- [\d.]+ \(mean length [\d.]+\) over 16 episodes", out)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--set", "env.num_envz=4"], "error: --set: env.num_envz is not a known key"),
        (["train", "--set", "env.num_envs=-1"], "error: --set: env.num_envs must be > 0, got -1"),
        (["train", "--set", "env.name=ant"], "error: --set: env.name 'ant' is not registered"),
        (
            ["train", "--set", "env.num_envs=2", "algo.num_steps=2", "algo.num_minibatches=8"],
            "error: algo.num_minibatches must be <= num_steps * num_envs = 4, got 8",
        ),
        (["train", "--config", "missing.yaml"], "error: missing.yaml: config file not found"),
        (["train", "--resume", "no/such/run"], "error: no/such/run: run directory not found"),
        (["train", "--resume", "r", "--config", "c.yaml"], "error: --resume takes its config"),
        (["eval", "no/such/run"], "error: no/such/run: run directory not found"),
        (["eval", "r", "--episodes", "0"], "error: --episodes must be > 0, got 0"),
    ],
)
def test_bad_input_is_one_clear_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert "Traceback" not in err


def test_launch_benchmark_times_a_fresh_process_to_the_threshold() -> None:
    from harness.bench import launch_to_return
    from harness.config import load_config

    config = load_config(overrides=["env.num_envs=256", "experiment.total_env_steps=1000"])
    row = launch_to_return(config, threshold=100.0)  # the budget is raised to reach it
    assert row["final_return"] >= 100.0
    assert row["launch_s"] > row["train_s"] > 0
    assert row["env_steps"] > 1000
    with pytest.raises(RuntimeError, match="short of 500"):
        launch_to_return(config, threshold=500.0, budget=8192)


def test_train_that_diverges_exits_with_one_line(tmp_path, capsys) -> None:
    code = main(
        [
            "train",
            "--wandb",
            "disabled",
            "--run-dir",
            str(tmp_path / "run"),
            "--set",
            "env.num_envs=64",
            "algo.num_steps=8",
            "algo.lr=1e30",
            "experiment.total_env_steps=51200",
            "experiment.log_interval=2",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ") and "training diverged" in err[-1]
    assert "Traceback" not in "\n".join(err)
