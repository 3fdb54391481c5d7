"""Writing and reading a run's small files: atomically, as strict JSON, and with a one-line
error that names the path and what to do when the file system refuses."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

from harness.errors import RunDirError, one_line


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file vecbench wrote (meta.json, summary.json): anything else there,
    a damaged or replaced file, is a RunDirError naming it."""
    if not path.is_file():
        raise RunDirError(f"{path}: missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunDirError(f"{path}: corrupt JSON: {one_line(str(err), 200)}") from None
    except OSError as err:
        raise RunDirError(f"{path}: unreadable ({one_line(str(err), 200)})") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: corrupt, expected a JSON object, got {type(data).__name__}")
    return data


def strict_json(data: Any) -> str:
    """JSON that strict readers take: NaN and infinities (at any depth) become null."""
    return json.dumps(_finite(data), indent=2, default=str, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as err:
        remove_quietly(tmp)
        raise write_error(path, err, "write") from None


def remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):  # on a read-only file system it was never created
        path.unlink(missing_ok=True)


def _disk_full(path: Path) -> bool:
    try:
        return shutil.disk_usage(path.parent).free < 1 << 20
    except OSError:
        return False


def write_error(
    path: Path, err: OSError | RuntimeError, what: str, run_dir: Path | None = None
) -> RunDirError:
    """One line: the path, what failed and why, and what to do about it."""
    code = getattr(err, "errno", None)
    reason = getattr(err, "strerror", None) or one_line(str(err), 200)
    if code is None and _disk_full(path):  # torch.save reports a full disk in its own words
        code, reason = errno.ENOSPC, os.strerror(errno.ENOSPC)
    # Another --run-dir helps only a run directory still to be made.
    fresh = what == "create the run directory"
    if code in (errno.ENOSPC, errno.EDQUOT):
        advice = "free disk space"
    elif code in (errno.EROFS, errno.EACCES, errno.EPERM):
        advice = "make it writable"
        advice += " or choose another --run-dir (experiment.run_root)" if fresh else ""
    elif code in (errno.ENOTDIR, errno.EEXIST):
        advice = "a part of the path is a file"
        advice += "; choose another --run-dir (experiment.run_root)" if fresh else ""
    else:
        advice = "check free disk space and permissions"
    if run_dir is not None:  # mid-run: what was written is kept and the run can go on
        advice += f", then continue with: vecbench train --resume {run_dir}"
    return RunDirError(f"{path}: cannot {what} ({reason}); {advice}")
