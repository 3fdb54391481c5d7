"""`vecbench eval` keeps its result: eval.json in the run directory, the run's W&B summary
and an eval W&B run; `vecbench bench` is a W&B run of its own too."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.cli import main
from harness.config import load_config
from harness.runner import train
from tests.helpers.wandb_records import logged_config, logged_run, logged_summary

TINY = [
    "env.num_envs=16",
    "algo.num_steps=8",
    "experiment.total_env_steps=512",
    "experiment.log_interval=1",
    "experiment.device=cpu",
]


def test_eval_writes_what_it_printed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    train(load_config(overrides=[*TINY, "tracking.wandb=disabled"]), run_dir=run_dir)
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--episodes", "8", "--set", "env.max_episode_steps=50"]) == 0
    out = capsys.readouterr().out
    printed = re.search(r"mean return ([\d.]+) \+- ([\d.]+) \(mean length ([\d.]+)\) over 8", out)
    assert printed, out
    record = json.loads((run_dir / "eval.json").read_text())
    shown = [f"{record[k]:.1f}" for k in ("mean_return", "std_return", "mean_length")]
    assert shown == list(printed.groups())
    assert record["episodes"] == 8 and record["deterministic"] is True
    assert record["overrides"] == ["env.max_episode_steps=50"]
    assert record["mean_length"] <= 50 and "evaluated_at" in record
    assert not (run_dir / "wandb").exists()  # tracking disabled: no W&B run started
    assert not (run_dir / "eval").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("algo.actor_hidden=[8]", "--set algo.actor_hidden: an evaluation plays the run's policy"),
        ("env.name=arm", "--set env.name: an evaluation plays the run's policy"),
        ("env.action_type=continuous", "--set env.action_type: an evaluation plays"),
        ("experiment.seed=4", "--set experiment.seed: an evaluation plays the run's policy"),
    ],
)
def test_eval_changes_the_env_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture, override: str, message: str
) -> None:
    run_dir = tmp_path / "run"
    train(load_config(overrides=[*TINY, "tracking.wandb=disabled"]), run_dir=run_dir)
    capsys.readouterr()
    for video in ([], ["--video", str(tmp_path / "clip.gif")]):
        assert main(["eval", str(run_dir), "--episodes", "8", "--set", override, *video]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and "Traceback" not in err, err
    assert not (run_dir / "eval.json").exists() and not (tmp_path / "clip.gif").exists()


def test_eval_without_meta_json_still_keeps_its_result(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    train(load_config(overrides=[*TINY, "tracking.wandb=disabled"]), run_dir=run_dir)
    (run_dir / "meta.json").unlink()
    assert main(["eval", str(run_dir), "--episodes", "8"]) == 0
    assert json.loads((run_dir / "eval.json").read_text())["episodes"] == 8
    assert "meta.json: missing; the evaluation is not added" in caplog.text


def test_eval_goes_to_the_runs_wandb_summary(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(load_config(overrides=[*TINY, "tracking.wandb=offline"]), run_dir=run_dir)
    run_id = json.loads((run_dir / "meta.json").read_text())["wandb_run_id"]
    assert main(["eval", str(run_dir), "--episodes", "8", "--stochastic"]) == 0
    record = json.loads((run_dir / "eval.json").read_text())
    training, evaluation = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert evaluation.name == training.name == f"run-{run_id}.wandb"  # the same W&B run
    summary = logged_summary(evaluation)
    assert summary["eval/mean_return"] == record["mean_return"]
    assert summary["eval/episodes"] == 8 and summary["eval/deterministic"] is False


def test_eval_is_a_wandb_run_of_job_type_eval(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = load_config(overrides=[*TINY, "tracking.wandb=offline", "tracking.group=g1"])
    train(config, run_dir=run_dir)
    assert main(["eval", str(run_dir), "--episodes", "8"]) == 0
    record = json.loads((run_dir / "eval.json").read_text())
    (path,) = run_dir.glob("eval/wandb/offline-run-*/run-*.wandb")
    assert logged_run(path) == {
        "name": "run-eval",
        "job_type": "eval",
        "group": "g1",
        "tags": ["cartpole", "ppo"],
    }
    summary = logged_summary(path)
    assert summary["mean_return"] == record["mean_return"] and summary["episodes"] == 8
    assert logged_config(path)["env"]["num_envs"] == 16  # the trained run's config


def test_bench_is_a_wandb_run_of_job_type_bench(tmp_path: Path) -> None:
    out = tmp_path / "bench" / "cartpole"
    args = ["--num-envs", "16", "64", "--modes", "env", "--steps", "64", "-o", str(out)]
    assert main(["bench", *args, "--set", "tracking.wandb=offline"]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())
    (path,) = (tmp_path / "bench").glob("wandb/offline-run-*/run-*.wandb")
    assert logged_run(path)["job_type"] == "bench"
    assert logged_run(path)["name"] == "bench-cartpole-ppo"
    summary = logged_summary(path)
    for row in rows:
        assert summary[f"steps_per_second/env/{row['num_envs']}"] == row["steps_per_second"]
    assert logged_config(path)["context"]["bench"]["num_envs"] == [16, 64]
