"""Study storage (journal file or a database), the cross-worker trial budget lock, and
heartbeats that let surviving workers retry the trials of killed ones.

- ``journal:<path>`` (the default, one machine): Optuna's journal file. Heartbeats are files
  next to it; a trial whose worker is gone (dead PID on this host, or a stale file) is failed
  and queued again.
- ``postgresql://...`` (many machines): Optuna's RDB storage with its own heartbeats.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import threading
import time
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from harness.errors import ConfigError
from studies.journal import journal_backend

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# Workers beat for their trials themselves (`StudyStorage.heartbeat`), not through optimize().
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with")


class StudyStorage:
    """One Optuna storage plus what vecbench adds around it."""

    def __init__(self, url: str, interval_s: float, grace_s: float, max_retries: int) -> None:
        url = journal_url(url)
        self.url = url
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retries)
        self.journal_path: Path | None = None
        if url.startswith("journal:"):
            self.journal_path = Path(url[len("journal:") :])
            self.journal_path.parent.mkdir(parents=True, exist_ok=True)
            self.optuna: optuna.storages.BaseStorage = optuna.storages.JournalStorage(
                journal_backend(self.journal_path)
            )
            self.heartbeat_dir = self.journal_path.parent / "heartbeats"
            self.heartbeat_dir.mkdir(exist_ok=True)
        else:
            self.optuna = _rdb(url, interval_s, grace_s, self.retry)

    # Budget lock --------------------------------------------------------------------------

    @contextlib.contextmanager
    def budget_lock(self, study_name: str) -> Iterator[None]:
        """Held while a worker counts trials and asks for one, so budgets hold exactly."""
        if self.url.startswith("postgresql"):
            import sqlalchemy

            engine = self.optuna.engine  # type: ignore[attr-defined]
            key = zlib.crc32(f"vecbench:{study_name}".encode())
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            return
        lock_path = self._lock_path(study_name)
        with open(lock_path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _lock_path(self, study_name: str) -> Path:
        if self.journal_path is not None:
            return self.journal_path.parent / f"{study_name}.budget.lock"
        if self.url.startswith("sqlite:///"):
            return Path(self.url[len("sqlite:///") :] + f".{study_name}.budget.lock")
        raise ConfigError(
            f"storage {redact(self.url)!r}: only journal:, sqlite:/// and postgresql URLs"
        )

    # Heartbeats ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def heartbeat(self, *trials: optuna.Trial) -> Iterator[None]:
        """Keep ``trials`` marked alive while the block runs (one thread beats them all)."""
        stop = threading.Event()

        def beat_all() -> None:
            for trial in trials:
                self.beat(trial)

        def beat() -> None:
            while True:
                beat_all()
                if stop.wait(self.interval_s):
                    return

        beat_all()
        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            if self.journal_path is not None:
                for trial in trials:
                    self._heartbeat_file(trial.number).unlink(missing_ok=True)

    def beat(self, trial: optuna.Trial) -> None:
        """Mark ``trial`` alive now."""
        if self.journal_path is None:
            self.optuna.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]
            return
        path = self._heartbeat_file(trial.number)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
        os.replace(tmp, path)

    def _heartbeat_file(self, number: int) -> Path:
        return self.heartbeat_dir / f"trial-{number}.json"

    def reap_stale(self, study: optuna.Study) -> list[int]:
        """Fail running trials whose worker is gone and queue them again; their numbers."""
        if self.journal_path is None:
            before = {t.number for t in study.get_trials(states=(TrialState.RUNNING,))}
            optuna.storages.fail_stale_trials(study)
            after = {t.number for t in study.get_trials(states=(TrialState.RUNNING,))}
            return sorted(before - after)
        reaped = []
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if not self._journal_trial_is_stale(trial):
                continue
            if self.optuna.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                failed = study.get_trials(deepcopy=True)[trial.number]
                self.retry(study, failed)
                self._heartbeat_file(trial.number).unlink(missing_ok=True)
                reaped.append(trial.number)
        return reaped

    def _journal_trial_is_stale(self, trial: FrozenTrial) -> bool:
        path = self._heartbeat_file(trial.number)
        try:
            info = json.loads(path.read_text())
            age = time.time() - path.stat().st_mtime
        except (OSError, json.JSONDecodeError):
            # No heartbeat yet: stale only once the trial is older than the grace period.
            start = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
            return time.time() - start > self.grace_s
        if info.get("host") == socket.gethostname() and not _pid_alive(int(info.get("pid", 0))):
            return True
        return age > self.grace_s


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed worker that is still a zombie of our own process counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _rdb(
    url: str, interval_s: float, grace_s: float, retry: RetryHeartbeatStaleTrialCallback
) -> optuna.storages.BaseStorage:
    try:
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=max(1, round(interval_s)),
            grace_period=max(2, round(grace_s)),
            heartbeat_stale_trial_callback=retry,
            engine_kwargs=engine_kwargs(url),
        )
    except Exception as err:  # sqlalchemy raises many kinds for a bad or unreachable URL
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"storage {redact(url)} is unreachable or invalid: {redact(first, url)}"
        ) from None


CONNECT_TIMEOUT_S = 10  # a server that accepts and never answers fails, not hangs


def engine_kwargs(url: str) -> dict[str, object]:
    kwargs: dict[str, object] = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return kwargs


def journal_url(url: str) -> str:
    """A plain file path (as Optuna's CLI and optuna-dashboard name a journal file) as a
    ``journal:`` URL; URLs with a scheme as they are."""
    return url if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", url) else f"journal:{url}"


# user:password@ wherever it stands (also in a URL missing a slash or its scheme), and a
# password=... query parameter.
# (The user may be empty; a password with an unencoded @ runs to the host's @.)
_USERINFO = re.compile(r"(^|/|\s|['\"])([^:/@\s'\"]*):([^\s'\"/]+)@")
_PASSWORD_PARAM = re.compile(r"(?i)\b(password|passwd|pwd)=([^&\s'\"]*)")


def redact(text: str, url: str | None = None) -> str:
    """``text`` (a URL, or a message quoting one) without passwords: what is printed,
    logged or put in a message. With ``url``, its password (and the pieces a driver may
    quote of one that holds an @) is taken out of ``text`` wherever it stands."""
    for secret in _secrets(url or ""):
        text = text.replace(secret, "***")
    text = _USERINFO.sub(r"\1\2:***@", text)
    return _PASSWORD_PARAM.sub(r"\1=***", text)


def _secrets(url: str) -> list[str]:
    found = [m.group(3) for m in _USERINFO.finditer(url)]
    found += [m.group(2) for m in _PASSWORD_PARAM.finditer(url)]
    pieces = [piece for secret in found for piece in secret.split("@") if len(piece) >= 3]
    return sorted({*found, *pieces} - {""}, key=len, reverse=True)
