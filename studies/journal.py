"""A study's journal file as Optuna writes it, made safe against a crashed writer: a
partial last line is set aside before anything is appended, and a damaged line is one error
naming the file instead of a traceback from inside Optuna."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any, BinaryIO

from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from harness.errors import VecbenchError

log = logging.getLogger("vecbench")


class JournalError(VecbenchError):
    """A journal file holds a damaged record; the message names the file and line."""


def journal_backend(path: Path) -> JournalFileBackend:
    """Optuna's journal file behind the lock every vecbench process takes to write it."""
    return _CheckedJournal(str(path), lock_obj=_TailMendingLock(path))


class _TailMendingLock(JournalFileOpenLock):
    """Optuna's write lock for a journal file, which also sets aside a partial last line
    (a writer that crashed or hit a full disk) once held, before anything is appended.

    Optuna's reader skips a last line without its newline, so a study with one reads as if
    the line were not there; a record appended onto it, though, would make one line of
    both that no reader can decode. Under this lock no other writer is mid-line, so a
    partial line is always a dead writer's."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path

    def acquire(self) -> bool:
        super().acquire()
        try:
            set_aside_partial_line(self.path)
        except BaseException:
            self.release()
            raise
        return True


def set_aside_partial_line(path: Path) -> int:
    """Move the bytes after ``path``'s last newline to ``<path>.partial``; how many. Call
    it only under the journal's write lock."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        keep = _after_last_newline(f, size)
        f.seek(keep)
        partial = f.read()
    side = path.with_name(path.name + ".partial")
    with open(side, "ab") as out:  # appended: an earlier set-aside line is kept too
        out.write(partial + b"\n")
        out.flush()
        os.fsync(out.fileno())
    os.truncate(path, keep)
    log.warning(
        "%s: its last line was cut off (by a crash or a full disk?); set its %d bytes aside in %s",
        path,
        len(partial),
        side,
    )
    return len(partial)


def _after_last_newline(f: BinaryIO, size: int, chunk: int = 1 << 16) -> int:
    """The offset just past the last newline of the open file ``f`` of ``size`` bytes."""
    end = size
    while end > 0:
        start = max(0, end - chunk)
        f.seek(start)
        at = f.read(end - start).rfind(b"\n")
        if at >= 0:
            return start + at + 1
        end = start
    return 0


class _CheckedJournal(JournalFileBackend):
    """Optuna's journal file backend; a damaged record is one error naming the file."""

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        try:
            yield from super().read_logs(log_number_from)
        except ValueError:  # Optuna's JSONDecodeError, UnicodeDecodeError or "Invalid log format"
            line = _first_bad_line(Path(self._file_path))
            where = f"line {line}" if line else "a line"
            raise JournalError(
                f"{self._file_path}: {where} is not a valid journal record (damaged by a "
                "crash or an edit?); the study cannot be read past it: restore the file from "
                "a backup"
            ) from None


def _first_bad_line(path: Path) -> int | None:
    """The number of the first complete line of ``path`` that is not JSON."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.endswith(b"\n"):
                return None  # a partial last line: the reader skips it
            try:
                json.loads(line)
            except ValueError:
                return number
    return None
