"""The throughput section on its own: labels, knees, and what it says of repeats."""

from __future__ import annotations

import math

import pandas as pd


def test_knee_is_where_four_times_the_envs_stop_doubling_throughput() -> None:
    from reports.sections import _bench_label, saturation_knees

    table = pd.DataFrame(
        {
            "mode": ["env"] * 4,
            "num_envs": [1024, 4096, 16384, 65536],
            "steps_per_second": [1e6, 4e6, 1.2e7, 1.5e7],  # exponents 1.0, 0.79, 0.16
        }
    )
    knees = saturation_knees(table)
    assert knees.loc[0, "knee_num_envs"] == 16384
    assert knees.loc[0, "exponents"] == "1.00 0.79 0.16"
    assert knees.loc[0, "peak_steps_per_second"] == 1.5e7
    row = {
        "mode": "inference",
        "cuda_graph": True,
        "compile": False,
        "policy_precision": "bfloat16",
    }
    assert _bench_label(row) == "inference (graph+bf16)"
    assert _bench_label({"mode": "env", "cuda_graph": False}) == "env"
    fused = {"mode": "env", "cuda_graph": True, "compile": True, "env_stepping": "fused"}
    assert _bench_label(fused) == "env (graph+fused)"  # the kernel, not the compiler, ran
    older = {"mode": "env", "cuda_graph": True, "compile": True, "env_stepping": math.nan}
    assert _bench_label(older) == "env (graph+compile)"
    row = {"mode": "inference", "task": "arm", "actor_hidden": "256x256"}
    assert _bench_label(row, {"task", "actor_hidden"}) == "arm inference (mlp 256x256)"
    # PPO compiled beside the fused env, and SAC's rows apart from PPO's
    trained = {"mode": "train", "cuda_graph": True, "compile": True, "env_stepping": "fused"}
    assert _bench_label(trained) == "train (graph+fused+compile)"
    assert _bench_label({**trained, "algo": "sac"}, {"algo"}) == "sac train (graph+fused+compile)"
    assert _bench_label({**fused, "algo": "sac"}, {"algo"}) == "env (graph+fused)"
    older = {**trained, "algo": "sac", "actor_hidden": ""}  # before off-policy rows had it
    assert _bench_label(older, {"algo", "actor_hidden"}) == "sac train (graph+fused+compile)"
    # PPO's fused kernels: compile then applies to nothing of the row
    ppo = {**trained, "algo_stepping": "fused"}
    assert _bench_label(ppo) == "train (graph+fused+fused ppo)"
    assert _bench_label({**trained, "algo_stepping": "compiled"}) == "train (graph+fused+compile)"
    # the MJX quadruped: its env steps outside torch, the update alone is a graph
    mjx = {"mode": "train", "cuda_graph": True, "graph_scope": "update", "env_stepping": "mjx"}
    assert _bench_label(mjx) == "train (update graph)"


def test_a_benchmark_of_mixed_repeats_says_so() -> None:
    """Parts measured with different --repeats: the text does not claim one count for all."""
    from reports.collect import Collection
    from reports.sections import throughput

    def rows(mode: str, repeats: int) -> list[dict]:
        return [
            {"mode": mode, "num_envs": n, "steps_per_second": 1e6 * n, "repeats": repeats,
             "steps_per_second_min": 9e5 * n, "steps_per_second_max": 1.1e6 * n,
             "gpu_memory_peak_mb": 1.0, "device_name": "cpu"}
            for n in (1, 4)
        ]  # fmt: skip

    def text(bench: list[dict]) -> str:
        empty = pd.DataFrame()
        section = throughput(Collection(empty, empty, [], pd.DataFrame(bench)), None, 1000)
        return " ".join(section.text)

    mixed = text(rows("env", 5) + rows("train", 3))
    empty = pd.DataFrame()
    bench = rows("env", 5)[::-1] + rows("train", 3) + rows("env", 5)[:1]  # sizes out of order
    table = throughput(Collection(empty, empty, [], pd.DataFrame(bench)), None, 1000).tables[0][2]
    assert table[["mode", "num_envs"]].values.tolist() == [
        ["env", 1], ["env", 4], ["train", 1], ["train", 4]
    ]  # fmt: skip
    assert "median of its row's `repeats` measurements" in mixed and "of 5" not in mixed
    assert "the median of 3 measurements" in text(rows("train", 3))
