"""A run's files read back: metrics, config, summary, W&B offline records, checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness.config import config_hash, load_config
from harness.errors import ConfigError, DivergedError, RunDirError
from harness.evaluate import evaluate
from harness.runner import resume, train
from harness.tracking import RunStore
from tests.helpers.wandb_records import logged_config, logged_history, run_file

SMALL = ["env.num_envs=64", "algo.num_steps=8", "experiment.log_interval=2"]  # 512 steps/iter


def small(tmp: Path, *overrides: str, wandb: str = "disabled", on_log=None):
    config = load_config(overrides=[*SMALL, f"tracking.wandb={wandb}", *overrides])
    return train(config, run_dir=tmp, on_log=on_log)


def test_run_directory_reads_back(tmp_path: Path) -> None:
    result = small(tmp_path / "run", "experiment.total_env_steps=5120", "algo.lr=7e-4")
    store = RunStore.open(result.run_dir)
    metrics = store.metrics()
    assert list(metrics["iteration"]) == [2, 4, 6, 8, 10]
    assert list(metrics["env_steps"]) == [1024, 2048, 3072, 4096, 5120]
    assert metrics["episode_return"].notna().all() and (metrics["episodes"] > 0).all()
    # Without randomisation or a time-out every cartpole episode scores its length.
    assert (metrics["episode_return"] == metrics["episode_length"]).all()
    assert store.config() == load_config(
        overrides=[
            *SMALL,
            "tracking.wandb=disabled",
            "experiment.total_env_steps=5120",
            "algo.lr=7e-4",
        ]
    )
    summary = store.summary()
    assert summary["completed"] is True
    assert summary["env_steps"] == 5120
    assert summary["final_return"] == pytest.approx(metrics["episode_return"].iloc[-1])
    assert summary["best_return"] == pytest.approx(metrics["episode_return"].max())
    meta = store.meta()
    assert meta["torch"] == torch.__version__
    assert meta["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert len(meta["config_hash"]) == 12


def test_wandb_offline_run_holds_config_and_metrics(tmp_path: Path) -> None:
    result = small(
        tmp_path / "run",
        "experiment.total_env_steps=4096",
        "algo.lr=7e-4",
        "tracking.group=g1",
        wandb="offline",
    )
    path = run_file(result.run_dir)
    config = logged_config(path)
    assert config["algo"]["lr"] == 7e-4 and config["env"]["num_envs"] == 64
    assert config["tracking"]["group"] == "g1"
    history = logged_history(path)
    metrics = pd.read_csv(result.run_dir / "metrics.csv")
    assert [h["env_steps"] for h in history] == list(metrics["env_steps"])
    assert [h["episode_return"] for h in history] == pytest.approx(list(metrics["episode_return"]))
    assert json.loads((result.run_dir / "meta.json").read_text())["wandb_run_id"] in path.name


def test_existing_run_directory_is_not_overwritten(tmp_path: Path) -> None:
    small(tmp_path / "run", "experiment.total_env_steps=1024")
    with pytest.raises(RunDirError, match="already holds a run; use --resume"):
        small(tmp_path / "run", "experiment.total_env_steps=1024")


def test_resume_continues_steps_and_metrics(tmp_path: Path) -> None:
    first = small(
        tmp_path / "run", "experiment.total_env_steps=5120", "experiment.checkpoint_interval=5"
    )
    assert first.iterations == 10
    second = resume(first.run_dir, ["experiment.total_env_steps=10240"])
    assert second.iterations == 20 and second.env_steps == 10240
    metrics = RunStore.open(first.run_dir).metrics()
    assert list(metrics["iteration"]) == list(range(2, 21, 2))
    assert second.wall_time_s > first.wall_time_s
    # Learning carried over: the optimiser's step count kept growing.
    store = RunStore.open(first.run_dir)
    state = store.load_checkpoint(torch.device("cpu"))
    assert state["iteration"] == 20
    assert int(state["algo"]["optimizer"]["steps"]) == 20 * 4 * 4
    # The raised budget is the run's from now on: config.yaml and its hash say so.
    assert store.config().experiment.total_env_steps == 10240
    assert store.meta()["config_hash"] == config_hash(store.config())
    assert store.meta()["config_hash"] == state["config_hash"]


def test_resuming_a_finished_run_changes_nothing_and_says_how_to_go_on(tmp_path: Path) -> None:
    run = small(tmp_path / "run", "experiment.total_env_steps=1024").run_dir
    before = {name: (run / name).read_bytes() for name in ("summary.json", "metrics.csv")}
    with pytest.raises(RunDirError, match="already trained 1,024 env steps of its experiment"
                       r".total_env_steps=1024; to train on, raise it"):  # fmt: skip
        resume(run)
    assert {name: (run / name).read_bytes() for name in before} == before


@pytest.mark.parametrize("key", ["algo.lr=1e-3", "env.num_envs=32", "experiment.seed=3"])
def test_resume_refuses_what_shaped_the_steps_so_far(tmp_path: Path, key: str) -> None:
    run = small(tmp_path / "run", "experiment.total_env_steps=1024").run_dir
    name = key.partition("=")[0]
    with pytest.raises(ConfigError, match=f"--set {name}: a resumed run keeps its env, algo "
                       "and seed; to change it, start a new run"):  # fmt: skip
        resume(run, [key, "experiment.total_env_steps=2048"])
    assert len(RunStore.open(run).metrics()) == 1


def test_a_run_being_trained_is_not_trained_by_a_second_process(tmp_path: Path) -> None:
    run = small(tmp_path / "run", "experiment.total_env_steps=1024").run_dir
    rows = (run / "metrics.csv").read_bytes()
    (tmp_path / "fresh").mkdir()
    with RunStore(run).lock(), RunStore(tmp_path / "fresh").lock():  # as their trainers hold them
        with pytest.raises(RunDirError, match=r"run: pid \d+ on .* is training this run"):
            resume(run, ["experiment.total_env_steps=2048"])
        with pytest.raises(RunDirError, match="fresh: pid .* is training this run"):
            small(tmp_path / "fresh", "experiment.total_env_steps=1024")
    assert (run / "metrics.csv").read_bytes() == rows
    assert not (tmp_path / "fresh" / "config.yaml").exists()
    resume(run, ["experiment.total_env_steps=2048"])  # the lock went with its holder
    assert list(RunStore.open(run).metrics()["env_steps"]) == [1024, 2048]


def test_crash_keeps_finished_rows_and_resume_drops_rows_past_the_checkpoint(
    tmp_path: Path,
) -> None:
    def crash(row):
        if row["iteration"] == 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        small(
            tmp_path / "run",
            "experiment.total_env_steps=10240",
            "experiment.checkpoint_interval=5",
            on_log=crash,
        )
    store = RunStore.open(tmp_path / "run")
    assert list(store.metrics()["iteration"]) == [2, 4, 6, 8]  # nothing finished is lost
    with pytest.raises(RunDirError):
        store.summary()  # not completed
    resume(tmp_path / "run")
    # Restarted from the iteration-5 checkpoint: rows 6 and 8 are logged again, once.
    assert list(store.metrics()["iteration"]) == list(range(2, 21, 2))
    assert store.summary()["completed"] is True


def test_corrupt_or_missing_run_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="nothing: run directory not found"):
        resume(tmp_path / "nothing")
    run = small(tmp_path / "run", "experiment.total_env_steps=1024").run_dir
    checkpoint = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RunDirError, match="checkpoint.pt: cannot read checkpoint"):
        resume(run)
    torch.save({"iteration": 3}, run / "checkpoint.pt")  # readable, but not a run's
    with pytest.raises(RunDirError, match=r"checkpoint.pt: not a vecbench checkpoint \(no algo"):
        evaluate(run, episodes=2)
    with pytest.raises(RunDirError, match="checkpoint.pt: not a vecbench checkpoint"):
        resume(run, ["experiment.total_env_steps=2048"])
    other = small(tmp_path / "other", "experiment.total_env_steps=1024", "algo.actor_hidden=[8]")
    (run / "checkpoint.pt").write_bytes((other.run_dir / "checkpoint.pt").read_bytes())
    with pytest.raises(RunDirError, match="checkpoint.pt: does not fit the run's config.yaml"):
        evaluate(run, episodes=2)
    (run / "checkpoint.pt").write_bytes(checkpoint)
    for content in ("null", "[1, 2]", "\x87garbage"):
        (run / "meta.json").write_text(content, encoding="latin-1")
        with pytest.raises(RunDirError, match="meta.json: corrupt"):
            resume(run, ["experiment.total_env_steps=2048"])
    (run / "config.yaml").write_text("env: [broken\n")
    with pytest.raises(RunDirError, match="config.yaml: corrupt YAML"):
        resume(run)


@pytest.mark.slow
def test_eval_replays_the_last_evaluation_in_training(solved_cartpole) -> None:
    # `vecbench eval` plays the episodes that evaluations during training play (same seed),
    # so the greedy policy of the final checkpoint scores the last logged eval_return exactly.
    last = pd.read_csv(solved_cartpole.run_dir / "metrics.csv").dropna(subset=["eval_return"])
    greedy = evaluate(solved_cartpole.run_dir, episodes=100, deterministic=True)
    assert greedy.mean_return == pytest.approx(last["eval_return"].iloc[-1], rel=1e-6)
    assert greedy.mean_length == pytest.approx(last["eval_length"].iloc[-1], rel=1e-6)
    assert greedy.mean_return >= 475
    # Other episodes and the stochastic policy: still far above a random policy's ~22.
    stochastic = evaluate(solved_cartpole.run_dir, episodes=200, deterministic=False, seed=1)
    assert stochastic.episodes == 200 and stochastic.mean_return > 100, stochastic
    assert stochastic.mean_length == stochastic.mean_return  # one reward per step


@pytest.mark.slow
def test_eval_on_a_harder_env_scores_lower(solved_cartpole) -> None:
    # Without motor force no policy can hold the pole up: the override must reach
    # the evaluation envs and cost return (a pole left alone falls within a few tens of steps).
    harder = evaluate(
        solved_cartpole.run_dir,
        episodes=100,
        deterministic=True,
        overrides=["env.randomization.motor_gain={low: 0.0, high: 0.0}"],
    )
    assert harder.mean_return < 100 and not math.isnan(harder.mean_return)


def test_evaluation_during_training_and_patience_decide_the_stop(tmp_path: Path) -> None:
    # A threshold every evaluation meets: the run stops at the second evaluation (patience 2).
    result = small(
        tmp_path / "a",
        "experiment.total_env_steps=20480",
        "experiment.eval_interval=4",
        "experiment.eval_episodes=8",
        "experiment.stop_at_return=1",
        "experiment.stop_patience=2",
    )
    metrics = RunStore.open(result.run_dir).metrics()
    assert result.iterations == 8 and list(metrics["iteration"]) == [2, 4, 6, 8]
    assert metrics["eval_return"].isna().tolist() == [True, False, True, False]
    assert (metrics["eval_return"].dropna() == metrics["eval_length"].dropna()).all()
    # Training returns alone: patience counts log intervals; a threshold never met runs on.
    result = small(
        tmp_path / "b",
        "experiment.total_env_steps=10240",
        "experiment.stop_at_return=1000",
        "experiment.stop_patience=1",
    )
    assert result.iterations == 20
    assert "eval_return" not in RunStore.open(result.run_dir).metrics()


def test_evaluation_during_training_leaves_the_trajectory_unchanged(tmp_path: Path) -> None:
    plain = small(tmp_path / "a", "experiment.total_env_steps=5120")
    evaluated = small(
        tmp_path / "b",
        "experiment.total_env_steps=5120",
        "experiment.eval_interval=2",
        "experiment.eval_episodes=4",
    )
    a = RunStore.open(plain.run_dir).metrics()
    b = RunStore.open(evaluated.run_dir).metrics()
    for column in ("episode_return", "policy_loss", "value_loss"):
        assert list(a[column]) == list(b[column])
    assert b["eval_return"].notna().all()


def test_eval_interval_must_be_a_multiple_of_log_interval() -> None:
    with pytest.raises(ConfigError, match="experiment.eval_interval must be 0 or a multiple of"):
        load_config(overrides=["experiment.log_interval=5", "experiment.eval_interval=7"])
    with pytest.raises(ConfigError, match="experiment.stop_patience must be > 0, got 0"):
        load_config(overrides=["experiment.stop_patience=0"])


def test_cuda_graph_true_on_cpu_is_a_config_error_before_any_file(tmp_path: Path) -> None:
    config = load_config(
        overrides=["tracking.wandb=disabled", "experiment.device=cpu", "experiment.cuda_graph=true"]
    )
    with pytest.raises(ConfigError, match="experiment.cuda_graph needs a CUDA device, got cpu"):
        train(config, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_fused_env_true_where_it_cannot_run_is_a_config_error(tmp_path: Path, monkeypatch) -> None:
    def config(*overrides: str):
        return load_config(
            overrides=["tracking.wandb=disabled", "experiment.device=cpu", *overrides]
        )

    with pytest.raises(ConfigError, match="experiment.fused_env: .* needs a CUDA device, got cpu"):
        train(config("experiment.fused_env=true"), run_dir=tmp_path / "a")
    with pytest.raises(ConfigError, match="experiment.fused_env: arm has no fused step kernel"):
        train(config("experiment.fused_env=true", "env.name=arm"), run_dir=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # The kernel's inline PTX cannot build for ROCm: said before anything compiles.
    with monkeypatch.context() as patch:
        patch.setattr(torch.version, "hip", "6.4")
        with pytest.raises(ConfigError, match="experiment.fused_env: .* NVIDIA GPUs only"):
            train(config("experiment.fused_env=true"), run_dir=tmp_path / "rocm")
    # Left to auto, a CPU run steps the plain torch env and says so.
    run = tmp_path / "c"
    train(config("experiment.total_env_steps=2048", "experiment.compile=false"), run_dir=run)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["env_stepping"] == "eager" and meta["cuda_graph"] is False


def test_a_diverging_run_stops_with_an_error_and_keeps_its_rows(tmp_path: Path) -> None:
    with pytest.raises(DivergedError, match=r"training diverged at [\d,]+ env steps \(.*_loss"):
        small(tmp_path / "run", "experiment.total_env_steps=51200", "algo.lr=1e30")
    store = RunStore.open(tmp_path / "run")
    assert len(store.metrics()) >= 1  # the rows before and the diverged one are kept
    with pytest.raises(RunDirError):
        store.summary()  # not completed


def test_summary_is_strict_json_with_null_for_nan(tmp_path: Path) -> None:
    # One iteration of 4 steps: no episode can end, so there is no return yet.
    result = small(tmp_path / "run", "algo.num_steps=4", "experiment.total_env_steps=256")
    text = (result.run_dir / "summary.json").read_text()

    def refuse(constant: str) -> None:
        raise AssertionError(f"summary.json holds {constant}")

    assert json.loads(text, parse_constant=refuse)["final_return"] is None
    assert math.isnan(RunStore.open(result.run_dir).summary()["final_return"])


def test_envs_that_do_not_fit_in_memory_name_num_envs(tmp_path: Path, monkeypatch) -> None:
    from envs.cartpole import Cartpole
    from harness import registry

    class TooBig(Cartpole):
        def __init__(self, *args) -> None:  # as torch's CPU allocator fails
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: not enough "
                "memory: you tried to allocate 4000000000000 bytes."
            )

    monkeypatch.setitem(registry.ENVS, "cartpole", TooBig)
    with pytest.raises(ConfigError, match=r"env.num_envs=64: out of memory on cpu \(.*allocate"):
        small(tmp_path / "run")
    assert not (tmp_path / "run").exists()
