"""Where a run's results live: a local run directory (read by reports) and W&B.

Run directory layout::

    config.yaml     the resolved config (reloads with `load_config`)
    meta.json       versions, device, git commit, W&B run id
    metrics.csv     one row per log interval, appended and flushed (survives a crash)
    summary.json    final figures, written when the run ends
    checkpoint.pt   latest training state (written atomically)
    eval.json       the latest `vecbench eval` result (absent until one is run)
    wandb/          W&B's own files (offline by default), and LAST_STEP_FILE
    .training.lock  locked (flock) by the process training the run; names it
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import yaml

from harness.config import (
    POLICY_ENV_WHY,
    RunConfig,
    apply_override,
    config_from_dict,
    config_hash,
    env_override,
    parse_yaml,
    refuse_overrides,
    to_dict,
)
from harness.errors import ConfigError, RunDirError, one_line
from harness.files import atomic_write, read_json, remove_quietly, strict_json, write_error
from harness.metrics_csv import MetricRows, read_metric_rows

CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "checkpoint.pt"
EVAL_FILE = "eval.json"
LAST_STEP_FILE = "vecbench-last-step"  # under wandb/: the last step W&B was sent
LOCK_FILE = ".training.lock"


def git_commit() -> str | None:
    """The commit of the vecbench checkout; VECBENCH_GIT_COMMIT where there is no .git."""
    if os.environ.get("VECBENCH_GIT_COMMIT"):
        return os.environ["VECBENCH_GIT_COMMIT"]
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment_meta(device: torch.device, device_label: str) -> dict[str, Any]:
    return {
        "device": str(device),
        "device_name": device_label,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "driver": _driver_version() if device.type == "cuda" else None,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "python": platform.python_version(),
        "host": platform.node(),
        "git_commit": git_commit(),
        "argv": sys.argv,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _driver_version() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (
        out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    )


class NullStore:
    """Where data-parallel ranks other than 0 "write": nowhere (rank 0 keeps the run)."""

    dir = Path(".")

    def policy_config(self, overrides: list[str] | None) -> RunConfig:
        """The config that eval and videos play the run's policy under: ``overrides`` may
        change its env alone (`env_override`)."""
        refuse_overrides(overrides, env_override, POLICY_ENV_WHY)
        return self.config(overrides)

    def meta(self) -> dict[str, Any]:
        return {}

    def write_meta(self, meta: dict[str, Any]) -> None:
        pass

    def append_metrics(self, row: Mapping[str, float | int]) -> None:
        pass

    def write_summary(self, summary: dict[str, Any]) -> None:
        pass

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        pass


class RunStore:
    """The files of one run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir)

    # Creation and reading ----------------------------------------------------------------

    @classmethod
    def create(
        cls,
        run_dir: Path,
        config: RunConfig,
        meta: dict[str, Any],
        hold: contextlib.ExitStack | None = None,
    ) -> RunStore:
        """A new run directory; with ``hold``, its `lock` is taken (first) and kept there."""
        store = cls(run_dir)
        if (store.dir / METRICS_FILE).exists() or (store.dir / CHECKPOINT_FILE).exists():
            raise RunDirError(
                f"{store.dir}: already holds a run; use --resume {store.dir} or another directory"
            )
        try:
            store.dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise write_error(store.dir, err, "create the run directory") from None
        if hold is not None:
            hold.enter_context(store.lock())  # a second process started on it stops here
        store.write_config(config)
        store.write_meta({**meta, "config_hash": config_hash(config)})
        return store

    def write_config(self, config: RunConfig) -> None:
        atomic_write(self.dir / CONFIG_FILE, yaml.safe_dump(to_dict(config), sort_keys=False))

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Held while a process trains this run: a second `train --resume` (or `--run-dir`)
        of it is refused instead of both appending rows and overwriting summary.json. The
        kernel drops the lock when its process ends, however it ends."""
        return _exclusive(self.dir / LOCK_FILE, self.dir)

    @classmethod
    def open(cls, run_dir: Path) -> RunStore:
        store = cls(run_dir)
        if not store.dir.is_dir():
            raise RunDirError(f"{store.dir}: run directory not found")
        if not (store.dir / CONFIG_FILE).is_file():
            raise RunDirError(f"{store.dir / CONFIG_FILE}: missing; is this a vecbench run?")
        return store

    def config(self, overrides: list[str] | None = None) -> RunConfig:
        path = self.dir / CONFIG_FILE
        try:
            data = parse_yaml(path.read_text(encoding="utf-8"), str(path))
        except ConfigError as err:  # the file vecbench wrote was damaged afterwards
            raise RunDirError(str(err).replace("not valid YAML", "corrupt YAML", 1)) from None
        except (OSError, UnicodeDecodeError) as err:
            raise RunDirError(f"{path}: unreadable ({one_line(str(err), 200)})") from None
        if not isinstance(data, dict):
            raise RunDirError(f"{path}: corrupt, expected a mapping")
        for item in overrides or []:
            apply_override(data, item)
        try:
            return config_from_dict(data, str(path) + (" + --set" if overrides else ""))
        except ConfigError as err:
            raise RunDirError(str(err)) from None

    def policy_config(self, overrides: list[str] | None) -> RunConfig:
        """The config that eval and videos play the run's policy under: ``overrides`` may
        change its env alone (`env_override`)."""
        refuse_overrides(overrides, env_override, POLICY_ENV_WHY)
        return self.config(overrides)

    def meta(self) -> dict[str, Any]:
        return read_json(self.dir / META_FILE)

    def write_meta(self, meta: dict[str, Any]) -> None:
        atomic_write(self.dir / META_FILE, json.dumps(meta, indent=2, default=str))

    def finished(self) -> bool:
        """Whether the run ended with its summary written."""
        return (self.dir / SUMMARY_FILE).is_file()

    def summary(self) -> dict[str, Any]:
        """summary.json, with its nulls (numbers that were NaN) read back as NaN."""
        summary = read_json(self.dir / SUMMARY_FILE)
        return {k: math.nan if v is None else v for k, v in summary.items()}

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Strict JSON: a NaN or infinite number is written as null."""
        atomic_write(self.dir / SUMMARY_FILE, strict_json(summary))

    def write_eval(self, record: dict[str, Any]) -> None:
        """eval.json: the latest `vecbench eval` of this run (strict JSON, as summary.json)."""
        atomic_write(self.dir / EVAL_FILE, strict_json(record))

    # Metrics -----------------------------------------------------------------------------

    def append_metrics(self, row: Mapping[str, float | int]) -> None:
        """Append one row. A row with columns the file lacks (an off-policy algorithm's
        losses start after ``learning_starts``) first rewrites the file with them added."""
        path = self.dir / METRICS_FILE
        new = not path.exists()
        columns = list(row) if new else _csv_header(path)
        added = [k for k in row if k not in columns]
        if added:
            columns += added
            self._rewrite_metrics(columns, None)
        try:
            with path.open("a", newline="") as f:
                end = f.tell()
                try:
                    writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
                    if new:
                        writer.writeheader()
                    writer.writerow({k: _format(row.get(k, math.nan)) for k in columns})
                    f.flush()
                    os.fsync(f.fileno())
                except OSError:
                    with contextlib.suppress(OSError):  # no half row for readers to trip on
                        f.truncate(end)
                    raise
        except OSError as err:
            raise write_error(path, err, "append a metrics row", self.dir) from None

    def truncate_metrics(self, max_env_steps: int) -> None:
        """Drop rows logged after the checkpoint a resumed run starts from."""
        path = self.dir / METRICS_FILE
        if not path.exists():
            return
        self._rewrite_metrics(_csv_header(path), max_env_steps)

    def _rewrite_metrics(self, columns: list[str], max_env_steps: int | None) -> None:
        """Rewrite metrics.csv under ``columns`` (missing values empty), keeping the rows up
        to ``max_env_steps`` (all when None); atomic, so a crash keeps the old file."""
        path = self.dir / METRICS_FILE
        table = read_metric_rows(path)  # a row a crash cut short is dropped here
        rows = [dict(zip(table.columns, row, strict=True)) for row in table.rows]
        if max_env_steps is not None:
            rows = [r for r in rows if _env_steps(r) <= max_env_steps]
        tmp = path.with_suffix(".tmp")
        try:
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=columns, restval="")
                writer.writeheader()
                writer.writerows(rows)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as err:
            remove_quietly(tmp)
            raise write_error(path, err, "rewrite the metrics", self.dir) from None

    def metrics(self) -> Any:
        """The metrics table as a pandas DataFrame (see `read_metrics`)."""
        return self.read_metrics().frame()

    def read_metrics(self) -> MetricRows:
        """metrics.csv checked: a row cut off mid-write is dropped (and named in
        ``repaired``), other damage raises `RunDirError` naming the line."""
        return read_metric_rows(self.dir / METRICS_FILE)

    # Checkpoints -------------------------------------------------------------------------

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Write the training state atomically: a failed write keeps the last checkpoint."""
        path = self.dir / CHECKPOINT_FILE
        tmp = path.with_suffix(".pt.tmp")
        try:
            torch.save(state, tmp)
            os.replace(tmp, path)
        except (OSError, RuntimeError) as err:  # torch's zip writer raises RuntimeError
            remove_quietly(tmp)
            raise write_error(path, err, "write the checkpoint", self.dir) from None

    def has_checkpoint(self) -> bool:
        return (self.dir / CHECKPOINT_FILE).is_file()

    def load_algo(self, algo: Any, state: dict[str, Any]) -> None:
        """``algo`` from a checkpoint's state; one that does not fit the run's config (a
        checkpoint.pt copied from another run) is a RunDirError naming the file."""
        try:
            algo.load_state_dict(state["algo"])
        except (RuntimeError, KeyError, TypeError, ValueError) as err:
            raise RunDirError(
                f"{self.dir / CHECKPOINT_FILE}: does not fit the run's {CONFIG_FILE} "
                f"({one_line(str(err), 200)})"
            ) from None

    def load_checkpoint(
        self, device: torch.device, keys: tuple[str, ...] = ("algo",)
    ) -> dict[str, Any]:
        """checkpoint.pt, which must hold ``keys`` (eval and export need the algorithm's
        state, a resume the training counters too)."""
        path = self.dir / CHECKPOINT_FILE
        if not path.is_file():
            raise RunDirError(f"{path}: no checkpoint in this run directory")
        try:
            state = torch.load(path, map_location=device, weights_only=False)
        except Exception as err:  # torch raises many types for a damaged file
            raise RunDirError(
                f"{path}: cannot read checkpoint ({one_line(str(err), 200)})"
            ) from None
        missing = [k for k in keys if k not in state] if isinstance(state, dict) else list(keys)
        if missing:
            raise RunDirError(f"{path}: not a vecbench checkpoint (no {', '.join(missing)})")
        return state


@contextlib.contextmanager
def _exclusive(path: Path, run_dir: Path) -> Any:
    import fcntl

    try:
        handle = path.open("a+")
    except OSError as err:
        raise write_error(path, err, "lock the run", run_dir) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunDirError(
                f"{run_dir}: {holder} is training this run; wait for it to end or stop it, "
                "then resume"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {platform.node()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_name(config: RunConfig, run_dir: Path, context: Mapping[str, Any] | None) -> str:
    """A study's runs as <study>-t<trial>-s<seed> (their folders are all seed-S); other runs
    by their folder's name."""
    if context and "study" in context and "trial" in context:
        return f"{context['study']}-t{context['trial']}-s{config.experiment.seed}"
    return Path(run_dir).name


class WandbTracker:
    """Weights & Biases, offline by default; ``disabled`` makes every call a no-op. Job
    types: train (a run), eval (`vecbench eval`), bench (`vecbench bench`). A training
    segment (``start_step``: the env steps it starts from) also writes TensorBoard
    event files with tracking.tensorboard (harness/tensorboard.py)."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: Path,
        run_id: str | None,
        context: Mapping[str, Any] | None = None,
        job_type: str = "train",
        start_step: int | None = None,
        name: str | None = None,
    ) -> None:
        self.run = None
        self.last_step = -1  # env steps of the last row W&B was sent, in any segment
        self._step_file = Path(run_dir) / "wandb" / LAST_STEP_FILE
        tracking = config.tracking
        self.tensorboard = None
        if tracking.tensorboard and start_step is not None:
            from harness.tensorboard import TensorBoardWriter

            self.tensorboard = TensorBoardWriter(config, run_dir, start_step)
        if tracking.wandb == "disabled":
            return
        os.environ.setdefault("WANDB_SILENT", "true")
        try:
            import wandb  # imported here: it is slow and not needed when disabled
        except ImportError:
            raise ConfigError(
                f"tracking.wandb={tracking.wandb} needs the wandb package: install it "
                "(pip install wandb) or set tracking.wandb=disabled"
            ) from None

        self.run = wandb.init(
            project=tracking.project,
            entity=tracking.entity,
            group=tracking.group,
            tags=list(dict.fromkeys([*tracking.tags, config.env.name, config.algo.name])),
            name=name or run_name(config, run_dir, context),
            job_type=job_type,
            config={
                **to_dict(config),
                "config_hash": config_hash(config),  # groups W&B runs of one experiment
                **({"context": dict(context)} if context else {}),
            },
            dir=str(_directory(run_dir)),
            mode=tracking.wandb,
            id=run_id,
            resume="allow" if run_id else None,
            reinit="create_new",
        )
        if run_id and self._step_file.is_file():
            # A resumed run repeats the rows after its checkpoint; W&B cannot take back the
            # ones it was sent before the interruption, so those steps are not sent again.
            text = self._step_file.read_text().strip()
            self.last_step = int(text) if text.isdigit() else -1
        if run_id and tracking.wandb == "offline":
            # Sent is not stored: a killed segment's file may hold less (`backfill` sends
            # the rest from metrics.csv).
            from harness.wandb_files import stored_last_step

            self.last_step = min(self.last_step, stored_last_step(Path(run_dir), run_id))

    @property
    def run_id(self) -> str | None:
        return None if self.run is None else self.run.id

    @property
    def active(self) -> bool:
        """Whether a W&B run receives what is logged."""
        return self.run is not None

    def log(
        self, metrics: Mapping[str, float], step: int, videos: Mapping[str, Path] | None = None
    ) -> None:
        """A metrics row at ``step``, with ``videos`` (GIF or MP4 files) in the same W&B row."""
        if self.tensorboard is not None:
            self.tensorboard.log(metrics, step)
        self._send(metrics, step, videos)

    def _send(
        self, metrics: Mapping[str, float], step: int, videos: Mapping[str, Path] | None = None
    ) -> None:
        if self.run is None or step <= self.last_step:
            return
        row: dict[str, Any] = dict(metrics)
        if videos:
            import wandb

            row.update({k: wandb.Video(str(p), format=p.suffix[1:]) for k, p in videos.items()})
        # Committed now: a row W&B holds back for a later step is flushed by finish(),
        # after the summary, and would overwrite the summary's values with its own.
        self.run.log(row, step=step, commit=True)
        self.last_step = step
        atomic_write(self._step_file, str(step))

    def backfill(self, rows: Any) -> None:
        """Send the rows of ``rows`` (metrics.csv's DataFrame) that W&B has not stored: a
        resumed run's rows up to its checkpoint, which training will not log again."""
        for row in rows.to_dict("records"):
            self._send(row, int(row["env_steps"]))  # TensorBoard's segment starts after them

    def finish(self, summary: Mapping[str, Any]) -> None:
        if self.tensorboard is not None:
            self.tensorboard.finish(summary)
        if self.run is not None:
            for key, value in summary.items():
                if isinstance(value, int | float | str):
                    self.run.summary[key] = value
            self.run.finish()


def _directory(path: Path) -> Path:
    """W&B writes under ``path``/wandb; it must exist first."""
    Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


def _format(value: float | int) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _env_steps(row: dict[str, str]) -> float:
    value = row.get("env_steps")
    return float(value) if value else math.inf


def _csv_header(path: Path) -> list[str]:
    with path.open(newline="") as f:
        return next(csv.reader(f), [])
