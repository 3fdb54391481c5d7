"""The fused cartpole kernel against the torch step, on CPU through Triton's interpreter
(the gpu tests compare them on CUDA)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import torch
    from envs.cartpole import Cartpole, CartpoleConfig
    from envs.cartpole_triton import FusedCartpoleStep
    from envs.randomization import ParamRange

    n = 300  # not a multiple of the kernel's block (128)
    ranges = {
        "pole_mass": ParamRange(0.05, 0.2),
        "gravity": ParamRange(0.5, 1.5, "log_uniform", "scale"),
    }
    for kind in ("discrete", "continuous"):
        config = CartpoleConfig(
            num_envs=n, max_episode_steps=30, action_type=kind, randomization=ranges
        )
        eager, fused = (
            Cartpole(config, torch.device("cpu"), torch.Generator().manual_seed(3))
            for _ in "ab"
        )
        fused.step = FusedCartpoleStep(fused)
        eager.reset(), fused.reset()
        g = torch.Generator().manual_seed(0)
        for _ in range(45):
            if kind == "discrete":
                actions = torch.randint(0, 2, (n,), generator=g)
            else:
                actions = torch.rand(n, 1, generator=g) * 2.4 - 1.2
            a, b = eager.step(actions), fused.step(actions)
            torch.testing.assert_close(b.obs, a.obs, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(
                b.info["final_obs"], a.info["final_obs"], atol=1e-5, rtol=1e-5
            )
            for name in ("reward", "terminated", "truncated"):
                assert torch.equal(getattr(b, name), getattr(a, name)), name
            for name, value in eager.params.items():
                torch.testing.assert_close(fused.params[name], value, atol=0, rtol=1e-6)
            assert torch.equal(fused.episode_step.int(), eager.episode_step)
            assert int(fused.random.counter) == int(eager.random.counter)
        sa, sb = eager.stats.reset_interval(), fused.stats.reset_interval()
        assert sa["episodes"] > 400, sa
        for name, value in sa.items():
            torch.testing.assert_close(sb[name], value, atol=0, rtol=1e-6)
        print(kind, "ok", int(sa["episodes"]), "episodes")
    """
)


def test_fused_kernel_equals_the_torch_step_under_the_triton_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "discrete ok" in done.stdout and "continuous ok" in done.stdout
