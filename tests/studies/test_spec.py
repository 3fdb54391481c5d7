"""Study files: what loads, and one clear error naming the file and key for what does not."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from harness.errors import ConfigError
from studies.engine import open_study
from studies.messages import RowLogged, SeedFinished, TrialJob, decode, encode
from studies.spec import load_study

LR = {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}


def test_shipped_studies_load() -> None:
    for path in sorted(Path("studies").glob("*.yaml")):
        loaded = load_study(path)
        assert loaded.spec.space, path
        loaded.trial_config({k: p.first_value() for k, p in loaded.spec.space.items()}, 0)


def test_trial_config_applies_params_and_seed(write_study) -> None:
    loaded = load_study(
        write_study(
            space={"algo.lr": LR, "env.num_envs": {"type": "categorical", "choices": [16, 32]}}
        )
    )
    config = loaded.trial_config({"algo.lr": 3e-3, "env.num_envs": 32}, seed=7)
    assert config.algo.lr == 3e-3 and config.env.num_envs == 32 and config.experiment.seed == 7
    assert config.algo.num_steps == 8  # from the study's base config


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"space": {"algo.lrr": LR}},
            "space.algo.lrr does not fit the run config: algo.lrr is not a known key",
        ),
        (
            {"space": {"env.randomization.mass.low": LR}},
            "space.env.randomization.mass.low does not fit the run config",
        ),
        (
            {"space": {"algo.lr": {**LR, "low": 0.1, "high": 0.01}}},
            "space.algo.lr.low must be <= high, got low=0.1 > high=0.01",
        ),
        (
            {"space": {"algo.activation": {"type": "categorical", "choices": []}}},
            "space.algo.activation.choices must list at least one value",
        ),
        ({"space": {"algo.lr": {"type": "float"}}}, "space.algo.lr.low and high are required"),
        (
            {"space": {"algo.lr": LR}, "sampler": {"name": "bayes"}},
            "sampler.name must be one of 'tpe', 'random', 'grid', 'cmaes', got 'bayes'",
        ),
        ({"space": {"algo.lr": LR}, "pruner": {"name": "asha"}}, "pruner.name must be one of"),
        (
            {"space": {"algo.lr": LR}, "sampler": {"name": "grid"}},
            "space.algo.lr must be categorical for the grid sampler",
        ),
        ({"space": {"algo.lr": LR}, "objective": "reward"}, "objective[0].metric must be one of"),
        (
            {
                "space": {"algo.lr": LR},
                "objective": ["final_return", "env_steps_per_second"],
                "pruner": {"name": "median"},
            },
            "pruner cannot prune a study with several objectives",
        ),
        (
            {"space": {"algo.lr": LR}, "objective": "eval_return"},
            "evaluation is required for the eval_return objective",
        ),
        ({"space": {"algo.lr": LR}, "n_trials": 0}, "n_trials must be > 0, got 0"),
        (
            {"space": {"algo.lr": LR}, "evaluation": {"set": ["algo.lr=0.1"]}},
            "evaluation.set: algo.lr: an evaluation plays the run's policy",
        ),
        # Both seed-0 runs would go to trial-N/seed-0: the second trips on the first's files.
        ({"space": {"algo.lr": LR}, "seeds": [0, 1, 0]}, "seeds must be distinct, got [0, 1, 0]"),
        (
            {"space": {"algo.lr": {**LR, "when": {"algo.lr_schedule": ["fixed"]}}}},
            "space.algo.lr.when names 'algo.lr_schedule', which is not a parameter listed before",
        ),
        ({"space": {"algo.lr": LR}, "colour": "red"}, "colour is not a known key"),
        ({}, "space is required"),
    ],
)
def test_bad_study_files_name_the_key(write_study, fields, message) -> None:
    path = write_study(**fields)
    with pytest.raises(ConfigError) as err:
        load_study(path)
    assert str(err.value).startswith(f"{path}: {message}"), str(err.value)


def test_base_config_is_read_relative_to_the_study_file(write_study, tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("algo: {num_steps: 5}\n")
    path = write_study(space={"algo.lr": LR}, base_config="base.yaml", config={})
    assert load_study(path).trial_config({"algo.lr": 1e-3}, 0).algo.num_steps == 5
    missing = write_study(space={"algo.lr": LR}, base_config="nothere.yaml")
    with pytest.raises(ConfigError) as err:
        load_study(missing)
    where = tmp_path / "nothere.yaml"
    assert str(err.value) == f"{missing}: base_config: {where}: config file not found"


def test_missing_study_file() -> None:
    with pytest.raises(ConfigError, match="^no/study.yaml: config file not found"):
        load_study("no/study.yaml")


def test_name_clash_with_a_different_space(write_study) -> None:
    open_study(load_study(write_study(space={"algo.lr": LR})))
    other = write_study(space={"algo.gamma": {"type": "float", "low": 0.9, "high": 0.99}})
    with pytest.raises(
        ConfigError, match="study 's' already exists in journal:.* with a different search space"
    ):
        open_study(load_study(other))
    # The same space (a larger budget) is the same study: it resumes.
    open_study(load_study(write_study(space={"algo.lr": LR}, n_trials=50)))


def test_unreachable_storage_is_named(write_study) -> None:
    loaded = load_study(write_study(space={"algo.lr": LR}))
    with pytest.raises(
        ConfigError,
        match=r"storage postgresql://me:\*\*\*@127.0.0.1:1/x is "
        "unreachable or invalid",
    ):
        open_study(loaded, "postgresql://me:secret@127.0.0.1:1/x")


def test_trial_messages_read_back_typed() -> None:
    job = TrialJob(
        trial=3,
        seeds=(0, 1),
        configs=({"experiment": {"total_env_steps": 1024}},) * 2,
        trial_dir="runs/t",
        context={"study": "s"},
        threshold=475.0,
        eval_episodes=10,
        eval_set=("env.randomization.pole_length={low: 0.2, high: 1.0}",),
    )
    assert decode(encode(job)) == job and job.steps_per_seed == 1024
    row = decode(encode(RowLogged(1, {"env_steps": 512, "episode_return": math.nan})))
    assert isinstance(row, RowLogged) and math.isnan(row.row["episode_return"])
    done = SeedFinished(0, 7, "runs/t/seed-7", {"steps_to_threshold": math.inf})
    assert decode(encode(done)) == done
