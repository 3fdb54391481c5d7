"""Every config key with its type, default and meaning (`vecbench config keys`).

A key's meaning is the comment on its line in the config class, or the comment lines just
above it: the code stays the one place that says what a key does.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from typing import Any

from envs.base import EnvConfig
from envs.randomization import ParamRange
from harness.config import ExperimentConfig, TrackingConfig
from harness.registry import ALGO_CONFIGS, ENV_CONFIGS


@dataclasses.dataclass(frozen=True)
class Key:
    section: str  # e.g. "env (cartpole)"
    path: str  # e.g. "env.action_type"
    type: str
    default: str
    meaning: str


def own_fields(cls: type) -> list[dataclasses.Field]:
    """The dataclass fields ``cls`` declares itself (not those it inherits unchanged)."""
    own = cls.__dict__.get("__annotations__", {})
    return [f for f in dataclasses.fields(cls) if f.name in own]


def meanings(cls: type) -> dict[str, str]:
    """Field name -> the comment that explains it, from ``cls``'s source."""
    lines = inspect.getsource(cls).splitlines()
    out: dict[str, str] = {}
    names = {f.name for f in own_fields(cls)}
    for i, line in enumerate(lines):
        match = re.match(r" {4}(\w+)\s*:", line)
        if not match or match.group(1) not in names:
            continue
        comment = line.split("  # ", 1)[1].strip() if "  # " in line else ""
        if not comment:
            above: list[str] = []
            j = i - 1
            while j >= 0 and lines[j].strip().startswith("#"):
                above.insert(0, lines[j].strip().lstrip("#").strip())
                j -= 1
            comment = " ".join(above)
        out[match.group(1)] = comment
    return out


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value: Any = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    return json.dumps(value, default=str)


def _section(title: str, prefix: str, cls: type) -> list[Key]:
    explained = meanings(cls)
    return [
        Key(title, f"{prefix}.{f.name}", str(f.type), _default(f), explained.get(f.name, ""))
        for f in own_fields(cls)
    ]


def all_keys() -> list[Key]:
    keys = _section("experiment", "experiment", ExperimentConfig)
    keys += _section("tracking", "tracking", TrackingConfig)
    keys += _section("env (every task)", "env", EnvConfig)
    keys += _section("env.randomization.<parameter>", "env.randomization.<parameter>", ParamRange)
    for name, cls in ENV_CONFIGS.items():
        keys += _section(f"env ({name})", "env", cls)
    shared: set[type] = set()
    for name, cls in ALGO_CONFIGS.items():
        for base in reversed(cls.__mro__[1:]):  # a shared base (sac and td3's) once
            if dataclasses.is_dataclass(base) and base not in shared:
                users = [n for n, c in ALGO_CONFIGS.items() if issubclass(c, base)]
                keys += _section(f"algo ({', '.join(users)})", "algo", base)
                shared.add(base)
        keys += _section(f"algo ({name})", "algo", cls)
    return keys


def keys_text() -> str:
    """The keys as text, a block per section."""
    lines: list[str] = []
    section = None
    for key in all_keys():
        if key.section != section:
            section = key.section
            lines += ["", section] if lines else [section]
        lines.append(f"  {key.path:<36} {key.type:<40} {key.default:<12} {key.meaning}")
    return "\n".join(lines)
