"""PPO's fused Triton kernels against its torch steps, on CPU through Triton's interpreter
(tests/test_gpu_fused_algo.py compares them on CUDA), and where they refuse to run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from algos.ppo import PPO, PPOConfig
from envs.base import ActionSpace
from harness.config import load_config
from harness.errors import ConfigError
from harness.runner import train

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json

    import torch
    import algos.ppo_fused as fused_kernels
    from harness.config import load_config
    from harness.registry import make_algo, make_env
    from harness.runner import collect

    fused_kernels.MAX_PROGRAMS = 2  # fewer programs than row blocks: each program loops

    def run(overrides, fused, iterations):
        config = load_config(None, [
            "env.num_envs=24", "algo.num_steps=8", "algo.num_epochs=2", *overrides
        ])
        env = make_env(config.env, torch.device("cpu"), torch.Generator().manual_seed(1))
        torch.manual_seed(0)
        algo = make_algo(config.algo, env, torch.device("cpu"), torch.Generator().manual_seed(2))
        if fused:
            algo.fuse()
        obs, stats = env.reset(), []
        for _ in range(iterations):
            obs = collect(env, algo, obs)
            stats.append(algo.update())
        return algo, stats

    for iterations, overrides in (
        (2, []),
        (1, ["algo.entropy_coef=0.01", "algo.clip_value_loss=false", "algo.lr_schedule=linear",
             "algo.num_minibatches=3", "algo.activation=elu", "algo.critic_hidden=[32,16]"]),
        (1, ["env.name=arm", "algo.activation=relu", "algo.entropy_coef=0.01",
             "algo.normalize_advantages=false"]),
    ):
        eager, eager_stats = run(overrides, False, iterations)
        fused, fused_stats = run(overrides, True, iterations)
        for name, value in eager.model.state_dict().items():
            torch.testing.assert_close(fused.model.state_dict()[name], value, atol=1e-5, rtol=1e-4)
        for a, b in zip(eager_stats, fused_stats):
            for key, value in a.items():
                torch.testing.assert_close(b[key], value, atol=1e-5, rtol=1e-4)
        if eager.storage.actions.is_floating_point():
            torch.testing.assert_close(fused.storage.actions, eager.storage.actions)
        else:
            assert torch.equal(fused.storage.actions, eager.storage.actions)
        assert torch.equal(fused.optimizer.steps, eager.optimizer.steps)
        moments = zip(eager.optimizer.exp_avg_sq, fused.optimizer.exp_avg_sq, strict=True)
        for a, b in moments:
            torch.testing.assert_close(b, a, atol=1e-9, rtol=1e-3)
        print(json.dumps(overrides), "ok")
    """
)


def test_fused_ppo_equals_the_torch_steps_under_the_triton_interpreter() -> None:
    """From one seed (two iterations, then one for each variant), discrete and Gaussian heads,
    every activation, both value losses, schedules and normalisations: the same actions,
    weights, Adam moments and statistics."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count(" ok") == 3, done.stdout


def _config(*overrides: str):
    return load_config(overrides=["tracking.wandb=disabled", "experiment.device=cpu", *overrides])


def test_fused_algo_true_where_it_cannot_run_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="experiment.fused_algo: it needs a CUDA device, got cpu"):
        train(_config("experiment.fused_algo=true"), run_dir=tmp_path / "a")
    with pytest.raises(ConfigError, match="experiment.fused_algo: SAC has no fused kernels"):
        train(
            _config("experiment.fused_algo=true", "algo.name=sac", "env.action_type=continuous"),
            run_dir=tmp_path / "b",
        )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # Left to auto, a CPU run takes the torch steps and says so.
    config = _config("experiment.total_env_steps=2048", "env.num_envs=64")
    result = train(config, run_dir=tmp_path / "c")
    assert json.loads((result.run_dir / "meta.json").read_text())["algo_stepping"] == "eager"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"actor_hidden": (64, 64, 64)}, "algo.actor_hidden must be two layers of 16, 32, 64"),
        ({"critic_hidden": (256, 256)}, "algo.critic_hidden must be two layers"),
        ({"policy_precision": "bfloat16"}, "float32 only"),
    ],
)
def test_fused_kernels_name_what_they_do_not_take(monkeypatch, change, reason) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # as if on CUDA
    space = ActionSpace("discrete", n=2)
    ppo = PPO(PPOConfig(**change), 4, space, 8, torch.device("cpu"), torch.Generator())
    assert reason in ppo.fused_unavailable()
    with pytest.raises(RuntimeError, match=reason):
        ppo.fuse()
