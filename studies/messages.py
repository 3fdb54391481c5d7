"""What a study worker and the trials it runs tell each other: typed, and one JSON line each
when a trial runs in a process of its own."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrialJob:
    """One trial: each seed's resolved run config, and where its runs go."""

    trial: int  # Optuna's trial number
    seeds: tuple[int, ...]
    configs: tuple[dict[str, Any], ...]  # one resolved run config (plain data) per seed
    trial_dir: str
    context: dict[str, Any]  # recorded in each run's meta.json and W&B config
    threshold: float | None = None  # for steps_to_threshold / time_to_threshold
    eval_episodes: int | None = None  # evaluate each seed's final policy (eval_return)
    eval_set: tuple[str, ...] = ()  # ... with these env overrides

    @property
    def steps_per_seed(self) -> int:
        return int(self.configs[0]["experiment"]["total_env_steps"])


@dataclass(frozen=True)
class RowLogged:
    """A metrics row of one seed's run, as the runner logged it."""

    seed_index: int
    row: dict[str, float]


@dataclass(frozen=True)
class SeedFinished:
    """One seed's run is over; ``metrics`` holds every objective metric."""

    seed_index: int
    seed: int
    run_dir: str
    metrics: dict[str, float] = field(default_factory=dict)


TrialEvent = RowLogged | SeedFinished
_KINDS: dict[str, type] = {cls.__name__: cls for cls in (TrialJob, RowLogged, SeedFinished)}


def encode(message: TrialJob | TrialEvent) -> str:
    """One JSON line (Python's JSON: NaN and infinities survive the round trip)."""
    data = {"kind": type(message).__name__, **dataclasses.asdict(message)}
    return json.dumps(data, default=float)  # numbers of other types (numpy) as floats


def decode(line: str) -> TrialJob | TrialEvent:
    data = json.loads(line)
    cls = _KINDS[data.pop("kind")]
    if cls is TrialJob:
        data["seeds"] = tuple(data["seeds"])
        data["configs"] = tuple(data["configs"])
        data["eval_set"] = tuple(data["eval_set"])
    return cls(**data)
