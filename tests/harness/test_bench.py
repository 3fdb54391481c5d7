"""vecbench bench's repeated measurements."""

from __future__ import annotations

import pytest

import harness.bench as bench
from harness.config import load_config
from harness.errors import ConfigError


def test_a_figure_is_the_median_of_its_repeats_with_min_and_max(monkeypatch) -> None:
    measured = iter([3.0e6, 1.0e6, 2.0e6, 9.0e6, 7.0e6, 8.0e6, 5.0e6, 6.0e6])
    monkeypatch.setattr(bench, "env_steps_per_second", lambda cfg, steps: next(measured))
    config = load_config(overrides=["tracking.wandb=disabled", "experiment.device=cpu"])
    rows = bench.run_bench(config, [16, 64], ("env",), steps=5, repeats=3)
    assert [
        (r["steps_per_second"], r["steps_per_second_min"], r["steps_per_second_max"]) for r in rows
    ] == [
        (2.0e6, 1.0e6, 3.0e6),
        (8.0e6, 7.0e6, 9.0e6),
    ]
    assert [r["repeats"] for r in rows] == [3, 3]
    assert "steps/s (median of 3, min-max)" in bench.format_table(rows)
    even = bench.run_bench(config, [16], ("env",), steps=5, repeats=2)  # 5e6 and 6e6
    assert even[0]["steps_per_second"] == pytest.approx(5.5e6)


def test_a_launch_figure_is_the_median_launch_of_its_repeats(monkeypatch) -> None:
    """The launch time reported is the median of the repeats' launch times (not the launch
    of the repeat with the median training rate), with its range."""
    runs = iter(
        [(9.0, 2.0, 3e6), (7.0, 2.2, 5e6), (8.0, 2.1, 1e6)]  # launch_s, train_s, rate
    )

    def launch(cfg, threshold):
        launch_s, train_s, rate = next(runs)
        return {"launch_s": launch_s, "train_s": train_s, "steps_per_second": rate,
                "threshold": threshold, "final_return": 480.0, "env_steps": 8192}  # fmt: skip

    monkeypatch.setattr(bench, "launch_to_return", launch)
    config = load_config(overrides=["tracking.wandb=disabled", "experiment.device=cpu"])
    (row,) = bench.run_bench(config, [16], ("launch",), repeats=3)
    assert (row["launch_s"], row["launch_s_min"], row["launch_s_max"]) == (8.0, 7.0, 9.0)
    assert (row["train_s"], row["train_s_min"], row["train_s_max"]) == (2.1, 2.0, 2.2)
    assert row["steps_per_second"] == 3e6
    assert "launch to 475: 8.0 s (7.0-9.0), training 2.1 s" in bench.format_table([row])
    assert row["algo_stepping"] == "eager"  # PPO's fused kernels need CUDA


def test_rows_say_whether_ppo_ran_its_fused_kernels(monkeypatch) -> None:
    import torch

    cpu = torch.device("cpu")

    def stepping(mode: str, *overrides: str) -> str | None:
        config = load_config(overrides=["env.num_envs=64", *overrides])
        return bench._algo_stepping(config, cpu, mode)

    assert stepping("train") == "eager"
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # where the kernels can run
    assert stepping("train") == stepping("launch") == "fused"
    assert stepping("env") is None and stepping("inference") is None
    assert stepping("train", "experiment.fused_algo=false") == "eager"
    off = ("experiment.fused_algo=false", "experiment.compile=true")
    assert stepping("train", *off) == "compiled"
    assert stepping("train", "algo.actor_hidden=[256, 256]", "experiment.compile=true") == (
        "compiled"
    )
    assert stepping("train", "algo.name=sac", "env.action_type=continuous") == "eager"


def test_a_benchmark_stopped_part_way_keeps_the_rows_it_measured(monkeypatch, tmp_path) -> None:
    """`vecbench bench -o OUT` saves each row as it comes: a measurement that fails (or a
    process killed) after the first num_envs leaves that row in OUT.json and OUT.csv."""
    import json

    import pandas as pd

    from harness.cli import main

    measured = iter([2.0e6])
    monkeypatch.setattr(bench, "env_steps_per_second", lambda cfg, steps: next(measured))
    out = tmp_path / "part"
    argv = ["bench", "--device", "cpu", "--modes", "env", "--num-envs", "16", "64",
            "--steps", "5", "--set", "tracking.wandb=disabled", "-o", str(out)]  # fmt: skip
    with pytest.raises(StopIteration):  # the second measurement fails
        main(argv)
    (row,) = json.loads(out.with_suffix(".json").read_text())
    assert (row["num_envs"], row["steps_per_second"]) == (16, 2.0e6)
    assert pd.read_csv(out.with_suffix(".csv"))["num_envs"].tolist() == [16]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part.csv", "part.json"]


def test_real_repeats_bracket_their_median_and_zero_is_refused() -> None:
    config = load_config(overrides=["tracking.wandb=disabled", "experiment.device=cpu"])
    (row,) = bench.run_bench(config, [16], ("env",), steps=5, repeats=3)
    assert row["steps_per_second_min"] <= row["steps_per_second"] <= row["steps_per_second_max"]
    with pytest.raises(ConfigError, match="--repeats must be > 0"):
        bench.run_bench(config, [16], ("env",), steps=5, repeats=0)


@pytest.mark.parametrize(
    ("iterations", "warmup", "window"), [(20, 3, (40, 20)), (5, 7, (15, 5)), (4, 4, (8, 4))]
)
def test_steady_window_times_only_the_final_iterations(
    iterations: int, warmup: int, window: tuple[int, int]
) -> None:
    total, interval = bench.steady_window(iterations, warmup)
    assert (total, interval) == window
    assert total - interval >= warmup  # the last row's interval starts after the set-up


def test_warmup_counts_the_capture_and_off_policy_random_iterations() -> None:
    ppo = load_config(overrides=["env.num_envs=64"])
    assert bench.warmup_iterations(ppo) == 1 + bench.GRAPH_WARMUP
    td3 = load_config(
        overrides=[
            "algo.name=td3",
            "env.action_type=continuous",
            "env.num_envs=64",
            "algo.learning_starts=1000",  # 16 random iterations of 64 env steps
        ]
    )
    assert bench.warmup_iterations(td3) == 1 + bench.GRAPH_WARMUP + 16


def test_train_rate_is_the_last_rows_rate_over_the_steady_iterations(tmp_path) -> None:
    import pandas as pd

    config = load_config(
        overrides=[
            "tracking.wandb=disabled",
            "experiment.device=cpu",
            "env.num_envs=16",
            "algo.num_steps=4",
            "experiment.eval_interval=5",  # no evaluation inside the timing
        ]
    )
    rate = bench.train_steps_per_second(config, iterations=3, run_dir=tmp_path / "run")
    rows = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert list(rows["iteration"]) == [3, 6]  # set-up (3 iterations), then the timed 3
    assert rate == pytest.approx(rows["interval_env_steps_per_second"].iloc[-1])
    assert "eval_return" not in rows


@pytest.mark.parametrize(
    ("overrides", "hidden"),
    [(["algo.name=td3", "algo.hidden=[32, 16]"], "32x16"), (["algo.actor_hidden=[8]"], "8")],
)
def test_a_row_names_the_policys_hidden_sizes(monkeypatch, overrides, hidden) -> None:
    monkeypatch.setattr(bench, "env_steps_per_second", lambda cfg, steps: 1.0)
    config = load_config(
        overrides=["tracking.wandb=disabled", "experiment.device=cpu", "env.action_type=continuous",
                   *overrides]
    )  # fmt: skip
    (row,) = bench.run_bench(config, [16], ("env",), steps=5)
    assert row["actor_hidden"] == hidden


def test_what_a_graph_replays_follows_the_task_the_mode_and_the_switch() -> None:
    """Rows and runs say what their CUDA graphs held: the whole iteration of a torch task,
    the update alone where the env steps outside torch (the MJX quadruped), or nothing."""
    import torch

    from envs.cartpole import Cartpole
    from envs.quadruped import Quadruped
    from harness.runner import _graph_scope

    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # only the type is read

    def config(*overrides: str):
        return load_config(overrides=list(overrides))

    cartpole, quadruped = config(), config("env.name=quadruped")
    assert bench._graph_scope(cartpole, cuda, "train") == "iteration"
    assert bench._graph_scope(quadruped, cuda, "train") == "update"
    assert bench._graph_scope(quadruped, cuda, "env") is None  # MJX's steps: never a graph
    assert bench._graph_scope(cartpole, cuda, "env") == "iteration"
    assert bench._graph_scope(cartpole, cpu, "train") is None
    off = config("env.name=quadruped", "experiment.cuda_graph=false")
    assert bench._graph_scope(off, cuda, "train") is None
    assert _graph_scope(cartpole, cuda, Cartpole) == "iteration"
    assert _graph_scope(quadruped, cuda, Quadruped) == "update"
    assert _graph_scope(off, cuda, Quadruped) is None
    assert _graph_scope(quadruped, cpu, Quadruped) is None
    insist = config("env.name=quadruped", "experiment.cuda_graph=true")
    assert _graph_scope(insist, cuda, Quadruped) == "update"  # no longer refused
    with pytest.raises(ConfigError, match="experiment.cuda_graph needs a CUDA device, got cpu"):
        _graph_scope(insist, cpu, Quadruped)
    td3 = config("algo.name=td3", "algo.updates_per_iteration=3", "experiment.cuda_graph=true")
    with pytest.raises(ConfigError, match="algo.policy_delay"):
        _graph_scope(td3, cuda, Quadruped)
