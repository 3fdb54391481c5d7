"""A study file: what to sweep, how to score a trial, and how to search.

Example (see the shipped files in this folder)::

    name: cartpole-ppo
    config: {env: {num_envs: 256}, experiment: {total_env_steps: 200000}}
    space:
      algo.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      algo.num_epochs: {type: int, low: 2, high: 8}
      algo.entropy_coef: {type: float, low: 0.0, high: 0.02, when: {algo.lr_schedule: [fixed]}}
    objective: final_return          # or {metric, direction, threshold}, or a list of them
    seeds: [0, 1]
    sampler: {name: tpe}
    pruner: {name: median}
    n_trials: 20
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from harness.config import (
    POLICY_ENV_WHY,
    RunConfig,
    apply_override,
    build,
    config_from_dict,
    env_override,
    read_yaml,
)
from harness.errors import ConfigError, FieldError

Metric = Literal[
    "final_return",
    "best_return",
    "eval_return",
    "env_steps_per_second",
    "wall_time_s",
    "steps_to_threshold",
    "time_to_threshold",
]
DEFAULT_DIRECTION = {
    "final_return": "maximize",
    "best_return": "maximize",
    "eval_return": "maximize",
    "env_steps_per_second": "maximize",
    "wall_time_s": "minimize",
    "steps_to_threshold": "minimize",
    "time_to_threshold": "minimize",
}
RETURN_METRICS = ("final_return", "best_return", "eval_return")
# Objectives that time a run: meaningless for a run that shares a batch (batch_trials).
TIMED_METRICS = ("env_steps_per_second", "wall_time_s", "time_to_threshold")


@dataclass(frozen=True)
class ParamSpec:
    """One searched config value. ``when`` makes it conditional on earlier parameters."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type == "categorical":
            if not self.choices:
                raise FieldError("choices", "must list at least one value")
            return
        if self.low is None or self.high is None:
            raise FieldError("low", f"and high are required for a {self.type} parameter")
        if self.low > self.high:
            raise FieldError("low", f"must be <= high, got low={self.low} > high={self.high}")
        if self.log and self.low <= 0:
            raise FieldError("low", f"must be > 0 with log: true, got {self.low}")
        if self.log and self.step is not None:
            raise FieldError("step", "cannot be combined with log: true")

    @property
    def optuna_choices(self) -> list[Any]:
        """Choices as Optuna stores them: lists (layer sizes) become JSON strings."""
        return [json.dumps(c) if isinstance(c, list | tuple | dict) else c for c in self.choices]

    def decode(self, value: Any) -> Any:
        """A stored choice back to the config value."""
        if self.type == "categorical" and isinstance(value, str):
            for raw, stored in zip(self.choices, self.optuna_choices, strict=True):
                if stored == value:
                    return raw
        return value

    def first_value(self) -> Any:
        if self.type == "categorical":
            return self.choices[0]
        return int(self.low) if self.type == "int" else self.low  # type: ignore[arg-type]


@dataclass(frozen=True)
class ObjectiveSpec:
    metric: Metric = "final_return"
    direction: Literal["maximize", "minimize"] | None = None  # default: the metric's own
    threshold: float | None = None  # for steps_to_threshold / time_to_threshold

    def __post_init__(self) -> None:
        if self.metric.endswith("_to_threshold") and self.threshold is None:
            raise FieldError("threshold", f"is required for {self.metric}")

    @property
    def resolved_direction(self) -> str:
        return self.direction or DEFAULT_DIRECTION[self.metric]


@dataclass(frozen=True)
class SamplerSpec:
    name: Literal["tpe", "random", "grid", "cmaes"] = "tpe"
    seed: int | None = 0


@dataclass(frozen=True)
class PrunerSpec:
    name: Literal["none", "median", "successive_halving", "hyperband", "wilcoxon", "threshold"] = (
        "none"
    )
    n_startup_trials: int = 5  # median: trials before pruning starts
    n_warmup_steps: int = 0  # median, threshold: env steps before a trial can be pruned
    min_resource: int | None = None  # successive halving / hyperband [env steps]
    reduction_factor: int = 3
    p_threshold: float = 0.1  # wilcoxon
    # threshold: prune a trial whose return is below it (it judges each trial alone, so it
    # prunes inside a batch of trials that run together, as the others cannot)
    lower: float | None = None

    def __post_init__(self) -> None:
        if self.name == "threshold" and self.lower is None:
            raise FieldError("lower", "is required by the threshold pruner")


@dataclass(frozen=True)
class EvaluationSpec:
    """Evaluate each seed's final policy, e.g. on a wider, held-out randomisation range."""

    episodes: int = 100
    set: tuple[str, ...] = ()  # key=value overrides of the env for evaluation

    def __post_init__(self) -> None:
        if self.episodes <= 0:
            raise FieldError("episodes", f"must be > 0, got {self.episodes}")


@dataclass(frozen=True)
class StudySpec:
    name: str
    space: dict[str, ParamSpec]
    config: dict[str, Any] = field(default_factory=dict)  # run config overrides (mapping)
    base_config: str | None = None  # a run config YAML, relative to the study file
    objective: tuple[ObjectiveSpec, ...] = (ObjectiveSpec(),)
    seeds: tuple[int, ...] = (0,)
    aggregate: Literal["mean", "median", "min", "iqm"] = "mean"
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    pruner: PrunerSpec = field(default_factory=PrunerSpec)
    n_trials: int = 20  # budget over all workers (grid: the grid's size)
    evaluation: EvaluationSpec | None = None
    study_dir: str | None = None  # default: runs/studies/<name>
    storage: str | None = None  # default: journal file in study_dir
    heartbeat_interval_s: float = 10.0
    heartbeat_grace_s: float = 60.0  # a running trial silent this long is failed and retried
    max_retries: int = 2
    # worker: trials train in the worker's process, one after another (no start-up per
    # trial); process: a process per trial, for tasks that may crash or hang it.
    trial_isolation: Literal["worker", "process"] = "worker"
    # Trials a worker asks for at once and trains together as one batched program (runs
    # whose shapes agree share a batch; see harness.members).
    batch_trials: int = 1

    def __post_init__(self) -> None:
        if self.batch_trials <= 0:
            raise FieldError("batch_trials", f"must be > 0, got {self.batch_trials}")
        timed = [o.metric for o in self.objective if o.metric in TIMED_METRICS]
        if self.batch_trials > 1 and timed:
            raise FieldError(
                "batch_trials",
                f"cannot be > 1 with the objective {timed[0]}: a run in a batch shares the "
                "device with the others, so its speed is not its own; set batch_trials: 1",
            )
        if self.batch_trials > 1 and self.trial_isolation == "process":
            raise FieldError(
                "batch_trials",
                "trains a batch in the worker's process; set trial_isolation: worker or "
                "batch_trials: 1",
            )
        if not self.name or "/" in self.name:
            raise FieldError("name", f"must be a non-empty name without '/', got {self.name!r}")
        if not self.space:
            raise FieldError("space", "must name at least one parameter")
        if self.n_trials <= 0:
            raise FieldError("n_trials", f"must be > 0, got {self.n_trials}")
        if not self.seeds:
            raise FieldError("seeds", "must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            # Each seed's run goes to trial-N/seed-S: a repeat would collide with the first.
            raise FieldError("seeds", f"must be distinct, got {list(self.seeds)}")
        if len(self.objective) > 1 and self.pruner.name != "none":
            raise FieldError("pruner", "cannot prune a study with several objectives")
        if self.pruner.name != "none" and self.objective[0].metric not in RETURN_METRICS:
            raise FieldError(
                "pruner", f"prunes on returns; objective is {self.objective[0].metric}"
            )
        if self.pruner.name == "wilcoxon" and len(self.seeds) < 2:
            raise FieldError("pruner", "wilcoxon compares seeds: give at least two seeds")
        if any(o.metric == "eval_return" for o in self.objective) and self.evaluation is None:
            raise FieldError("evaluation", "is required for the eval_return objective")
        if self.sampler.name == "grid":
            for path, param in self.space.items():
                if param.type != "categorical":
                    raise FieldError(f"space.{path}", "must be categorical for the grid sampler")
        if self.heartbeat_interval_s <= 0 or self.heartbeat_grace_s <= self.heartbeat_interval_s:
            raise FieldError("heartbeat_grace_s", "must exceed heartbeat_interval_s (both > 0)")

    @property
    def directions(self) -> list[str]:
        return [o.resolved_direction for o in self.objective]

    def fingerprint(self) -> str:
        """Hash of what makes trials comparable: space, objectives, seeds, aggregation."""
        payload = {
            "space": {k: _plain(v) for k, v in self.space.items()},
            "objective": [_plain(o) for o in self.objective],
            "seeds": list(self.seeds),
            "aggregate": self.aggregate,
        }
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def grid(self) -> list[dict[str, Any]]:
        """Every point of a categorical grid, in a fixed order."""
        points: list[dict[str, Any]] = [{}]
        for path, param in self.space.items():
            points = [{**p, path: c} for p in points for c in param.optuna_choices]
        return points


def _plain(obj: Any) -> Any:
    import dataclasses

    return dataclasses.asdict(obj)


@dataclass(frozen=True)
class LoadedStudy:
    spec: StudySpec
    path: Path  # the study file
    base: dict[str, Any]  # the run config mapping every trial starts from

    @property
    def study_dir(self) -> Path:
        if self.spec.study_dir:
            return Path(self.spec.study_dir)
        return Path("runs") / "studies" / self.spec.name

    def storage_url(self, override: str | None = None) -> str:
        url = override or self.spec.storage
        return url or f"journal:{self.study_dir / 'journal.log'}"

    def trial_config(self, params: dict[str, Any], seed: int) -> RunConfig:
        data = json.loads(json.dumps(self.base))
        for path, value in params.items():
            _set_path(data, path, value)
        _set_path(data, "experiment.seed", seed)
        return config_from_dict(data, f"{self.path} (trial)")


def with_batch_trials(loaded: LoadedStudy, batch_trials: int | None) -> LoadedStudy:
    """``loaded`` with batch_trials from the command line (None: the file's)."""
    if batch_trials is None:
        return loaded
    try:
        spec = dataclasses.replace(loaded.spec, batch_trials=batch_trials)
    except FieldError as err:
        raise ConfigError(f"--batch-trials: {err.message}") from None
    return dataclasses.replace(loaded, spec=spec)


def load_study(path: str | Path) -> LoadedStudy:
    """Read and validate a study file; every searched key is checked against the config."""
    path = Path(path)
    raw = read_yaml(path)
    source = str(path)
    if "objective" in raw:
        raw["objective"] = _objective_list(raw["objective"], source)
    spec: StudySpec = build(StudySpec, raw, "", source)
    base: dict[str, Any] = {}
    if spec.base_config:
        try:
            base = read_yaml(path.parent / spec.base_config)  # relative to the study file
        except ConfigError as err:
            raise ConfigError(f"{source}: base_config: {err}") from None
    _merge(base, spec.config)
    loaded = LoadedStudy(spec, path, base)
    _check_base(loaded, source)
    return loaded


def _objective_list(value: Any, source: str) -> list[Any]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        out.append({"metric": item} if isinstance(item, str) else item)
    if not out:
        raise ConfigError(f"{source}: objective must name at least one metric")
    return out


def _check_base(loaded: LoadedStudy, source: str) -> None:
    """The base config must load, and each searched path must be a real config key."""
    try:
        config_from_dict(loaded.base, f"{source} (config)")
    except ConfigError as err:
        raise ConfigError(str(err).replace("(config): ", "(config): config.", 1)) from None
    spec = loaded.spec
    seen: list[str] = []
    for path, param in spec.space.items():
        for other in param.when:
            if other not in seen:
                raise ConfigError(
                    f"{source}: space.{path}.when names {other!r}, which is not a parameter "
                    "listed before it"
                )
        data = json.loads(json.dumps(loaded.base))
        _set_path(data, path, param.first_value())
        try:
            config_from_dict(data, source)
        except ConfigError as err:
            raise ConfigError(
                f"{source}: space.{path} does not fit the run config: {str(err).split(': ', 1)[-1]}"
            ) from None
        seen.append(path)
    if spec.evaluation is not None:
        data = json.loads(json.dumps(loaded.base))
        for item in spec.evaluation.set:
            key = item.partition("=")[0].strip()
            if not env_override(key):
                raise ConfigError(f"{source}: evaluation.set: {key}: {POLICY_ENV_WHY}")
        try:
            for item in spec.evaluation.set:
                apply_override(data, item)
            config_from_dict(data, source)
        except ConfigError as err:
            raise ConfigError(f"{source}: evaluation.set: {str(err).split(': ', 1)[-1]}") from None


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def dump_spec(loaded: LoadedStudy) -> str:
    import dataclasses

    return yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(loaded.spec))), sort_keys=False)
