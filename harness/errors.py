"""Errors meant for people: each names the file and key to fix."""

from __future__ import annotations

import reprlib
from typing import Any

SHOWN_CHARS = 200  # the most an error echoes of an offending value

_REPR = reprlib.Repr()  # bounded work: a huge or deeply shared value is never walked whole
_REPR.maxlevel = 3
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8
_REPR.maxstring = _REPR.maxother = SHOWN_CHARS


class VecbenchError(Exception):
    """Base of every error the CLI reports as one line instead of a traceback."""


class ConfigError(VecbenchError):
    """A config file or override is wrong; the message names the source and key."""


class DivergedError(VecbenchError):
    """Training produced non-finite losses; the run directory keeps what was written."""


class RunDirError(VecbenchError):
    """A run directory is missing, incomplete or corrupt; the message names the file."""


class FieldError(ValueError):
    """Raised by a config dataclass's validation; the loader prefixes source and key path."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key} {message}")
        self.key = key
        self.message = message


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters with "...", for echoing in an error."""
    text = repr(value[: limit + 1]) if isinstance(value, str) else _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(text: str, limit: int = 1000) -> str:
    """``text`` with its line breaks folded into spaces, cut to ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
