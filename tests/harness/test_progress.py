"""What a user sees while work runs and around it: progress lines with elapsed time and an
ETA, a study's "k of n trials", `vecbench --version` and `vecbench config show`."""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

import yaml

from harness.cli import main
from harness.config import config_from_dict, load_config
from harness.progress import duration, elapsed_and_eta, run_line
from harness.runner import train
from studies.run import run_study
from studies.spec import load_study


def test_durations_read_as_people_read_them() -> None:
    assert [duration(s) for s in (0.4, 42, 185, 3725)] == [
        "0 s",
        "42 s",
        "3 min 05 s",
        "1 h 02 min",
    ]
    assert elapsed_and_eta(65, 40) == "1 min 05 s elapsed, eta 40 s"
    assert elapsed_and_eta(3, float("nan")) == "3 s elapsed, eta ?"


def test_progress_line_gives_elapsed_time_and_eta_from_the_interval_rate() -> None:
    row = {
        "iteration": 10,
        "env_steps": 20_000,
        "wall_time_s": 12.0,
        "interval_env_steps_per_second": 1_000.0,
        "episode_return": 50.0,
        "episode_length": 50.0,
    }
    line = run_line(row, total_iterations=50, total_env_steps=100_000)
    assert line.endswith("| 12 s elapsed, eta 1 min 20 s")  # 80,000 steps at 1,000 a second


def test_a_run_logs_elapsed_and_eta(tmp_path: Path, caplog) -> None:
    config = load_config(
        None,
        [
            "tracking.wandb=disabled",
            "experiment.device=cpu",
            "env.num_envs=16",
            "experiment.total_env_steps=1024",
            "experiment.log_interval=2",
        ],
    )
    with caplog.at_level(logging.INFO, logger="vecbench.run"):
        train(config, run_dir=tmp_path / "run")
    lines = [m for m in caplog.messages if m.startswith("iter")]
    assert len(lines) == 2 and all(re.search(r"\d+ s elapsed, eta ", m) for m in lines)
    assert lines[-1].endswith("eta 0 s")


def test_a_study_says_k_of_n_trials_with_an_eta(tmp_path: Path, caplog) -> None:
    path = tmp_path / "s.yaml"
    study = {
        "name": "s",
        "study_dir": str(tmp_path / "s"),
        "space": {"algo.lr": {"type": "float", "low": 1e-4, "high": 1e-3}},
        "n_trials": 2,
        "config": {
            "tracking": {"wandb": "disabled"},
            "env": {"num_envs": 16},
            "experiment": {"total_env_steps": 512},
        },
    }
    path.write_text(yaml.safe_dump(study))
    with caplog.at_level(logging.INFO, logger="vecbench"):
        run_study(load_study(path))
    lines = [m for m in caplog.messages if m.startswith("study s: ") and "done" in m]
    assert [m.split(" | ")[0] for m in lines] == [
        "study s: 1 of 2 trials done",
        "study s: 2 of 2 trials done",
    ]
    assert lines[-1].endswith("eta 0 s")


def test_version_names_the_package_and_the_commit(capsys) -> None:
    assert main(["--version"]) == 0
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    assert capsys.readouterr().out.strip() == f"vecbench 0.1.0 (commit {head[:12]})"


def test_config_show_prints_the_resolved_config_that_loads_back(tmp_path: Path, capsys) -> None:
    file = tmp_path / "my.yaml"
    file.write_text("env: {num_envs: 1024}\n")
    assert main(["config", "show", "--config", str(file), "--set", "algo.lr=0.002"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["env"]["num_envs"] == 1024 and shown["algo"]["lr"] == 0.002
    assert config_from_dict(shown, "shown") == load_config(file, ["algo.lr=0.002"])
    assert main(["config", "show", "--set", "algo.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "algo.lrr is not a known key" in err
    # --set given twice: both count (the later one wins where they name the same key)
    argv = ["config", "show", "--set", "algo.lr=0.002", "env.num_envs=8", "--set", "algo.lr=0.003"]
    assert main(argv) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["env"]["num_envs"] == 8 and shown["algo"]["lr"] == 0.003


def test_config_keys_lists_every_field_with_its_meaning(capsys) -> None:
    """Every field of every config class is listed once in its section, with a meaning
    (the comment that explains it in the code), its type and its default."""
    import dataclasses

    from harness.keys import all_keys
    from harness.registry import ALGO_CONFIGS, ENV_CONFIGS

    keys = all_keys()
    assert [k.path for k in keys if not k.meaning] == []
    sections = {(k.section, k.path) for k in keys}
    assert len(sections) == len(keys)
    for cls in [*ENV_CONFIGS.values(), *ALGO_CONFIGS.values()]:
        listed = {k.path.split(".", 1)[1] for k in keys if k.path.startswith(("env.", "algo."))}
        assert {f.name for f in dataclasses.fields(cls)} <= listed, cls
    assert main(["config", "keys"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.split()[:1] == ["algo.lr"])
    assert row.split()[1:3] == ["float", "0.0003"] and "learning rate" in row
    assert "env.randomization.<parameter>.low" in out
