"""The vecbench command: what a user types, what they read back."""

from __future__ import annotations

import json
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
        (
            ["train", "--set", "env.num_envs=-1"],
            "error: --set: env.num_envs must be > 0 and < 2**31, got -1",
        ),
        (
            ["train", "--set", "env.num_envs=99999999999999999999"],
            "error: --set: env.num_envs must be > 0 and < 2**31, got 99999999999999999999",
        ),
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
        (["train", "--set", "foo=1"], "error: --set: foo is not a known key (known: algo, env"),
        (["train", "--set", "experiment.sed=1"], "error: --set: experiment.sed is not a known"),
        (
            ["train", "--set", "env.randomization.pole_mass.lowx=1"],
            "error: --set: env.randomization.pole_mass.lowx is not a known key",
        ),
        (["train", "--set", "env.num_envs=abc"], "error: --set: env.num_envs must be an integer"),
        (["train", "--set", "env.num_envs="], "error: --set: env.num_envs must be an integer"),
        (
            ["train", "--set", "tracking.wandb=maybe"],
            "error: --set: tracking.wandb must be one of 'offline', 'online', 'disabled'",
        ),
        (
            ["train", "--set", "algo.actor_hidden=[64,-1]"],
            "error: --set: algo.actor_hidden widths must be > 0",
        ),
        (["train", "--set", "algo.name=sac"], "error: algo.name sac needs continuous actions"),
    ],
)
def test_bad_input_is_one_clear_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert err.count("\n") == 1 and "Traceback" not in err


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
    assert err[-1].endswith("every row so far and no checkpoint; try a lower learning rate "
                            "or max_grad_norm")  # fmt: skip
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    assert "Traceback" not in "\n".join(err)


BENCH = json.dumps(
    [
        {
            "mode": "env",
            "num_envs": 64,
            "steps_per_second": 1.0,
            "gpu_memory_peak_mb": 0.0,
            "device_name": "cpu",
        }
    ]
).encode()  # the least `vecbench report` takes as a bench result
BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)  # nine levels of nine aliases: 9**9 strings once expanded


@pytest.mark.parametrize(
    ("argv", "files", "message"),
    [
        (
            ["train", "--set", "algo.lr=[1,"],
            {},
            "error: --set algo.lr: not valid YAML at line 1, column 4: expected the node content",
        ),
        (
            ["train", "--config", "{tmp}/latin1.yaml"],
            {"latin1.yaml": b"\xff\xfealgo:\n  lr: 1\n"},
            "error: {tmp}/latin1.yaml: not UTF-8 text (byte 0xff at offset 0)",
        ),
        (
            ["train", "--config", "{tmp}/broken.yaml"],
            {"broken.yaml": b"env:\n  num_envs: [1,\n  x: 2\n"},
            "error: {tmp}/broken.yaml: not valid YAML at line 4, column 1: expected ',' or ']', "
            "but got '<stream end>' (while parsing a flow sequence at line 2, column 13)",
        ),
        (
            ["train", "--config", "{tmp}/bomb.yaml"],
            {"bomb.yaml": BOMB.encode()},
            "error: {tmp}/bomb.yaml: not valid YAML at line 5, column 4: aliases expand to more "
            "than 10,000 values",
        ),
        (
            ["train", "--config", "{tmp}/self.yaml"],
            {"self.yaml": b"env: &e {x: *e}\n"},
            "error: {tmp}/self.yaml: not valid YAML at line 1, column 6: an alias refers to itself",
        ),
        (["train", "--config", "{tmp}"], {}, "error: {tmp}: is a directory, not a YAML file"),
        (
            ["train", "--device", "cuda:x"],
            {},
            "error: --device must be auto, cpu, cuda or cuda:K, got 'cuda:x'",
        ),
        (
            ["train", "--device", "tpu"],
            {},
            "error: --device must be auto, cpu, cuda or cuda:K, got 'tpu'",
        ),
        (
            ["report", "{tmp}", "-o", "{tmp}/taken"],
            {"taken": b"keep me"},
            "error: {tmp}/taken: -o names an existing file; give a directory",
        ),
        (
            ["report", "{tmp}/bench.json", "-o", "{tmp}/blocker/out"],
            {
                "bench.json": BENCH,
                "blocker": b"a file",
            },
            "error: {tmp}/blocker/out/figures: Not a directory; check the path and free space",
        ),
        (
            ["train", "--set", "algo.lr=" + "9" * 100 + "x" * 10_000],
            {},
            "error: --set: algo.lr must be a number, got '" + "9" * 100 + "x" * 96 + "...",
        ),
        (
            ["train", "--set", "algo." + "k" * 10_000 + "=1"],
            {},
            "error: --set: algo." + "k" * 192 + "... is not a known key (known: ",
        ),
        (
            ["train", "--set", "algo.num_steps=" + "9" * 5000],
            {},
            "error: --set algo.num_steps: not valid YAML at line 1, column 1: a number of 5,000 "
            "characters is too long",
        ),
        (["train", "--set", "algo.lr=.nan"], {}, "error: --set: algo.lr must be a finite number"),
        (["train", "--set", "algo.lr=1e400"], {}, "error: --set: algo.lr must be a finite number"),
        (
            ["train", "--set", "experiment.stop_at_return=-.inf"],
            {},
            "error: --set: experiment.stop_at_return must be a finite number, got -inf",
        ),
        (
            ["train", "--config", "{tmp}/twice.yaml"],
            {"twice.yaml": b"algo: {lr: 0.001}\nenv: {num_envs: 8}\nalgo: {gamma: 0.9}\n"},
            "error: {tmp}/twice.yaml: not valid YAML at line 3, column 1: key 'algo' is given "
            "twice (first at line 1)",
        ),
        (
            ["train", "--config", "/dev/null"],
            {},
            "error: /dev/null: not a regular file; give a YAML file",
        ),
        (
            ["report", "{tmp}", "--threshold", "abc"],
            {},
            "error: vecbench report: argument --threshold: invalid float value: 'abc' (see "
            "vecbench report --help)",
        ),
        (["frobnicate"], {}, "error: vecbench: argument command: invalid choice: 'frobnicate'"),
        (
            ["train", "--device", ""],
            {},
            "error: --device must be auto, cpu, cuda or cuda:K, got ''",
        ),
    ],
    ids=[
        "set-not-yaml",
        "not-utf8",
        "broken-yaml",
        "alias-bomb",
        "recursive-alias",
        "config-is-dir",
        "device-cuda-x",
        "device-tpu",
        "report-o-is-file",
        "report-o-under-a-file",
        "long-value",
        "long-key",
        "long-number",
        "nan",
        "inf",
        "minus-inf",
        "key-twice",
        "not-a-regular-file",
        "argparse-type",
        "argparse-choice",
        "device-empty",
    ],
)
def test_bad_input_classes_are_one_line_naming_the_key_or_path(
    argv: list[str],
    files: dict[str, bytes],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    import time

    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    start = time.monotonic()
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and len(err) < 1100, err  # one line, the value cut short
    assert err.startswith(message.replace("{tmp}", str(tmp_path))), err
    assert elapsed < 5.0  # the alias bomb is refused, not expanded
    for name, data in files.items():
        assert (tmp_path / name).read_bytes() == data  # nothing given is touched


def test_wandb_tracking_without_the_wandb_package_says_how_to_fix_it(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    argv = ["train", "--run-dir", str(tmp_path / "run"), "--set", *SMALL, "tracking.wandb=offline"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "error: tracking.wandb=offline needs the wandb package: install it (pip install wandb) "
        "or set tracking.wandb=disabled"
    )
