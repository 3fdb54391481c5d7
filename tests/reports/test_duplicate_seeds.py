"""Two runs of one configuration with one seed are one sample: counted once, and named."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from harness.config import load_config
from harness.runner import train
from reports.render import write_report

TINY = [
    "tracking.wandb=disabled",
    "env.num_envs=16",
    "algo.num_steps=8",
    "experiment.log_interval=1",
    "experiment.total_env_steps=512",
    "experiment.device=cpu",
    "experiment.name=tiny",
]


def test_a_repeated_seed_is_counted_once_and_listed(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    # "again" repeats "first" in another folder with other logging settings: one sample.
    started = {"first": "2024-01-01T00:00:00+00:00", "again": "2024-01-02T00:00:00+00:00"}
    for name, extra in (("first", []), ("again", ["experiment.checkpoint_interval=3"])):
        train(load_config(overrides=[*TINY, *extra]), run_dir=runs / name)
        meta_path = runs / name / "meta.json"
        meta = json.loads(meta_path.read_text())
        meta_path.write_text(json.dumps({**meta, "started_at": started[name]}))
    train(load_config(overrides=[*TINY, "experiment.seed=1"]), run_dir=runs / "seed1")

    out = tmp_path / "report"
    write_report([runs], out, reps=50)
    finals = pd.read_csv(out / "tables" / "final_returns.csv")
    assert finals["seeds"].tolist() == [2]  # seeds 0 and 1, not 0, 0 and 1
    configs = pd.read_csv(out / "tables" / "configurations.csv")
    assert configs["seeds"].tolist() == ["0, 1"]
    manifest = json.loads((out / "manifest.json").read_text())
    [note] = manifest["duplicate_seeds"]
    assert note.startswith(f"{runs / 'first'}: ") and f"as {runs / 'again'}," in note
    assert "seed 0" in note and "Duplicate seeds" in manifest["sections"]
    assert note in (out / "report.md").read_text()
