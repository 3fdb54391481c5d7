"""Gather run directories, studies and benchmark results into pandas tables.

Nothing here trains or needs W&B: everything is read from the local files that runs,
studies and ``vecbench bench`` write. An input that cannot be read is named in
``Collection.problems`` and skipped; one read after dropping a damaged part (a metrics row
a crash cut short) is named in ``Collection.repaired``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.config import RunConfig, config_hash, digest, semantic_dict
from harness.errors import VecbenchError, one_line
from harness.tracking import CONFIG_FILE, METRICS_FILE, RunStore


class ReportError(VecbenchError):
    """Nothing to report, or an input that cannot be used at all."""


@dataclass
class StudyData:
    name: str
    source: str
    directions: list[str]
    trials: list[Any]  # optuna FrozenTrial
    spec_text: str | None


@dataclass
class Collection:
    runs: pd.DataFrame
    curves: pd.DataFrame
    studies: list[StudyData]
    bench: pd.DataFrame
    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    duplicate_seeds: list[str] = field(default_factory=list)  # runs counted once, and why

    @property
    def empty(self) -> bool:
        return self.runs.empty and not self.studies and self.bench.empty


def collect(
    inputs: list[Path], storage: str | None = None, study_names: list[str] | None = None
) -> Collection:
    """Everything under ``inputs`` (run dirs, study dirs, bench JSON), plus named studies
    from a database ``storage``."""
    problems: list[str] = []
    run_dirs: list[Path] = []
    journals: list[Path] = []
    bench_files: list[Path] = []
    for path in inputs:
        if not path.exists():
            problems.append(f"{path}: does not exist")
            continue
        if path.is_file():
            (journals if path.name.endswith(".log") else bench_files).append(path)
            continue
        run_dirs += sorted({p.parent for p in path.rglob(CONFIG_FILE)})
        journals += sorted(path.rglob("journal.log"))
        bench_files += [p for p in sorted(path.rglob("*.json")) if _looks_like_bench(p)]

    runs, curves, repaired = [], [], []
    for run_dir in dict.fromkeys(run_dirs):
        try:
            row, curve, repair = _read_run(run_dir)
        except (VecbenchError, OSError, ValueError, KeyError) as err:
            problems.append(f"{run_dir}: skipped ({err})")
            continue
        runs.append(row)
        curves.append(curve)
        if repair:
            repaired.append(f"{run_dir}: {repair}")

    studies: list[StudyData] = []
    for journal in dict.fromkeys(journals):
        studies += _read_journal(journal, problems)
    if storage:
        studies += _read_storage(storage, study_names or [], problems)

    bench_rows = []
    for path in dict.fromkeys(bench_files):
        try:
            rows = json.loads(path.read_text())
            if not _is_bench(rows):
                raise ValueError("not a vecbench bench result")
        except (OSError, ValueError) as err:
            problems.append(f"{path}: skipped ({err})")
            continue
        missing = [k for k in BENCH_CONTEXT if any(k not in r for r in rows)]
        if missing:  # written by hand or by another tool: the figures stand, unattributed
            repaired.append(f"{path}: no {', '.join(missing)} (shown as missing)")
        bench_rows += [{**r, "source": str(path)} for r in rows]

    runs_frame, duplicates = drop_duplicate_seeds(pd.DataFrame(runs))
    curves = [c for c in curves if c["run_id"].iloc[0] in set(runs_frame.get("run_id", []))]
    collection = Collection(
        runs=runs_frame,
        curves=pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(),
        studies=studies,
        bench=_bench_frame(bench_rows),
        problems=problems,
        repaired=repaired,
        duplicate_seeds=duplicates,
    )
    if collection.empty:
        shown = ", ".join(str(p) for p in inputs) or "(no inputs)"
        detail = ("; " + "; ".join(problems)) if problems else ""
        raise ReportError(f"no runs, studies or benchmark results found in {shown}{detail}")
    return collection


def drop_duplicate_seeds(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Runs of one configuration (label and config key) with one seed, counted once.

    Same seed, same config: the same initial weights and random streams, so not an
    independent sample (on another GPU it is nearly the same run; on CPU the streams
    differ, but it still starts from the same weights). The newest by ``started_at``
    is kept, then the one with most env steps: a rerun usually replaces an earlier
    attempt. Returns the kept runs and one line per run left out.
    """
    if runs.empty:
        return runs, []
    key = ["label", "config_key", "seed"]
    ordered = runs.assign(_started=runs["started_at"].fillna("")).sort_values(
        ["_started", "env_steps"], kind="stable"
    )
    dropped = ordered.duplicated(key, keep="last")
    kept = ordered[~dropped].set_index(key)["run_id"]
    notes = [
        f"{r.run_id}: same configuration ({r.label}, config {r.config_key}) and seed {r.seed} "
        f"as {kept[(r.label, r.config_key, r.seed)]}, which is counted instead (newer)"
        for r in ordered[dropped].itertuples()
    ]
    return runs[runs["run_id"].isin(kept)].reset_index(drop=True), sorted(notes)


# What a bench row says of where it was measured, and further columns reports read; a row
# needs only mode, num_envs and steps_per_second (`_is_bench`).
BENCH_CONTEXT = ("device_name", "driver", "torch", "cuda", "git_commit")
BENCH_COLUMNS = (*BENCH_CONTEXT, "gpu_memory_peak_mb", "repeats")


def _bench_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Bench rows as a frame that has every column of BENCH_COLUMNS (NaN where missing)."""
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    return frame.reindex(columns=[*frame.columns, *(k for k in BENCH_COLUMNS if k not in frame)])


def _looks_like_bench(path: Path) -> bool:
    if path.name in ("meta.json", "summary.json") or path.stat().st_size > 50_000_000:
        return False
    try:
        return _is_bench(json.loads(path.read_text()))
    except (OSError, ValueError):
        return False


def _is_bench(rows: Any) -> bool:
    return (
        isinstance(rows, list)
        and bool(rows)
        and all(
            isinstance(r, dict) and {"mode", "num_envs", "steps_per_second"} <= set(r) for r in rows
        )
    )


def config_key(config: RunConfig) -> str:
    """Hash of a run's config without what differs between seeds of one configuration:
    `config_hash`'s settings less the seed."""
    data = semantic_dict(config)
    del data["experiment"]["seed"]
    return digest(data, 8)


def _read_run(run_dir: Path) -> tuple[dict[str, Any], pd.DataFrame, str | None]:
    """The run's row of the runs table, its learning curve, and what was repaired to
    read it (None when nothing was)."""
    store = RunStore.open(run_dir)
    if not (run_dir / METRICS_FILE).is_file():
        raise ReportError("no metrics.csv: the run never logged")
    config = store.config()
    summary = store.summary()  # missing for runs that did not finish: reported, skipped
    if not summary.get("completed", False):
        raise ReportError("the run did not complete")
    meta = store.meta()
    table = store.read_metrics()  # damage other than a cut-off last row raises: skipped
    metrics = table.frame()
    if metrics.empty or "episode_return" not in metrics:
        raise ReportError("metrics.csv holds no rows")
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
        "final_return": summary.get("final_return", math.nan),
        "best_return": summary.get("best_return", math.nan),
        "env_steps": summary.get("env_steps"),
        "wall_time_s": summary.get("wall_time_s"),
        "env_steps_per_second": summary.get("env_steps_per_second", math.nan),
        "gpu_memory_peak_mb": summary.get("gpu_memory_peak_mb", math.nan),
        "max_return": max_return if max_return is not None else math.nan,
        "study": context.get("study"),
        "trial": context.get("trial"),
        "device_name": meta.get("device_name"),
        "torch": meta.get("torch"),
        "cuda": meta.get("cuda"),
        "git_commit": meta.get("git_commit"),
        # Recomputed: meta.json of runs older than the semantic hash holds a whole-config one.
        "config_hash": config_hash(config),
        "started_at": meta.get("started_at"),
    }
    curve = metrics.assign(run_id=str(run_dir), label=label, task=task)
    return row, curve, table.repaired


def _read_journal(path: Path, problems: list[str]) -> list[StudyData]:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    try:
        storage = optuna.storages.JournalStorage(
            JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
        )
        names = optuna.get_all_study_names(storage)
    except Exception as err:  # a damaged journal raises from deep inside optuna
        problems.append(f"{path}: skipped (unreadable study journal: {err})")
        return []
    return [_study(storage, name, str(path)) for name in names]


def _read_storage(url: str, names: list[str], problems: list[str]) -> list[StudyData]:
    import optuna

    from studies.storage import engine_kwargs, redact

    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))
        known = optuna.get_all_study_names(storage)
    except Exception as err:
        why = redact(one_line(str(err), 300), url)
        raise ReportError(f"storage {redact(url)}: cannot be read ({why})") from None
    out = []
    for name in names or known:
        if name not in known:
            problems.append(f"study {name!r}: not in the storage (known: {', '.join(known)})")
            continue
        out.append(_study(storage, name, url.split("@")[-1]))
    return out


def _study(storage: Any, name: str, source: str) -> StudyData:
    import optuna

    study = optuna.load_study(study_name=name, storage=storage)
    return StudyData(
        name=name,
        source=source,
        directions=[d.name.lower() for d in study.directions],
        trials=study.get_trials(deepcopy=False),
        spec_text=study.user_attrs.get("vecbench_spec"),
    )
