"""One run directory as a report reads it: a row of the runs table and a learning curve.

Each file is checked as it is read, since a file damaged or replaced after the run wrote it
must not pass for data nor stop the whole report: damage is a `RunDirError` naming the file
(and the key or line), and `collect` skips the run with it. Damage that can be undone
without guessing (a metrics row a crash cut short, rows logged twice) is repaired and named.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.config import RunConfig, config_hash, digest, semantic_dict
from harness.errors import RunDirError, shown
from harness.tracking import META_FILE, METRICS_FILE, SUMMARY_FILE, RunStore

# summary.json's figures in the runs table; each a number or null (NaN) where present.
SUMMARY_NUMBERS = (
    "final_return",
    "best_return",
    "env_steps",
    "wall_time_s",
    "env_steps_per_second",
    "gpu_memory_peak_mb",
)
# meta.json's entries in the runs table; each text or null where present.
META_TEXTS = ("device_name", "torch", "cuda", "git_commit", "started_at")
LINES_SHOWN = 10  # the most line numbers a repair note lists


def config_key(config: RunConfig) -> str:
    """Hash of a run's config without what differs between seeds of one configuration:
    `config_hash`'s settings less the seed."""
    data = semantic_dict(config)
    del data["experiment"]["seed"]
    return digest(data, 8)


def read_run(run_dir: Path) -> tuple[dict[str, Any], pd.DataFrame, str | None]:
    """The run's row of the runs table, its learning curve, and what was repaired to
    read it (None when nothing was). Raises `RunDirError` naming the damaged file."""
    store = RunStore.open(run_dir)
    if not (run_dir / METRICS_FILE).is_file():
        raise RunDirError(f"{run_dir / METRICS_FILE}: missing, the run never logged")
    config = store.config()
    summary = _summary(store)
    meta = _meta(store)
    metrics, repaired = _metrics(store)
    context = meta.get("context") or {}
    key = config_key(config)
    env = config.env
    task = env.name + (f"-{env.action_type}" if hasattr(env, "action_type") else "")
    if context:
        label = f"{context['study']} #{context['trial']}"
        params = context.get("params") or {}
        if 0 < len(params) <= 3:
            label += " (" + ", ".join(f"{k.split('.')[-1]}={v}" for k, v in params.items()) + ")"
    else:
        label = config.experiment.name or f"{env.name}/{config.algo.name} {key[:6]}"
    max_return = env.max_return
    row = {
        "run_id": str(run_dir),
        "label": label,
        "config_key": key,
        "task": task,
        "env": env.name,
        "algo": config.algo.name,
        "num_envs": env.num_envs,
        "seed": config.experiment.seed,
        **{k: summary.get(k, math.nan) for k in SUMMARY_NUMBERS},
        "max_return": max_return if max_return is not None else math.nan,
        "study": context.get("study"),
        "trial": context.get("trial"),
        **{k: meta.get(k) for k in META_TEXTS},
        # Recomputed: meta.json of runs older than the semantic hash holds a whole-config one.
        "config_hash": config_hash(config),
    }
    curve = metrics.assign(run_id=str(run_dir), label=label, task=task)
    return row, curve, repaired


def _summary(store: RunStore) -> dict[str, Any]:
    """summary.json of a completed run, its figures numbers (NaN where null)."""
    path = store.dir / SUMMARY_FILE
    summary = store.summary()  # missing for runs that did not finish: reported, skipped
    completed = summary.get("completed", False)
    if not isinstance(completed, bool):
        raise RunDirError(f"{path}: completed is {shown(completed)}, not true or false")
    if not completed:
        raise RunDirError(f"{path}: the run did not complete")
    for key in SUMMARY_NUMBERS:
        value = summary.get(key, math.nan)
        # bool is an int to Python, never a figure here
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RunDirError(f"{path}: {key} is {shown(value)}, not a number")
    return summary


def _meta(store: RunStore) -> dict[str, Any]:
    """meta.json, its texts text and its context a study trial's (study, trial, params)."""
    path = store.dir / META_FILE
    meta = store.meta()
    for key in META_TEXTS:
        value = meta.get(key)
        if value is not None and not isinstance(value, str):
            raise RunDirError(f"{path}: {key} is {shown(value)}, not text")
    context = meta.get("context") or {}
    if not isinstance(context, dict) or (context and not {"study", "trial"} <= context.keys()):
        raise RunDirError(f"{path}: context is {shown(context)}, not a study, trial and params")
    params = context.get("params") or {}
    if not isinstance(params, dict):
        raise RunDirError(f"{path}: context.params is {shown(params)}, not a mapping")
    return meta


def _metrics(store: RunStore) -> tuple[pd.DataFrame, str | None]:
    """metrics.csv as a frame with one row per env_steps, in env_steps order, and what was
    repaired to make it so (None when nothing was)."""
    path = store.dir / METRICS_FILE
    table = store.read_metrics()  # damage other than a cut-off last row raises: skipped
    twice = sorted({c for c in table.columns if table.columns.count(c) > 1})
    if twice:  # pandas would rename one and read its numbers as another column's
        raise RunDirError(f"{path}: damaged header, {', '.join(twice)} named twice")
    absent = [c for c in ("env_steps", "episode_return") if c not in table.columns]
    if absent:
        raise RunDirError(f"{path}: damaged header, no {', '.join(absent)} column")
    metrics = table.frame()
    if metrics.empty:
        raise RunDirError(f"{path}: holds no rows")
    steps = metrics["env_steps"]
    unknown = np.flatnonzero(~np.isfinite(steps.to_numpy(dtype=float)))
    if unknown.size:  # lines are rows + 2: the header is line 1, and no line is skipped
        cell = table.rows[unknown[0]][table.columns.index("env_steps")]
        raise RunDirError(
            f"{path}: damaged at line {unknown[0] + 2}: env_steps is {shown(cell)}, not a count"
        )
    repairs = [table.repaired] if table.repaired else []
    if steps.duplicated().any() or not steps.is_monotonic_increasing:
        metrics, note = _one_row_per_step(metrics)
        repairs.append(note)
    return metrics, "; ".join(repairs) or None


def _one_row_per_step(metrics: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The last row logged at each env_steps, in env_steps order, and a note saying which
    lines were dropped. Rows logged twice come from two processes that resumed the run at
    once, each logging the steps after the checkpoint; the later row is the newer one."""
    kept = metrics.drop_duplicates("env_steps", keep="last")
    dropped = [int(i) + 2 for i in metrics.index.difference(kept.index)]
    notes = []
    if dropped:
        shown_lines = ", ".join(map(str, dropped[:LINES_SHOWN]))
        more = f" and {len(dropped) - LINES_SHOWN} more" if len(dropped) > LINES_SHOWN else ""
        notes.append(
            f"dropped line{'s' * (len(dropped) > 1)} {shown_lines}{more} of metrics.csv, "
            "env_steps logged again further down"
        )
    if not kept["env_steps"].is_monotonic_increasing:
        notes.append("put the rows of metrics.csv in env_steps order")
    ordered = kept.sort_values("env_steps", kind="stable").reset_index(drop=True)
    return ordered, "; ".join(notes)
