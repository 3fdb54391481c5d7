"""Errors meant for people: each names the file and key to fix."""

from __future__ import annotations


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
