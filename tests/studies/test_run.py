"""Real studies, end to end on CPU with tiny budgets."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from harness.cli import main
from harness.errors import VecbenchError
from harness.tracking import RunStore
from studies.engine import open_study
from studies.run import run_study
from studies.spec import load_study

GRID_ENVS = {"env.num_envs": {"type": "categorical", "choices": [16, 32, 48, 64]}}


def trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False)


def test_params_reach_the_training_config_and_runs_are_recorded(write_study) -> None:
    path = write_study(
        space={
            "algo.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
            "algo.num_epochs": {"type": "int", "low": 1, "high": 3},
        },
        seeds=[3, 4],
        n_trials=2,
        sampler={"name": "random", "seed": 1},
    )
    loaded = load_study(path)
    study = run_study(loaded)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 2
    for trial in done:
        run_dirs = trial.user_attrs["run_dirs"]
        assert [Path(d).name for d in run_dirs] == ["seed-3", "seed-4"]
        finals = []
        for seed, run_dir in zip((3, 4), run_dirs, strict=True):
            store = RunStore.open(Path(run_dir))
            config = store.config()
            assert config.algo.lr == trial.params["algo.lr"]
            assert config.algo.num_epochs == trial.params["algo.num_epochs"]
            assert config.experiment.seed == seed
            assert config.tracking.group == "s"  # the W&B group is the study
            assert store.meta()["context"] == {
                "study": "s",
                "trial": trial.number,
                "params": trial.params,
            }
            finals.append(store.summary()["final_return"])
        assert trial.value == pytest.approx(sum(finals) / 2)  # mean over seeds


CONDITIONAL = {
    "algo.lr_schedule": {"type": "categorical", "choices": ["fixed", "adaptive"]},
    "algo.desired_kl": {
        "type": "float",
        "low": 0.001,
        "high": 0.02,
        "when": {"algo.lr_schedule": ["adaptive"]},
    },
}


def test_conditional_parameter_only_when_its_condition_holds(write_study) -> None:
    path = write_study(
        space=CONDITIONAL,
        sampler={"name": "grid"},
    )
    # grid needs categorical: the conditional float makes it invalid; use random instead
    with pytest.raises(Exception, match="must be categorical for the grid sampler"):
        load_study(path)
    path = write_study(
        space=CONDITIONAL,
        sampler={"name": "random", "seed": 0},
        n_trials=4,
        config={
            "tracking": {"wandb": "disabled"},
            "env": {"num_envs": 16},
            "algo": {"num_steps": 4},
            "experiment": {"total_env_steps": 1024},
        },
    )
    study = run_study(load_study(path))
    seen = {t.params["algo.lr_schedule"] for t in trials(study)}
    assert seen == {"fixed", "adaptive"}
    for t in trials(study):
        assert ("algo.desired_kl" in t.params) == (t.params["algo.lr_schedule"] == "adaptive")


@pytest.mark.parametrize("isolation", ["worker", "process"])
def test_median_pruner_prunes_trials_that_do_not_learn(write_study, isolation: str) -> None:
    path = write_study(
        trial_isolation=isolation,
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
        pruner={"name": "median", "n_startup_trials": 2, "n_warmup_steps": 2048},
    )
    study = run_study(load_study(path))
    states = {(t.params["algo.lr"], t.params["algo.gae_lambda"]): t.state for t in trials(study)}
    assert states[(1e-3, 0.95)] == states[(1e-3, 0.9)] == TrialState.COMPLETE
    assert states[(1e-7, 0.95)] == states[(1e-7, 0.9)] == TrialState.PRUNED


def test_wilcoxon_prunes_on_seeds(write_study) -> None:
    path = write_study(
        config={
            "tracking": {"wandb": "disabled"},
            "env": {"num_envs": 64},
            "algo": {"num_steps": 8, "lr_schedule": "fixed"},
            "experiment": {"total_env_steps": 12288, "log_interval": 4},
        },
        space={"algo.lr": {"type": "categorical", "choices": [1e-3, 1e-7]}},
        seeds=[0, 1, 2, 3, 4, 5],
        sampler={"name": "grid"},
        pruner={"name": "wilcoxon", "p_threshold": 0.1},
    )
    study = run_study(load_study(path))
    by_lr = {t.params["algo.lr"]: t for t in trials(study)}
    assert by_lr[1e-3].state == TrialState.COMPLETE
    assert by_lr[1e-7].state == TrialState.PRUNED
    assert len(by_lr[1e-7].intermediate_values) < 6  # stopped before running every seed


def test_grid_covers_every_point_once_with_two_workers(write_study) -> None:
    path = write_study(
        space=GRID_ENVS,
        sampler={"name": "grid"},
        config={
            "tracking": {"wandb": "disabled"},
            "algo": {"num_steps": 4},
            "experiment": {"total_env_steps": 2048},
        },
    )
    study = run_study(load_study(path), workers=2)
    done = [t for t in trials(study) if t.state == TrialState.COMPLETE]
    assert sorted(t.params["env.num_envs"] for t in done) == [16, 32, 48, 64]
    assert len(trials(study)) == 4
    workers = {t.user_attrs["worker"] for t in done}
    assert len(workers) == 2  # both workers took trials


def test_rerun_resumes_without_redoing_finished_trials(write_study) -> None:
    space = {"algo.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}}
    path = write_study(space=space, n_trials=2, sampler={"name": "random", "seed": 0})
    study = run_study(load_study(path))
    first = {t.number: (t.params, t.datetime_complete) for t in trials(study)}
    assert len(first) == 2
    # The same command again: nothing left to do.
    assert len(trials(run_study(load_study(path)))) == 2
    # A larger budget: only the new trials run; the finished ones are untouched.
    path = write_study(space=space, n_trials=3, sampler={"name": "random", "seed": 0})
    study = run_study(load_study(path))
    after = {t.number: (t.params, t.datetime_complete) for t in trials(study)}
    assert len(after) == 3 and all(after[n] == first[n] for n in first)
    # The resumed worker draws from a stream of its own: no finished point comes again.
    assert len({t.params["algo.lr"] for t in trials(study)}) == 3
    assert [t.user_attrs["sampler_stream"] for t in trials(study)] == [0, 0, 2]


def test_parallel_workers_suggest_distinct_points(write_study) -> None:
    # The default sampler (TPE, seed 0) in two worker processes, then a resumed third.
    space = {"algo.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}}
    path = write_study(space=space, n_trials=4)
    study = run_study(load_study(path), workers=2)
    assert len(trials(study)) == 4
    assert len({t.params["algo.lr"] for t in trials(study)}) == 4
    assert {t.user_attrs["sampler_stream"] for t in trials(study)} == {0, 1}
    path = write_study(space=space, n_trials=6)
    study = run_study(load_study(path))
    assert len({t.params["algo.lr"] for t in trials(study)}) == 6


def test_trial_left_running_by_a_dead_worker_is_retried(write_study) -> None:
    space = {"algo.lr": {"type": "categorical", "choices": [1e-3, 3e-4]}}
    path = write_study(space=space, sampler={"name": "grid"})
    loaded = load_study(path)
    study, storage = open_study(loaded)
    orphan = study.ask()  # as if a worker took it and was killed
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (storage.heartbeat_dir / f"trial-{orphan.number}.json").write_text(
        f'{{"host": "{socket.gethostname()}", "pid": {dead.pid}}}'
    )
    study = run_study(loaded)
    states = [t.state for t in trials(study)]
    assert states.count(TrialState.FAIL) == 1 and states.count(TrialState.COMPLETE) == 2
    retried = [t for t in trials(study) if t.system_attrs.get("failed_trial") == orphan.number]
    # The orphan was the first grid point; its retry runs that point, and each point once.
    assert len(retried) == 1 and retried[0].params == {"algo.lr": 1e-3}
    assert retried[0].state == TrialState.COMPLETE
    complete = [t.params["algo.lr"] for t in trials(study) if t.state == TrialState.COMPLETE]
    assert sorted(complete) == [3e-4, 1e-3]


@pytest.mark.parametrize("isolation", ["worker", "process"])
def test_crashing_trial_fails_alone(
    write_study, isolation: str, caplog: pytest.LogCaptureFixture
) -> None:
    # 4 minibatches cannot be cut from 2 envs x 1 step: that trial fails, the other runs.
    path = write_study(
        space={"env.num_envs": {"type": "categorical", "choices": [2, 32]}},
        sampler={"name": "grid"},
        config={
            "tracking": {"wandb": "disabled"},
            "algo": {"num_steps": 1, "num_minibatches": 4},
            "experiment": {"total_env_steps": 2048},
        },
        trial_isolation=isolation,
    )
    caplog.set_level(logging.INFO, logger="vecbench")
    study = run_study(load_study(path))  # one trial of two failed: no error
    by_n = {t.params["env.num_envs"]: t for t in trials(study)}
    assert by_n[2].state == TrialState.FAIL
    assert "num_minibatches must be <=" in by_n[2].user_attrs["error"]
    assert by_n[32].state == TrialState.COMPLETE
    # Its line says why, in one line (a child's reason is its traceback's last line).
    (line,) = [r.getMessage() for r in caplog.records if " FAIL " in r.getMessage()]
    assert re.fullmatch(
        rf"trial {by_n[2].number} FAIL in [\d.]+ s \| env.num_envs=2 \| "
        r"(trial process exited with 1: harness\.errors\.)?ConfigError: .*"
        r"num_minibatches must be <=.*",
        line,
    ), line


def test_a_run_whose_trials_all_fail_is_an_error_and_status_says_why(
    write_study, capsys: pytest.CaptureFixture
) -> None:
    path = write_study(
        space={"env.num_envs": {"type": "categorical", "choices": [2, 3]}},
        sampler={"name": "grid"},
        config={
            "tracking": {"wandb": "disabled"},
            "algo": {"num_steps": 1, "num_minibatches": 4},
            "experiment": {"total_env_steps": 2048},
        },
    )
    assert main(["study", "run", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(
        f"error: {path}: all 2 trial(s) of this run failed; first error: trial 0: ConfigError: "
    ), err[-1]
    assert "num_minibatches must be <=" in err[-1]
    assert main(["study", "status", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    failed = [line for line in out if " failed: " in line]
    assert [line.split(":")[0] for line in failed] == ["trial 0 failed", "trial 1 failed"]
    assert all("num_minibatches must be <=" in line for line in failed), failed
    # Run again: no trial ends in this run, so nothing new failed.
    assert main(["study", "run", str(path)]) == 0


@pytest.mark.parametrize(
    ("devices", "gpus", "said"),
    [
        (0, ["0", "1"], "no CUDA device"),  # a CPU machine, as torch here may well be
        (1, ["0", "1"], "1 CUDA device(s), so indices run 0..0"),
        (2, ["0,1", "2,3"], "2 CUDA device(s), so indices run 0..1"),  # two GPUs a worker
    ],
)
def test_gpus_torch_cannot_see_are_refused_before_the_study_starts(
    write_study,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    devices: int,
    gpus: list[str],
    said: str,
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: devices)
    path = write_study(space=GRID_ENVS, sampler={"name": "grid"})
    assert main(["study", "run", str(path), "--workers", "2", "--gpus", *gpus]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --gpus {' '.join(gpus)}: torch sees {said}\n"
    assert not (load_study(path).study_dir / "journal.log").exists()


def test_a_worker_killed_by_a_signal_is_named(write_study, monkeypatch: pytest.MonkeyPatch) -> None:
    import studies.run

    def launch(loaded, url, index, threads, gpus):
        code = ["raise SystemExit(2)", "import os; os.kill(os.getpid(), 9)"][index]
        return [sys.executable, "-c", code], dict(os.environ)

    monkeypatch.setattr(studies.run, "worker_launch", launch)
    path = write_study(space=GRID_ENVS, sampler={"name": "grid"})
    with pytest.raises(VecbenchError) as err:
        run_study(load_study(path), workers=2)
    assert str(err.value) == (
        "worker 0 exited with 2; worker 1 was killed by signal 9 (SIGKILL); see the lines above"
    )


def test_cli_run_and_status(write_study, capsys: pytest.CaptureFixture) -> None:
    path = write_study(
        space={"env.num_envs": {"type": "categorical", "choices": [16, 32]}},
        sampler={"name": "grid"},
        config={
            "tracking": {"wandb": "disabled"},
            "algo": {"num_steps": 4},
            "experiment": {"total_env_steps": 2048},
        },
    )
    assert main(["study", "run", str(path)]) == 0
    capsys.readouterr()
    assert main(["study", "status", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2/2 trials; complete 2" in out
    assert "best: trial" in out and "param:env.num_envs" in out
    assert main(["study", "status", str(write_study("other", space=GRID_ENVS))]) == 2
    assert "study 'other' not found" in capsys.readouterr().err


def _wait_for_running_trial(study_name: str, url: str, pid: int, timeout: float) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        study = optuna.load_study(study_name=study_name, storage=url)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get("worker", "").endswith(f":{pid}"):
                return t.number
        time.sleep(0.2)
    raise AssertionError("worker never started a trial")


@pytest.mark.parametrize("backend", ["journal", "postgres"])
def test_kill_9_a_worker_and_the_study_still_completes(
    backend: str, write_study, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    name = f"kill-{backend}"
    path = write_study(
        name,
        space={"algo.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}},
        n_trials=4,
        sampler={"name": "random", "seed": 0},
        heartbeat_interval_s=1.0,
        heartbeat_grace_s=4.0,
        config={
            "tracking": {"wandb": "disabled"},
            "env": {"num_envs": 64},
            "algo": {"num_steps": 8},
            # Long enough (a few seconds a trial in a warm worker) to be killed mid-trial.
            "experiment": {"total_env_steps": 40960},
        },
    )
    loaded = load_study(path)
    url = request.getfixturevalue("postgres_url") if backend == "postgres" else loaded.storage_url()
    open_study(loaded, url)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "studies.worker_main", str(path), "--storage", url]
    victim = subprocess.Popen([*cmd, "--index", "0"], env=env)
    survivor = subprocess.Popen([*cmd, "--index", "1"], env=env)
    try:
        killed = _wait_for_running_trial(name, _optuna_url(url), victim.pid, timeout=60)
        time.sleep(1.0)  # in the middle of its trial
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        assert survivor.wait(timeout=240) == 0
    finally:
        for p in (victim, survivor):
            if p.poll() is None:
                p.kill()
    study = optuna.load_study(study_name=name, storage=_optuna_url(url))
    all_trials = trials(study)
    assert all_trials[killed].state == TrialState.FAIL
    retry = [t for t in all_trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params == all_trials[killed].params
    complete = [t for t in all_trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4  # the whole budget, none lost
    assert {t.state for t in all_trials} == {TrialState.COMPLETE, TrialState.FAIL}
    assert len(all_trials) == 5  # 4 + the retry of the killed one


def _optuna_url(url: str):
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = url[len("journal:") :]
        return optuna.storages.JournalStorage(
            JournalFileBackend(path, lock_obj=JournalFileOpenLock(path))
        )
    return url


def test_study_yaml_written_by_hand_runs_via_cli_workers(write_study, tmp_path: Path) -> None:
    path = write_study(
        space=GRID_ENVS,
        sampler={"name": "grid"},
        config={
            "tracking": {"wandb": "disabled"},
            "algo": {"num_steps": 4},
            "experiment": {"total_env_steps": 2048},
        },
    )
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "study", "run", str(path), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "4/4 trials; complete 4" in proc.stdout
    assert yaml.safe_load(path.read_text())["name"] == "s"


def test_layer_sizes_as_categorical_choices(write_study) -> None:
    path = write_study(
        space={"algo.actor_hidden": {"type": "categorical", "choices": [[16], [32, 32]]}},
        sampler={"name": "grid"},
        config={
            "tracking": {"wandb": "disabled"},
            "algo": {"num_steps": 4},
            "experiment": {"total_env_steps": 2048},
        },
    )
    study = run_study(load_study(path))
    hidden = []
    for t in trials(study):
        assert t.state == TrialState.COMPLETE
        hidden.append(RunStore.open(Path(t.user_attrs["run_dirs"][0])).config().algo.actor_hidden)
    assert sorted(hidden) == [(16,), (32, 32)]


def test_a_worker_trains_its_trials_in_its_own_process(write_study) -> None:
    path = write_study(space=GRID_ENVS, sampler={"name": "grid"})
    study = run_study(load_study(path))  # one worker: this process
    done = [t for t in trials(study) if t.state == TrialState.COMPLETE]
    assert len(done) == 4
    assert {t.user_attrs["worker"] for t in done} == {f"{socket.gethostname()}:{os.getpid()}"}
    for t in done:  # each trial still writes a run directory of its own that reads back
        (run_dir,) = t.user_attrs["run_dirs"]
        assert RunStore.open(Path(run_dir)).summary()["env_steps"] >= 8192  # whole iterations


@pytest.mark.parametrize("name", ["td3", "sac"])
def test_off_policy_trial_whose_critic_diverges_is_pruned(write_study, name: str) -> None:
    path = write_study(
        space={"algo.critic_lr": {"type": "categorical", "choices": [1e30]}},
        sampler={"name": "grid"},
        config={
            "tracking": {"wandb": "disabled"},
            "env": {"num_envs": 16, "action_type": "continuous"},
            "algo": {"name": name, "batch_size": 32, "hidden": [16], "learning_starts": 256,
                     "max_grad_norm": 1e30},
            "experiment": {"total_env_steps": 2048, "log_interval": 16},
        },
    )  # fmt: skip
    (trial,) = trials(run_study(load_study(path)))
    assert trial.state == TrialState.PRUNED
    assert "non-finite" in trial.user_attrs["error"] and "critic_loss" in trial.user_attrs["error"]
