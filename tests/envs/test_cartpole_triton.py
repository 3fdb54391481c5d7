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
    # Ranged parameters: final rows stored by the step; all nominal: recomputed when read.
    for kind, randomization in [(k, r) for r in (ranges, {}) for k in ("discrete", "continuous")]:
        config = CartpoleConfig(
            num_envs=n, max_episode_steps=30, action_type=kind, randomization=randomization
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
        print(kind, "ranged" if randomization else "nominal", "ok", int(sa["episodes"]))
    """
)


MEMBERS = textwrap.dedent(
    """
    import torch
    from envs.cartpole import CartpoleConfig
    from envs.cartpole_triton import FusedCartpoleStep
    from envs.members import make_member_env, select_blocks
    from envs.randomization import ParamRange

    cpu = torch.device("cpu")
    for n in (24, 128):  # blocks of 24 envs: programs of 8 (a power of two dividing 24)
        configs = [
            CartpoleConfig(
                num_envs=n,
                max_episode_steps=25,
                randomization={
                    "pole_mass": ParamRange(0.05 * (k + 1), 0.3),
                    "gravity": ParamRange(0.5, 1.0 + k, "log_uniform", "scale"),
                },
            )
            for k in range(3)
        ]
        envs = [
            make_member_env(
                configs, cpu, [torch.Generator().manual_seed(10 + k) for k in range(3)]
            )
            for _ in "ab"
        ]
        eager, fused = envs
        fused.step = FusedCartpoleStep(fused)
        obs_a, obs_b = eager.reset(), fused.reset()
        g = torch.Generator().manual_seed(0)
        for i in range(40):
            if i == 20:  # the middle member leaves the batch
                obs_a = select_blocks(eager, [0, 2], obs_a)
                obs_b = select_blocks(fused, [0, 2], obs_b)
            actions = torch.randint(0, 2, (eager.num_envs,), generator=g)
            a, b = eager.step(actions), fused.step(actions)
            torch.testing.assert_close(b.obs, a.obs, atol=1e-5, rtol=1e-5)
            for name in ("terminated", "truncated"):
                assert torch.equal(getattr(b, name), getattr(a, name)), name
            for name, value in eager.params.items():
                torch.testing.assert_close(fused.params[name], value, atol=0, rtol=1e-6)
            assert int(fused.random.counter) == int(eager.random.counter)
            if i in (19, 39):
                sa, sb = eager.stats.reset_interval(), fused.stats.reset_interval()
                assert (sa["episodes"] > 5).all(), sa
                for name, value in sa.items():
                    torch.testing.assert_close(sb[name], value, atol=0, rtol=1e-6)
        print(n, "members ok")
    """
)


def _interpret(script: str) -> str:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_fused_kernel_equals_the_torch_step_under_the_triton_interpreter() -> None:
    out = _interpret(SCRIPT)
    for case in ("discrete ranged", "continuous ranged", "discrete nominal", "continuous nominal"):
        assert f"{case} ok" in out, out


def test_fused_kernel_steps_a_batch_of_members_as_their_torch_step() -> None:
    """Each block draws from its member's key at its own env indices, with the member's
    range bounds, and sums its own statistics, also after a member left the batch."""
    out = _interpret(MEMBERS)
    assert "24 members ok" in out and "128 members ok" in out


def test_a_fused_batch_takes_a_fresh_fused_batch_in_place() -> None:
    """Warm workers refill the kept env from a freshly built one; both fused, their tensors
    match in shape and dtype (the step counter is int16 once fused), so every tensor is
    copied in place and the kept step object goes on pointing at the kept env."""
    import torch

    from envs.cartpole import CartpoleConfig
    from envs.cartpole_triton import FusedCartpoleStep
    from envs.members import make_member_env
    from harness.graphs import refill

    def batch(seed: int, reset: bool):
        configs = [CartpoleConfig(num_envs=16, randomization={}) for _ in range(2)]
        gens = [torch.Generator().manual_seed(seed + k) for k in range(2)]
        env = make_member_env(configs, torch.device("cpu"), gens)
        env.step = FusedCartpoleStep(env)
        if reset:
            env.reset()
        return env

    kept, fresh = batch(0, reset=True), batch(7, reset=False)  # fresh: built, as take() does
    step, counter = kept.step, kept.episode_step
    fresh.episode_step.fill_(3)
    # After a graph captured an odd number of steps the spare counter is the counter: the
    # refill must not zero it with the fresh step's spare.
    kept.step.spare = kept.random.counter
    fresh.random.counter.fill_(5)
    refill(kept, fresh)
    assert int(kept.random.counter) == 5
    assert kept.step is step and step.env is kept
    assert kept.episode_step is counter and counter.dtype == torch.int16
    assert (counter == 3).all()
    assert torch.equal(kept.random.keys, fresh.random.keys)
    # The state stays one packed tensor, the same one, through the refill and a reset: the
    # tensors a CUDA graph captured are still the env's.
    packed = kept.tensors()["state.packed"]
    assert "state.x" not in kept.tensors()
    obs = kept.reset()
    assert kept.tensors()["state.packed"] is packed and torch.equal(packed, obs)
