"""Damaged run files in a report: a metrics row cut off mid-write is dropped and the run
listed under "Repaired inputs"; other damage skips the run under "Skipped inputs"; the
inputs themselves are never rewritten."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from harness.config import load_config
from harness.errors import RunDirError
from harness.runner import train
from harness.tracking import RunStore
from reports.collect import collect
from reports.render import write_report


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = load_config(
        overrides=[
            "tracking.wandb=disabled",
            "env.num_envs=64",
            "algo.num_steps=8",
            "experiment.log_interval=2",
            "experiment.total_env_steps=5120",  # 5 rows
        ]
    )
    return train(config, run_dir=tmp_path_factory.mktemp("runs") / "run").run_dir


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def test_row_cut_off_mid_write_is_dropped_and_listed(finished_run: Path, tmp_path: Path) -> None:
    run = copy_run(finished_run, tmp_path / "inputs" / "cut")
    metrics = run / "metrics.csv"
    whole = pd.read_csv(metrics)
    text = metrics.read_bytes()
    last_row = text.rstrip(b"\r\n").rsplit(b"\n", 1)[1]
    cut = text[: len(text) - len(last_row) // 2 - 2]  # half the last row, no line end
    metrics.write_bytes(cut)

    collection = collect([tmp_path / "inputs"])
    curve = collection.curves
    assert len(curve) == len(whole) - 1
    assert curve["episode_return"].iloc[-1] == pytest.approx(whole["episode_return"].iloc[-2])
    assert curve["env_steps"].iloc[-1] == whole["env_steps"].iloc[-2]
    note = f"{run}: dropped line {len(whole) + 1} of metrics.csv, a row cut off mid-write"
    assert collection.repaired == [note] and collection.problems == []

    out = tmp_path / "report"
    write_report([tmp_path / "inputs"], out, reps=100)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["repaired"] == [note] and manifest["problems"] == []
    assert "<h2>Repaired inputs</h2>" in (out / "report.html").read_text()
    assert f"## Repaired inputs\n\n- {note}" in (out / "report.md").read_text()
    assert metrics.read_bytes() == cut  # the input is read, never rewritten


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda row: row.replace(",", ",,", 1), "{n} cells for {m} columns"),
        (lambda row: "1.0x" + row[row.index(",") :], "{first} is '1.0x', not a number"),
        (lambda row: "\x00\x01" + row, "{first} is '\\x00\\x01"),
    ],
    ids=["extra-cell", "non-numeric-cell", "binary-garbage"],
)
def test_damaged_metrics_skip_the_run(finished_run, tmp_path: Path, damage, message: str) -> None:
    good = copy_run(finished_run, tmp_path / "inputs" / "good")
    bad = copy_run(finished_run, tmp_path / "inputs" / "bad")
    lines = (bad / "metrics.csv").read_text().splitlines(keepends=True)
    n_columns = len(lines[0].split(","))
    lines[2] = damage(lines[2])
    (bad / "metrics.csv").write_text("".join(lines))

    with pytest.raises(RunDirError) as err:
        RunStore.open(bad).metrics()
    text = str(err.value)
    assert text.startswith(f"{bad / 'metrics.csv'}: damaged at line 3: ") and "\n" not in text
    first = lines[0].split(",")[0]
    assert message.format(n=n_columns + 1, m=n_columns, first=first) in text

    out = tmp_path / "report"
    write_report([tmp_path / "inputs"], out, reps=100)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["problems"] == [f"{bad}: skipped ({text})"] and manifest["repaired"] == []
    assert "<h2>Skipped inputs</h2>" in (out / "report.html").read_text()
    runs = collect([tmp_path / "inputs"]).runs
    assert list(runs["run_id"]) == [str(good)]


def test_bench_rows_without_their_machine_are_reported_and_listed(tmp_path: Path) -> None:
    """A bench file with only the required keys (mode, num_envs, steps_per_second), as a
    hand-written or other tool's file has: its figures are in the report, the missing
    machine columns are named under "Repaired inputs", nothing else in the file is lost."""
    rows = [
        {"mode": "env", "num_envs": n, "steps_per_second": 1000.0 * n, "note": "by hand"}
        for n in (64, 256, 1024)
    ]
    (tmp_path / "bench.json").write_text(json.dumps(rows))
    out = tmp_path / "report"
    write_report([tmp_path / "bench.json"], out, reps=100)
    manifest = json.loads((out / "manifest.json").read_text())
    missing = "device_name, driver, torch, cuda, git_commit"
    assert manifest["repaired"] == [f"{tmp_path / 'bench.json'}: no {missing} (shown as missing)"]
    throughput = pd.read_csv(out / "tables" / "throughput.csv")
    assert list(throughput["steps_per_second"]) == [64_000.0, 256_000.0, 1_024_000.0]
    assert list(collect([tmp_path / "bench.json"]).bench["note"]) == ["by hand"] * 3
