"""Gather run directories, studies and benchmark results into pandas tables.

Nothing here trains or needs W&B: everything is read from the local files that runs,
studies and ``vecbench bench`` write. An input that cannot be read is named in
``Collection.problems`` and skipped; one read after dropping a damaged part (a metrics row
a crash cut short, rows logged twice) is named in ``Collection.repaired``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import VecbenchError, one_line
from harness.tracking import CONFIG_FILE
from reports.run_reader import read_run


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
            row, curve, repair = read_run(run_dir)
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
    if path.name in ("meta.json", "summary.json"):
        return False
    try:  # stat too: a dangling link or a file removed meanwhile is not a bench file
        return path.stat().st_size <= 50_000_000 and _is_bench(json.loads(path.read_text()))
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


def _read_journal(path: Path, problems: list[str]) -> list[StudyData]:
    import optuna

    try:
        storage = _journal_storage(path)
        names = optuna.get_all_study_names(storage)
    except Exception as err:  # a damaged journal raises from deep inside optuna
        problems.append(f"{path}: skipped (unreadable study journal: {err})")
        return []
    return [_study(storage, name, str(path)) for name in names]


def _read_storage(url: str, names: list[str], problems: list[str]) -> list[StudyData]:
    """The studies ``names`` (all when empty) of the storage ``url``: a database URL, a
    ``journal:<path>`` or a journal file's plain path, as `vecbench study status` takes."""
    from studies.storage import journal_url

    url = journal_url(url)
    storage, known = _open_storage(url)
    out = []
    for name in names or known:
        if name not in known:
            problems.append(f"study {name!r}: not in the storage (known: {', '.join(known)})")
            continue
        out.append(_study(storage, name, url.split("@")[-1]))
    return out


def _open_storage(url: str) -> tuple[Any, list[str]]:
    """The Optuna storage at ``url`` (after `journal_url`) and its study names. A file it
    names must exist: Optuna creates a missing journal or SQLite file, and a report only
    reads."""
    import optuna

    from studies.storage import engine_kwargs, redact

    missing = _missing_file(url)
    if missing:
        raise ReportError(f"storage {redact(url)}: {missing}")
    try:
        if url.startswith("journal:"):
            storage = _journal_storage(Path(url[len("journal:") :]))
        else:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))
        return storage, optuna.get_all_study_names(storage)
    except Exception as err:  # optuna and sqlalchemy raise many kinds for a bad storage
        why = redact(one_line(str(err), 300), url)
        raise ReportError(f"storage {redact(url)}: cannot be read ({why})") from None


def _missing_file(url: str) -> str | None:
    """Why the file of a journal or SQLite ``url`` cannot be read, None when it can (or
    when the URL names no file: a server, an in-memory database)."""
    if url.startswith("journal:"):
        path = url[len("journal:") :]
    else:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            parsed = make_url(url)
        except ArgumentError:  # opening it reports what is wrong
            return None
        path = parsed.database or ""
        if parsed.get_backend_name() != "sqlite" or path in ("", ":memory:"):
            return None
        if parsed.query.get("uri") or path.startswith("file:"):  # SQLite URI filename
            return None
    if not Path(path).exists():
        return f"{path} does not exist"
    return None if Path(path).is_file() else f"{path} is not a file"


def _journal_storage(path: Path) -> Any:
    """A journal file opened as `vecbench study` opens it; reading it takes no lock."""
    import optuna

    from studies.storage import journal_backend

    return optuna.storages.JournalStorage(journal_backend(path))


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
