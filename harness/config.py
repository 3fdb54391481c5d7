"""The root run config: frozen dataclasses, YAML overrides, ``--set`` overrides, validation.

Defaults live in the dataclasses (each next to the code it configures); a YAML file and
``key.path=value`` overrides only change them. Unknown keys, wrong types and out-of-range
values raise `ConfigError` naming the source and the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from harness import registry
from harness.errors import ConfigError, FieldError, one_line, shown

DEVICE_NAMES = re.compile(r"auto|cpu|cuda(:\d+)?")  # what experiment.device accepts
# A config has hundreds of nodes; an alias bomb ("billion laughs") expands to billions.
MAX_YAML_NODES = 10_000


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = ""  # empty: "<env>-<algo>"
    seed: int = 0  # seeds the networks' init, the envs and the actions
    device: str = "auto"  # auto | cpu | cuda | cuda:K
    total_env_steps: int = 500_000  # training budget [env steps]
    log_interval: int = 5  # [iterations] between metric rows
    checkpoint_interval: int = 50  # [iterations] between checkpoints
    run_root: str = "runs"  # where run directories are created
    # Stop once the mean return reaches it: the greedy evaluation's when eval_interval is
    # set, else the training episodes' of a log interval.
    stop_at_return: float | None = None
    # How many checks in a row (evaluations, or log intervals) must reach stop_at_return:
    # more than one keeps a single lucky interval from ending the run.
    stop_patience: int = 1
    # [iterations] between greedy evaluations during training (a multiple of log_interval;
    # 0: none); each logs eval_return, eval_length and the task's final metrics as eval_*.
    eval_interval: int = 0
    eval_episodes: int = 100  # one episode per env of a separate evaluation env
    # Replay each training iteration from one CUDA graph (PPO, SAC, TD3; on an env simulated
    # outside torch, the update alone); null (auto): on wherever it can be (a CUDA device
    # and an algorithm config that allows it), true: on or an error saying why not.
    cuda_graph: bool | None = None
    # torch.compile the env step (where no fused kernel runs) and PPO's iteration
    compile: bool = False
    # The task's one-kernel step (Triton, CUDA); null (auto): wherever the task has one and
    # it can run, true: on or an error saying why not. It takes precedence over compile.
    fused_env: bool | None = None
    # PPO's policy step, values, GAE and minibatch steps as a few Triton kernels (CUDA);
    # null (auto): wherever they can run, true: on or an error saying why not. It takes
    # precedence over compile for the algorithm.
    fused_algo: bool | None = None

    def __post_init__(self) -> None:
        for key in (
            "total_env_steps",
            "log_interval",
            "checkpoint_interval",
            "stop_patience",
            "eval_episodes",
        ):
            if getattr(self, key) <= 0:
                raise FieldError(key, f"must be > 0, got {getattr(self, key)}")
        if self.eval_interval < 0 or self.eval_interval % self.log_interval:
            raise FieldError(
                "eval_interval",
                f"must be 0 or a multiple of log_interval ({self.log_interval}), "
                f"got {self.eval_interval}",
            )
        if self.seed < 0:
            raise FieldError("seed", f"must be >= 0, got {self.seed}")
        if not DEVICE_NAMES.fullmatch(self.device):
            raise FieldError(
                "device", f"must be auto, cpu, cuda or cuda:K, got {shown(self.device)}"
            )


@dataclass(frozen=True)
class TrackingConfig:
    wandb: Literal["offline", "online", "disabled"] = "offline"  # offline: files only
    project: str = "vecbench"  # W&B project
    entity: str | None = None  # W&B team or user (null: your default)
    group: str | None = None  # W&B group (a study sets its name)
    tags: tuple[str, ...] = ()  # W&B tags
    tensorboard: bool = False  # also write TensorBoard event files to <run dir>/tensorboard
    # [iterations] between videos of the greedy policy sent to W&B (4 envs, 200 frames, GIF
    # kept in <run dir>/videos; a multiple of experiment.log_interval; 0: none)
    video_interval: int = 0

    def __post_init__(self) -> None:
        if self.video_interval < 0:
            raise FieldError("video_interval", f"must be >= 0, got {self.video_interval}")


@dataclass(frozen=True)
class RunConfig:
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    env: Any = None  # the registered env's config dataclass
    algo: Any = None  # the registered algorithm's config dataclass

    @property
    def run_name(self) -> str:
        return self.experiment.name or f"{self.env.name}-{self.algo.name}"


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults <- YAML file (if any) <- ``key.path=value`` overrides, validated."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        data = read_yaml(Path(path))
    for item in overrides or []:
        apply_override(data, item)
    if overrides:
        source = f"{source} + --set" if path is not None else "--set"
    return config_from_dict(data, source)


def read_yaml(path: Path) -> dict[str, Any]:
    """A config or study file's top-level mapping; any problem is one `ConfigError` line."""
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a YAML file")
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if not path.is_file():
        raise ConfigError(f"{path}: not a regular file; give a YAML file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
            "save it as UTF-8"
        ) from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror})") from None
    data = parse_yaml(text, str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def parse_yaml(text: str, source: str) -> Any:
    """YAML's safe subset, refusing alias expansion past `MAX_YAML_NODES`; errors are one
    line with the line and column (PyYAML's own messages span several lines)."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 (a SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = err.problem or err.context or "unreadable"
        if err.context and err.problem:
            start = err.context_mark
            at = f" at line {start.line + 1}, column {start.column + 1}" if start else ""
            problem += f" ({err.context}{at})"
        raise ConfigError(f"{source}: not valid YAML{where}: {one_line(problem, 300)}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {one_line(str(err), 300)}") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML: nested too deeply") from None


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML shares an aliased node rather than copying it, so a few lines can stand for
    billions of values that anything walking the result (validation, an error's repr) then
    pays for: count the nodes the document expands to before constructing it."""

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None:
            _expanded_size(node, {}, set())
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """A key given twice is an error (PyYAML keeps the last one silently)."""
        seen: dict[str, yaml.Mark] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            if key_node.value in seen:
                first = seen[key_node.value]
                raise yaml.MarkedYAMLError(
                    problem=f"key {shown(key_node.value)} is given twice (first at line "
                    f"{first.line + 1})",
                    problem_mark=key_node.start_mark,
                )
            seen[key_node.value] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # Python's limit on digits in int()
            raise yaml.MarkedYAMLError(
                problem=f"a number of {len(node.value):,} characters is too long",
                problem_mark=node.start_mark,
            ) from None


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    """Nodes under ``node`` with every alias expanded; memoised, so linear in the text."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise yaml.MarkedYAMLError(
            problem="an alias refers to itself", problem_mark=node.start_mark
        )
    open_.add(key)
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    size = 1 + sum(_expanded_size(child, sizes, open_) for child in children)
    # What aliases added: the expanded size beyond every distinct node read so far (a long
    # list written out is not an expansion).
    if size - len(sizes) > MAX_YAML_NODES:
        raise yaml.MarkedYAMLError(
            problem=f"aliases expand to more than {MAX_YAML_NODES:,} values; write it out instead",
            problem_mark=node.start_mark,
        )
    open_.discard(key)
    sizes[key] = size
    return size


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one ``a.b.c=value`` (value parsed as YAML) to a nested dict in place."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {shown(item)}: expected key.path=value")
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {shown(item)}: {part} is a value, not a section")
        node = child
    node[parts[-1]] = parse_yaml(raw, f"--set {one_line(key, 200)}") if raw.strip() else ""


def refuse_overrides(overrides: list[str] | None, allowed: Callable[[str], bool], why: str) -> None:
    """A one-line error for the first ``--set`` key that ``allowed`` refuses, before any
    value is parsed (a changed env.name would otherwise fail on the old task's keys)."""
    for item in overrides or []:
        key = item.partition("=")[0].strip()
        if not allowed(key):
            raise ConfigError(f"--set {one_line(key, 200)}: {why}")


# `vecbench eval --set` (and a study's evaluation.set) plays a trained policy: its env may
# change, not the task or action type the policy was built for, nor the rest of the run.
POLICY_ENV_WHY = (
    "an evaluation plays the run's policy: --set changes its env (env.*), not env.name, "
    "env.action_type, algo or experiment"
)


def env_override(key: str) -> bool:
    return key.startswith("env.") and key not in ("env.name", "env.action_type")


def config_from_dict(data: dict[str, Any], source: str = "config") -> RunConfig:
    data = dict(data)
    known = {f.name for f in dataclasses.fields(RunConfig)}
    _reject_unknown(data, known, "", source)
    env_data = _section(data.get("env"), "env", source)
    algo_data = _section(data.get("algo"), "algo", source)
    env_cls = _lookup(registry.ENV_CONFIGS, env_data.get("name", "cartpole"), "env", source)
    algo_cls = _lookup(registry.ALGO_CONFIGS, algo_data.get("name", "ppo"), "algo", source)
    return RunConfig(
        experiment=build(ExperimentConfig, data.get("experiment", {}), "experiment", source),
        tracking=build(TrackingConfig, data.get("tracking", {}), "tracking", source),
        env=build(env_cls, env_data, "env", source),
        algo=build(algo_cls, algo_data, "algo", source),
    )


def to_dict(config: Any) -> dict[str, Any]:
    """Plain YAML-safe dict (tuples become lists) that `config_from_dict` reads back."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


# Settings that do not change a run's numbers, left out of `config_hash`: where results are
# written and how often (name, run_root, log_interval, checkpoint_interval, all of tracking);
# how the same computation is executed (cuda_graph replays the eager iteration's kernels;
# compile, fused_env and fused_algo compute the same steps and draw the same random
# numbers, rounding at most differently); and device. Device does change numbers (CPU and
# CUDA generators draw different streams, GPUs round differently) but "auto" does not say
# which one ran: meta.json's device_name does, and reports show it next to the hash.
HASH_EXCLUDED = {
    "experiment": (
        "name",
        "run_root",
        "log_interval",
        "checkpoint_interval",
        "cuda_graph",
        "compile",
        "fused_env",
        "fused_algo",
        "device",
    ),
    "tracking": None,  # the whole section
}


def semantic_dict(config: RunConfig) -> dict[str, Any]:
    """The config as `to_dict` gives it, less `HASH_EXCLUDED`: env, algo, and the
    experiment's seed, budget, stopping and evaluation settings."""
    data = to_dict(config)
    for section, keys in HASH_EXCLUDED.items():
        if keys is None:
            data.pop(section)
        else:
            for key in keys:
                data[section].pop(key)
    return data


def config_hash(config: RunConfig) -> str:
    """Short stable hash of what changes a run's results (`semantic_dict`): two runs of one
    experiment share it whatever their folders, names, logging and tracking settings."""
    return digest(semantic_dict(config), 12)


def digest(data: Any, length: int) -> str:
    """First ``length`` hex digits of the SHA-256 of ``data`` as sorted-key JSON."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:length]


# Building dataclasses from plain data ---------------------------------------------------


def build(cls: type, data: Any, path: str, source: str) -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys, types and values."""
    data = _section(data, path, source)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _reject_unknown(data, set(fields), path, source)
    hints = typing.get_type_hints(cls)
    kwargs = {
        name: _convert(value, hints[name], _join(path, name), source)
        for name, value in data.items()
    }
    missing = [f.name for f in fields.values() if f.name not in kwargs and _required(f)]
    if missing:
        raise ConfigError(f"{source}: {_join(path, missing[0])} is required")
    try:
        return cls(**kwargs)
    except FieldError as err:
        raise ConfigError(f"{source}: {_join(path, err.key)} {err.message}") from None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _convert(value: Any, hint: Any, path: str, source: str) -> Any:
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], path, source)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{source}: {path} must be one of {choices}, got {shown(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            _wrong_type(value, "a list", path, source)
        return tuple(_convert(v, args[0], f"{path}[{i}]", source) for i, v in enumerate(value))
    if origin is dict:
        section = _section(value, path, source)
        return {
            str(k): _convert(v, args[1], _join(path, str(k)), source) for k, v in section.items()
        }
    if dataclasses.is_dataclass(hint):
        return build(hint, value, path, source)
    if hint is bool:
        if not isinstance(value, bool):
            _wrong_type(value, "true or false", path, source)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)  # 1e6 in YAML
            _wrong_type(value, "an integer", path, source)
        return value
    if hint is float:
        if isinstance(value, str):
            try:
                value = float(value)  # YAML 1.1 reads 1e-3 as a string
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            _wrong_type(value, "a number", path, source)
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{source}: {path} must be a finite number, got {shown(value)}")
        return number
    if hint is str:
        if not isinstance(value, str):
            _wrong_type(value, "a string", path, source)
        return value
    raise TypeError(f"config type {hint!r} of {path} is not supported")


def _wrong_type(value: Any, expected: str, path: str, source: str) -> typing.NoReturn:
    raise ConfigError(f"{source}: {path} must be {expected}, got {shown(value)}")


def _section(value: Any, path: str, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {path} must be a mapping, got {shown(value)}")
    return value


def _reject_unknown(data: dict[str, Any], known: set[str], path: str, source: str) -> None:
    for key in data:
        if key not in known:
            where = one_line(f"{path}.{key}" if path else str(key), 200)
            raise ConfigError(
                f"{source}: {where} is not a known key (known: {', '.join(sorted(known))})"
            )


def _lookup(table: dict[str, type], name: Any, path: str, source: str) -> type:
    if name not in table:
        raise ConfigError(
            f"{source}: {path}.name {shown(name)} is not registered "
            f"(known: {', '.join(sorted(table))})"
        )
    return table[name]
