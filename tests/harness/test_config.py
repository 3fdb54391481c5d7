"""Config loading: defaults, YAML, --set, and an error naming the key for each bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from envs.randomization import ParamRange
from harness.config import (
    HASH_EXCLUDED,
    config_from_dict,
    config_hash,
    load_config,
    semantic_dict,
    to_dict,
)
from harness.errors import ConfigError


def test_defaults_are_ppo_on_discrete_cartpole() -> None:
    config = load_config()
    assert config.env.name == "cartpole" and config.env.action_type == "discrete"
    assert config.algo.name == "ppo"
    assert config.tracking.wandb == "offline"


def test_yaml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "env:\n  num_envs: 64\n  randomization:\n    pole_length: {low: 0.4, high: 0.6}\n"
        "algo:\n  lr: 1e-3\n  actor_hidden: [32, 32]\n"
    )
    config = load_config(path, ["algo.lr=5e-4", "experiment.seed=3"])
    assert config.env.num_envs == 64
    assert config.env.randomization == {"pole_length": ParamRange(0.4, 0.6)}
    assert config.algo.lr == 5e-4  # --set wins over the file
    assert config.algo.actor_hidden == (32, 32)
    assert config.experiment.seed == 3


def test_round_trip_through_plain_dict() -> None:
    config = load_config(
        overrides=[
            "env.randomization.motor_gain={low: 0.5, high: 2, distribution: log_uniform}",
            "tracking.tags=[a, b]",
        ]
    )
    assert config_from_dict(to_dict(config)) == config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["env.num_envz=4"], "--set: env.num_envz is not a known key"),
        (["colour=red"], "--set: colour is not a known key"),
        (["env.num_envs=many"], "--set: env.num_envs must be an integer, got 'many'"),
        (["env.num_envs=-3"], "--set: env.num_envs must be > 0 and < 2**31, got -3"),
        (["algo.lr=0"], "--set: algo.lr must be > 0, got 0.0"),
        (["algo.clip_value_loss=1"], "--set: algo.clip_value_loss must be true or false, got 1"),
        (["algo.lr_schedule=cosine"], "--set: algo.lr_schedule must be one of 'fixed', 'linear'"),
        (
            ["env.name=hopper"],
            "--set: env.name 'hopper' is not registered (known: arm, cartpole, quadruped)",
        ),
        (["algo.name=dqn"], "--set: algo.name 'dqn' is not registered (known: ppo, sac, td3)"),
        (
            ["env.randomization.wheels={low: 1, high: 2}"],
            "--set: env.randomization.wheels is not a parameter of cartpole",
        ),
        (
            ["env.randomization.pole_mass={low: 2, high: 1}"],
            "--set: env.randomization.pole_mass.low must be <= high",
        ),
        (
            ["env.randomization.pole_mass={low: 0, high: 1, distribution: log_uniform}"],
            "--set: env.randomization.pole_mass.low must be > 0 for log_uniform",
        ),
        (["experiment.device=tpu"], "--set: experiment.device must be auto, cpu, cuda or cuda:K"),
        (["algo.gamma=1.5"], "--set: algo.gamma must be in [0, 1], got 1.5"),
        (["env=3"], "--set: env must be a mapping, got 3"),
        (["noequals"], "--set 'noequals': expected key.path=value"),
    ],
)
def test_bad_values_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(overrides=overrides)
    assert str(err.value).startswith(message), str(err.value)


def test_errors_in_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("algo:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=f"^{path}: algo.lrr is not a known key"):
        load_config(path)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="^nowhere.yaml: config file not found"):
        load_config("nowhere.yaml")


def test_unparseable_and_non_mapping_yaml(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("env: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: top level must be a mapping, got list"):
        load_config(listing)


def test_cuda_request_without_cuda_is_a_clear_error() -> None:
    import torch

    from harness.device import resolve_device

    if torch.cuda.is_available():
        with pytest.raises(ConfigError, match="only"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(ConfigError, match="experiment.device is 'cuda' but"):
            resolve_device("cuda")


@pytest.mark.parametrize("name", ["cuda:x", "tpu", "cuda:-1", "cpu:0:1"])
def test_device_strings_torch_rejects_are_a_config_error(name: str) -> None:
    from harness.device import resolve_device

    with pytest.raises(ConfigError, match="^experiment.device must be auto, cpu, cuda or cuda:K"):
        resolve_device(name)  # what `vecbench eval --device` passes without the config


def test_config_hash_ignores_folders_names_logging_and_tracking() -> None:
    base = load_config(overrides=["tracking.wandb=disabled"])
    same = load_config(
        overrides=[
            "experiment.run_root=/elsewhere/runs",
            "experiment.name=renamed",
            "experiment.log_interval=7",
            "experiment.checkpoint_interval=3",
            "experiment.cuda_graph=false",
            "experiment.device=cpu",
            "tracking.wandb=online",
            "tracking.project=other",
            "tracking.tags=[a, b]",
        ]
    )
    assert config_hash(same) == config_hash(base)
    for change in ("algo.lr=0.001", "experiment.seed=1", "experiment.total_env_steps=1000"):
        assert config_hash(load_config(overrides=[change])) != config_hash(base), change


def test_hash_leaves_out_exactly_the_documented_keys() -> None:
    data = to_dict(load_config())
    kept = semantic_dict(load_config())
    assert set(data) - set(kept) == {"tracking"}
    assert set(data["experiment"]) - set(kept["experiment"]) == set(HASH_EXCLUDED["experiment"])
    assert kept["env"] == data["env"] and kept["algo"] == data["algo"]
    assert {"seed", "total_env_steps", "stop_at_return", "eval_interval"} <= set(kept["experiment"])
