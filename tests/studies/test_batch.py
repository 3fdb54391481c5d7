"""Batched trials (batch_trials): many trials trained together by one worker."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from optuna.trial import TrialState

from harness.cli import main
from harness.tracking import RunStore
from reports.collect import collect
from studies.engine import open_study
from studies.run import run_study
from studies.spec import load_study


def test_batched_trials_are_full_trials_grouped_by_shape(write_study, caplog) -> None:
    """Six trials over two num_envs values, two seeds each, asked six at a time: two
    batches (one per num_envs) of six runs; every trial COMPLETE with its own run
    directories, configs and summaries, and a value that is the mean of its seeds."""
    path = write_study(
        space={
            "algo.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
            "env.num_envs": {"type": "categorical", "choices": [32, 64]},
        },
        seeds=[0, 1],
        n_trials=6,
        batch_trials=6,
        sampler={"name": "random", "seed": 1},
    )
    with caplog.at_level(logging.INFO, logger="vecbench"):
        study = run_study(load_study(path))
    batches = [r.getMessage() for r in caplog.records if r.getMessage().startswith("batch of")]
    sizes = sorted(int(line.split()[2]) for line in batches)
    envs = [t.params["env.num_envs"] for t in study.trials]
    assert sizes == sorted([envs.count(32), envs.count(64)])
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    for trial in study.trials:
        finals = []
        for seed, run_dir in zip((0, 1), trial.user_attrs["run_dirs"], strict=True):
            store = RunStore.open(Path(run_dir))
            config = store.config()
            assert (config.algo.lr, config.env.num_envs, config.experiment.seed) == (
                trial.params["algo.lr"],
                trial.params["env.num_envs"],
                seed,
            )
            assert store.meta()["batch"]["members"] == 2 * envs.count(config.env.num_envs)
            assert len(store.metrics()) == 8192 // (8 * config.env.num_envs) // 2
            finals.append(store.summary()["final_return"])
        assert trial.value == pytest.approx(sum(finals) / 2)
    # Reports read every member's run back, each with its own curve.
    collection = collect([load_study(path).study_dir])
    assert collection.problems == [] and len(collection.runs) == 12
    assert len(collection.studies) == 1 and len(collection.studies[0].trials) == 6
    assert collection.curves.groupby("run_id").ngroups == 12
    assert sorted(collection.runs["trial"]) == sorted([t.number for t in study.trials] * 2)


def test_a_pruned_member_is_pruned_in_optuna_and_the_others_complete(write_study) -> None:
    """Four trials in one batch under the threshold pruner (which judges each trial alone;
    the median pruner compares with finished trials, and a batch's trials finish
    together): the two that cannot learn are PRUNED while their batch goes on; the two
    that learn COMPLETE."""
    path = write_study(
        batch_trials=4,
        config={
            "tracking": {"wandb": "disabled"},
            "env": {"num_envs": 64},
            "algo": {"num_steps": 8, "lr_schedule": "fixed"},
            "experiment": {"total_env_steps": 16384, "log_interval": 2},
        },
        space={
            "algo.lr": {"type": "categorical", "choices": [1e-3, 1e-7]},
            "algo.gae_lambda": {"type": "categorical", "choices": [0.95, 0.9]},
        },
        sampler={"name": "grid"},
        pruner={"name": "threshold", "lower": 25.0, "n_warmup_steps": 8192},
    )
    study = run_study(load_study(path))
    states = {(t.params["algo.lr"], t.params["algo.gae_lambda"]): t.state for t in study.trials}
    assert states[(1e-3, 0.95)] == states[(1e-3, 0.9)] == TrialState.COMPLETE
    assert states[(1e-7, 0.95)] == states[(1e-7, 0.9)] == TrialState.PRUNED
    for trial in study.trials:
        rows = RunStore.open(Path(trial.user_attrs["trial_dir"]) / "seed-0").metrics()
        pruned = trial.state == TrialState.PRUNED
        assert (len(rows) < 16) == pruned  # a pruned member wrote no more rows


def test_batch_trials_from_the_command_line_and_refusals(write_study, capsys, caplog) -> None:
    """--batch-trials overrides the file (TD3 trials train as one batch); trials that
    cannot be batched (evaluation during training) train one by one, saying why; bad values
    are one-line errors naming the key."""
    path = write_study(
        config={
            "tracking": {"wandb": "disabled"},
            "env": {"num_envs": 16, "action_type": "continuous"},
            "algo": {"name": "td3", "learning_starts": 64, "batch_size": 32},
            "experiment": {"total_env_steps": 512, "log_interval": 4},
        },
        space={"algo.actor_lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}},
        n_trials=2,
    )
    with caplog.at_level(logging.INFO, logger="vecbench"):
        assert main(["study", "run", str(path), "--batch-trials", "2"]) == 0
    study, _ = open_study(load_study(path))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if m.startswith("batch of")] == [
        "batch of 2 trial(s), 2 run(s): 0 1"
    ]
    for trial in study.trials:
        store = RunStore.open(Path(trial.user_attrs["trial_dir"]) / "seed-0")
        assert store.meta()["batch"]["members"] == 2
        assert store.config().algo.actor_lr == trial.params["algo.actor_lr"]
    evaluating = write_study(
        name="e",
        config={
            "tracking": {"wandb": "disabled"},
            "env": {"num_envs": 16},
            "experiment": {"total_env_steps": 1024, "log_interval": 4, "eval_interval": 4},
        },
        space={"algo.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}},
        n_trials=2,
        batch_trials=2,
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vecbench"):
        assert main(["study", "run", str(evaluating)]) == 0
    alone = [r.getMessage() for r in caplog.records if "trains alone" in r.getMessage()]
    why = "experiment.eval_interval: batched trials do not evaluate during training"
    assert alone == [f"trial {n} trains alone: {why}" for n in (0, 1)]
    assert main(["study", "run", str(path), "--batch-trials", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: --batch-trials: must be > 0, got 0"
    bad = write_study(
        name="p",
        batch_trials=2,
        trial_isolation="process",
        space={"algo.lr": {"type": "float", "low": 1e-4, "high": 1e-3}},
    )
    assert main(["study", "run", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "batch_trials" in err[0] and "trial_isolation" in err[0]
    timed = write_study(
        name="t",
        batch_trials=4,
        objective=["final_return", "wall_time_s"],
        space={"algo.lr": {"type": "float", "low": 1e-4, "high": 1e-3}},
    )
    assert main(["study", "run", str(timed)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "batch_trials" in err[0] and "wall_time_s" in err[0]


def test_batched_workers_share_a_postgres_study(write_study, postgres_url: str) -> None:
    """Two worker processes on one PostgreSQL study, each training batches of two: the
    budget holds, every trial completes, and no point is trained twice."""
    path = write_study(
        name="pg-batch",
        storage=postgres_url,
        batch_trials=2,
        space={"algo.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}},
        n_trials=4,
        sampler={"name": "random", "seed": 3},
    )
    study = run_study(load_study(path), workers=2)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert len({t.params["algo.lr"] for t in study.trials}) == 4
    for trial in study.trials:
        meta = RunStore.open(Path(trial.user_attrs["run_dirs"][0])).meta()
        assert meta["batch"]["members"] in (1, 2)


def test_study_runs_are_named_by_study_trial_and_seed_in_wandb(write_study) -> None:
    """W&B offline: each member's run is <study>-t<trial>-s<seed>, job type train, grouped by
    study, tagged with its task and algorithm."""
    from tests.helpers.wandb_records import logged_run, run_file

    path = write_study(
        name="wb",
        config={
            "tracking": {"wandb": "offline", "tags": ["mine"]},
            "env": {"num_envs": 16},
            "experiment": {"total_env_steps": 512},
        },
        space={"algo.lr": {"type": "float", "low": 1e-4, "high": 1e-3}},
        seeds=[0, 1],
        n_trials=2,
        batch_trials=2,
    )
    study = run_study(load_study(path))
    for trial in study.trials:
        for seed, run_dir in zip((0, 1), trial.user_attrs["run_dirs"], strict=True):
            run = logged_run(run_file(Path(run_dir)))
            assert run == {
                "name": f"wb-t{trial.number}-s{seed}",
                "job_type": "train",
                "group": "wb",
                "tags": ["mine", "cartpole", "ppo"],
            }
