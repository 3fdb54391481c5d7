"""Read back what W&B wrote to an offline run file (``run-<id>.wandb``), through
`harness.wandb_files.read_records`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.wandb_files import read_records, run_file  # noqa: F401 (run_file: for the tests)


def finished_records(path: Path, wait_s: float = 30.0) -> list[Any]:
    """The records of a finished run. W&B's service writes the file asynchronously; on a
    loaded machine records land after ``finish()`` returns, so the file is read again
    until its last record, ``exit``, is there (or ``wait_s`` has passed)."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        records = read_records(path)
        done = any(r.WhichOneof("record_type") == "exit" for r in records)
        if done or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def logged_config(path: Path) -> dict[str, Any]:
    """The config the run was given (W&B stores each top-level key as a JSON value)."""
    config: dict[str, Any] = {}
    for record in finished_records(path):
        kind = record.WhichOneof("record_type")
        items = []
        if kind == "config":
            items = record.config.update
        elif kind == "run":
            items = record.run.config.update
        for item in items:
            if item.key.startswith("_"):
                continue
            config[item.key] = json.loads(item.value_json)
    return config


def logged_summary(path: Path) -> dict[str, Any]:
    """The run's summary: its summary updates merged in order."""
    summary: dict[str, Any] = {}
    for record in finished_records(path):
        if record.WhichOneof("record_type") == "summary":
            summary.update({i.key: json.loads(i.value_json) for i in record.summary.update})
    return summary


def logged_history(path: Path) -> list[dict[str, Any]]:
    """Each ``run.log`` call as a dict, in order."""
    rows = []
    for record in finished_records(path):
        if record.WhichOneof("record_type") != "history":
            continue
        row = {}
        for item in record.history.item:
            key = item.key or "/".join(item.nested_key)
            if not key.startswith("_"):
                row[key] = json.loads(item.value_json)
        rows.append(row)
    return rows


def logged_run(path: Path) -> dict[str, Any]:
    """The run record's identity: display name, job type, group and tags."""
    for record in finished_records(path):
        if record.WhichOneof("record_type") == "run":
            run = record.run
            return {
                "name": run.display_name,
                "job_type": run.job_type,
                "group": run.run_group,
                "tags": list(run.tags),
            }
    raise ValueError(f"{path}: no run record")
