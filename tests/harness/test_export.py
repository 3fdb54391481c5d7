"""vecbench export: a run's greedy policy as ONNX (run by onnxruntime) and TorchScript give
the actions of the policy in torch, normalisation and clipping included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from harness.config import load_config
from harness.errors import VecbenchError
from harness.export import export_policy, load_policy

RUNS = {
    "ppo-discrete": ["env.num_envs=64"],
    "ppo-continuous": ["env.num_envs=64", "env.action_type=continuous"],
    "td3": ["algo.name=td3", "env.action_type=continuous", "algo.learning_starts=256"],
    "sac-arm": ["algo.name=sac", "env.name=arm", "env.num_envs=16", "algo.learning_starts=256"],
}


def trained(name: str, tmp_path: Path) -> Path:
    from harness.runner import train

    overrides = ["tracking.wandb=disabled", "experiment.total_env_steps=2048", *RUNS[name]]
    return train(load_config(overrides=overrides), run_dir=tmp_path / name).run_dir


def observations(obs_size: int) -> torch.Tensor:
    # Wide enough that normalisation clips some and continuous actions saturate.
    g = torch.Generator().manual_seed(0)
    return torch.randn(257, obs_size, generator=g) * torch.logspace(-1, 1, obs_size)


@pytest.mark.parametrize("name", list(RUNS))
def test_exported_policies_act_as_the_torch_policy(name: str, tmp_path: Path) -> None:
    run_dir = trained(name, tmp_path)
    policy, obs_size = load_policy(run_dir)
    obs = observations(obs_size)
    with torch.no_grad():
        expected = policy(obs)
    assert export_policy(run_dir, tmp_path / "policy.onnx") == "ONNX"
    session = onnxruntime.InferenceSession(str(tmp_path / "policy.onnx"))
    (onnx_actions,) = session.run(["actions"], {"obs": obs.numpy()})
    assert export_policy(run_dir, tmp_path / "policy.pt") == "TorchScript"
    script_actions = torch.jit.load(str(tmp_path / "policy.pt"))(obs)
    assert export_policy(run_dir, tmp_path / "policy.pt2") == "torch.export"
    exported_actions = torch.export.load(str(tmp_path / "policy.pt2")).module()(obs)
    if name == "ppo-discrete":
        assert expected.dtype == torch.int64 and set(expected.tolist()) <= {0, 1}
        assert np.array_equal(onnx_actions, expected.numpy())
        assert torch.equal(script_actions, expected) and torch.equal(exported_actions, expected)
    else:
        assert expected.min() >= -1 and expected.max() <= 1  # clipped to the action space
        np.testing.assert_allclose(onnx_actions, expected.numpy(), atol=1e-5)
        torch.testing.assert_close(script_actions, expected)
        torch.testing.assert_close(exported_actions, expected)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == sorted([name, "policy.onnx", "policy.pt", "policy.pt2"])  # no .tmp left


def test_export_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(VecbenchError, match=r"policy.txt: give a .onnx \(ONNX\), .pt"):
        export_policy(tmp_path, tmp_path / "policy.txt")
    with pytest.raises(VecbenchError, match="run directory not found"):
        export_policy(tmp_path / "missing", tmp_path / "policy.pt")
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(VecbenchError, match=r"dir.pt: -o names a directory"):
        export_policy(tmp_path, tmp_path / "dir.pt")


def export_command(run_dir: Path, output: Path) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "harness.cli", "export", str(run_dir), "-o", str(output)]
    return subprocess.run(argv, capture_output=True, text=True)


def test_export_command_prints_one_line(tmp_path: Path) -> None:
    run_dir = trained("ppo-discrete", tmp_path)
    done = export_command(run_dir, tmp_path / "p.onnx")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"ONNX policy written to {tmp_path / 'p.onnx'}")
    assert done.stderr == ""
    # A place that cannot be written is named as asked for, not by a temporary file.
    unwritable = Path("/proc/vecbench-no-such-dir/p.pt")
    with pytest.raises(VecbenchError, match=f"^{unwritable}: cannot write the exported policy"):
        export_policy(run_dir, unwritable)
    done = export_command(run_dir, tmp_path / "p.pt2")
    assert done.returncode == 0 and done.stderr == "", done.stderr  # torch's own warning too
