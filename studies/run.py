"""`vecbench study run` and `vecbench study status`."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Any

import optuna
from optuna.trial import TrialState

from harness.errors import ConfigError, VecbenchError
from studies.engine import Worker, budget, budget_used, exit_reason, open_study, reason
from studies.spec import LoadedStudy, with_batch_trials
from studies.storage import journal_url, redact
from studies.worker_main import STORAGE_ENV

log = logging.getLogger("vecbench")


def run_study(
    loaded: LoadedStudy,
    workers: int = 1,
    storage_url: str | None = None,
    gpus: list[str] | None = None,
    batch_trials: int | None = None,
) -> optuna.Study:
    """Run (or resume) a study with ``workers`` processes; returns it when the budget is spent."""
    if workers <= 0:
        raise ConfigError(f"--workers must be > 0, got {workers}")
    if gpus:
        check_gpus(gpus)
    loaded = with_batch_trials(loaded, batch_trials)
    study, storage = open_study(loaded, storage_url)  # creates it once, before any worker
    before = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    log.info(
        "study %s: %d of %d trials used, storage %s, %d worker(s)",
        loaded.spec.name,
        budget_used(study),
        budget(loaded.spec),
        redact(storage.url),
        workers,
    )
    if workers == 1 and not gpus:
        Worker(loaded, storage_url).run()
    else:
        _run_worker_processes(loaded, workers, storage.url, gpus or [])
    _check_not_all_failed(loaded, study, before)
    return study


class StudyFailedError(VecbenchError):
    """Every trial a `study run` ended failed: the study must not look like a success."""


def _check_not_all_failed(
    loaded: LoadedStudy, study: optuna.Study, before: dict[int, TrialState]
) -> None:
    """Raise if the trials that ended in this run (new ones, and ones waiting or running
    before it) all failed; one failed trial among others is the study's business."""
    ended = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and not (t.number in before and before[t.number].is_finished())
    ]
    if not ended or any(t.state != TrialState.FAIL for t in ended):
        return
    first = ended[0]
    raise StudyFailedError(
        f"{loaded.path}: all {len(ended)} trial(s) of this run failed; first error: "
        f"trial {first.number}: {failure_reason(study, first)}"
    )


def failure_reason(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    """Why ``trial`` failed, in one line: its ``error`` user attr, or that its worker was lost."""
    if trial.user_attrs.get("error"):
        return reason(str(trial.user_attrs["error"]))
    retries = [
        t.number
        for t in study.get_trials(deepcopy=False)
        if t.system_attrs.get("failed_trial") == trial.number
    ]
    if retries:
        return f"its worker was lost; retried as trial {retries[0]}"
    return "no error recorded (its worker was lost?)"


def check_gpus(gpus: list[str]) -> None:
    """Refuse --gpus that torch cannot see here: a worker pinned to a missing device would
    quietly train on the CPU while its run records the GPU. An ID may list several devices
    ("0,1", as CUDA_VISIBLE_DEVICES does); IDs that are not indices (GPU UUIDs, MIG names)
    are left to CUDA."""
    import torch

    count = torch.cuda.device_count()
    given = f"--gpus {' '.join(gpus)}"
    if count == 0:
        raise ConfigError(f"{given}: torch sees no CUDA device")
    indices = [int(i) for g in gpus for i in g.split(",") if i.strip().isdigit()]
    if indices and max(indices) >= count:
        raise ConfigError(
            f"{given}: torch sees {count} CUDA device(s), so indices run 0..{count - 1}"
        )


def _run_worker_processes(loaded: LoadedStudy, workers: int, url: str, gpus: list[str]) -> None:
    procs = []
    # Workers share the CPU: give each trial its share of threads, or torch's thread pools
    # oversubscribe the cores and every trial crawls.
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    for index in range(workers):
        cmd, env = worker_launch(loaded, url, index, threads, gpus)
        procs.append(subprocess.Popen(cmd, env=env))
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        raise
    failed = [f"worker {i} {exit_reason(c)}" for i, c in enumerate(codes) if c != 0]
    if failed:
        raise VecbenchError(f"{'; '.join(failed)}; see the lines above")


def worker_launch(
    loaded: LoadedStudy, url: str, index: int, threads: str, gpus: list[str]
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of worker ``index``. The storage URL goes in the
    environment: a command line (and a password in it) is visible to every user in `ps`."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", threads)
    env.setdefault("MKL_NUM_THREADS", threads)
    env[STORAGE_ENV] = url
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    cmd = [sys.executable, "-m", "studies.worker_main", str(loaded.path), "--index", str(index)]
    cmd += ["--batch-trials", str(loaded.spec.batch_trials)]
    return cmd, env


def trials_table(study: optuna.Study) -> Any:
    """One row per trial: number, state, value(s), duration, params, run directory."""
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        duration = None
        if t.datetime_start is not None:
            end = t.datetime_complete or None
            duration = (end - t.datetime_start).total_seconds() if end else None
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        values = t.values or []
        for i in range(len(study.directions)):
            key = f"value_{i}" if len(study.directions) > 1 else "value"
            row[key] = values[i] if i < len(values) else None
        row["duration_s"] = duration
        row.update({f"param:{k}": v for k, v in t.params.items()})
        row["trial_dir"] = t.user_attrs.get("trial_dir")
        rows.append(row)
    return pd.DataFrame(rows)


def study_status(loaded: LoadedStudy, storage_url: str | None = None) -> str:
    from studies.storage import StudyStorage

    spec = loaded.spec
    url = loaded.storage_url(storage_url)
    storage = StudyStorage(url, spec.heartbeat_interval_s, spec.heartbeat_grace_s, spec.max_retries)
    try:
        study = optuna.load_study(study_name=spec.name, storage=storage.optuna)
    except KeyError:
        raise ConfigError(
            f"{loaded.path}: study {spec.name!r} not found in {redact(url)}; run it first"
        ) from None
    table = trials_table(study)
    counts = table["state"].value_counts().to_dict() if len(table) else {}
    lines = [
        f"study {spec.name} ({redact(url)}): {budget_used(study)}/{budget(spec)} trials; "
        + ", ".join(f"{k.lower()} {v}" for k, v in sorted(counts.items()))
    ]
    with_values = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if with_values and len(study.directions) == 1:
        best = study.best_trial
        lines.append(f"best: trial {best.number} value {best.value:.4g} params {best.params}")
    elif with_values:
        lines.append(
            "pareto front: " + ", ".join(f"trial {t.number} {t.values}" for t in study.best_trials)
        )
    if len(table):
        shown = table.drop(columns=["trial_dir"])
        lines.append(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        lines.append(f"trial {t.number} failed: {failure_reason(study, t)}")
    return "\n".join(lines)


def serve_dashboard(
    loaded: LoadedStudy, storage_url: str | None = None, host: str = "127.0.0.1", port: int = 8080
) -> None:
    """optuna-dashboard on the study's storage until interrupted (Ctrl-C)."""
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise ConfigError(
            "study dashboard needs optuna-dashboard: pip install optuna-dashboard "
            "(or pip install -e '.[dashboard]')"
        ) from None
    from studies.storage import StudyStorage

    spec = loaded.spec
    url = journal_url(loaded.storage_url(storage_url))
    missing = url.startswith("journal:") and not os.path.isfile(url[len("journal:") :])
    storage = None if missing else StudyStorage(url, 60.0, 120.0, spec.max_retries)
    names = [] if storage is None else optuna.get_all_study_names(storage.optuna)
    if spec.name not in names:
        raise ConfigError(
            f"{loaded.path}: study {spec.name!r} not found in {redact(url)}; run it first"
        )
    assert storage is not None
    study_id = storage.optuna.get_study_id_from_name(spec.name)
    print(
        f"optuna-dashboard: http://{host}:{port}/dashboard/studies/{study_id} "
        f"(study {spec.name}, {redact(url)}); Ctrl-C stops it",
        flush=True,
    )
    run_server(storage.optuna, host=host, port=port)
