"""CUDA behaviour; run on the GPU machine (deselected where torch sees no CUDA)."""

from __future__ import annotations

import json

import pytest
import torch

from algos.ppo import PPO, PPOConfig
from envs.cartpole import Cartpole, CartpoleConfig
from envs.randomization import ParamRange
from harness.config import load_config
from harness.runner import collect, train
from tests.helpers.graphs import graph_updates_only

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


@pytest.mark.parametrize("action_type", ["discrete", "continuous"])
def test_ppo_iteration_has_no_host_sync(action_type: str) -> None:
    config = CartpoleConfig(
        num_envs=4096, action_type=action_type, randomization={"pole_mass": ParamRange(0.05, 0.2)}
    )
    env = Cartpole(config, CUDA, torch.Generator(CUDA).manual_seed(0))
    ppo = PPO(
        PPOConfig(lr_schedule="adaptive"),
        4,
        env.action_space,
        4096,
        CUDA,
        torch.Generator(CUDA).manual_seed(1),
    )
    obs = env.reset()

    def iteration() -> dict[str, torch.Tensor]:
        nonlocal obs
        obs = collect(env, ppo, obs)
        stats = ppo.update()
        env.stats.reset_interval()
        return stats

    iteration()  # lazy CUDA initialisation (handles, allocator) happens outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        stats = iteration()
        ppo.set_progress(0.5)
        stats = iteration()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(torch.stack(list(stats.values()))).all()


def test_cuda_step_equals_cpu_step() -> None:
    n = 8192
    g = torch.Generator().manual_seed(0)
    states = (torch.rand(n, 4, generator=g) * 2 - 1) * torch.tensor([2.4, 2.0, 0.21, 2.0])
    actions = torch.randint(0, 2, (n,), generator=g)
    out = {}
    for device in (torch.device("cpu"), CUDA):
        env = Cartpole(CartpoleConfig(num_envs=n), device, torch.Generator(device).manual_seed(0))
        env.reset()
        env.set_state(states.to(device))
        step = env.step(actions.to(device))
        out[device.type] = (step.info["final_obs"].cpu(), step.terminated.cpu())
    torch.testing.assert_close(out["cuda"][0], out["cpu"][0], rtol=1e-5, atol=1e-6)
    assert (out["cuda"][1] == out["cpu"][1]).float().mean() > 0.999


def test_ppo_learns_cartpole_on_cuda(tmp_path) -> None:
    # Seeds 0-3 reached 475 after 2.6-5.9M env steps fused and 3.3-5.2M eager (H200).
    config = load_config(
        overrides=[
            "experiment.device=cuda",
            "tracking.wandb=disabled",
            "env.num_envs=4096",
            "experiment.total_env_steps=10000000",
            "experiment.stop_at_return=475",
        ]
    )
    result = train(config, run_dir=tmp_path / "run")
    assert result.final_return >= 475, result


def test_arm_step_on_cuda_equals_cpu_and_has_no_host_sync() -> None:
    from envs.arm import Arm, ArmConfig

    n = 4096
    randomization = {
        "link_mass": ParamRange(0.8, 1.5),
        "joint_friction": ParamRange(0.5, 2.0),
        "obs_noise": ParamRange(0.0, 0.0),
    }
    g = torch.Generator().manual_seed(0)
    q = torch.rand(n, 4, generator=g) * 3 - 1.5
    qd = torch.randn(n, 4, generator=g) * 2
    actions = torch.rand(n, 4, generator=g) * 2 - 1
    out = {}
    for device in (torch.device("cpu"), CUDA):
        env = Arm(
            ArmConfig(num_envs=n, randomization=randomization), device, torch.Generator(device)
        )
        env.reset()
        env.params = {k: v.cpu().to(device) for k, v in out.get("params", env.params).items()}
        out.setdefault("params", env.params)
        env.set_state(q.to(device), qd.to(device))
        on_device = actions.to(device)
        env.step(on_device)
        out[device.type] = env.state["q"].cpu(), env.state["qd"].cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            try:
                for _ in range(3):
                    env.step(on_device)
            finally:
                torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(out["cuda"][0], out["cpu"][0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["cuda"][1], out["cpu"][1], atol=1e-3, rtol=1e-3)


def _cartpole_randomized(n: int) -> CartpoleConfig:
    return CartpoleConfig(
        num_envs=n, max_episode_steps=50, randomization={"pole_mass": ParamRange(0.05, 0.2)}
    )


@pytest.mark.parametrize("ranged", [True, False])
@pytest.mark.parametrize("action_type", ["discrete", "continuous"])
def test_fused_cartpole_step_equals_the_eager_step(action_type: str, ranged: bool) -> None:
    """The Triton step against VecEnv.step, both on CUDA: every output, the parameters
    redrawn on reset (uniform, log-uniform, scaled), counters and episode statistics, for
    a batch that is not a multiple of the kernel's block. Final observations are stored by
    the step with ranged parameters, recomputed when read with nominal ones."""
    n = 5000
    randomization = {
        "pole_mass": ParamRange(0.05, 0.2),
        "gravity": ParamRange(0.5, 1.5, "log_uniform", "scale"),
        "motor_gain": ParamRange(0.8, 1.2, operation="scale"),
    }
    randomization = randomization if ranged else {}
    config = CartpoleConfig(
        num_envs=n, max_episode_steps=40, action_type=action_type, randomization=randomization
    )
    eager, fused = (Cartpole(config, CUDA, torch.Generator(CUDA).manual_seed(3)) for _ in "ab")
    fused.fuse()
    eager.reset(), fused.reset()
    g = torch.Generator(CUDA).manual_seed(0)
    for _ in range(150):
        if action_type == "discrete":
            actions = torch.randint(0, 2, (n,), device=CUDA, generator=g)
        else:  # beyond [-1, 1] too: the step clips
            actions = torch.rand(n, 1, device=CUDA, generator=g) * 2.4 - 1.2
        a, b = eager.step(actions), fused.step(actions)
        torch.testing.assert_close(b.obs, a.obs, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b.info["final_obs"], a.info["final_obs"], atol=1e-5, rtol=1e-5)
        for name in ("reward", "terminated", "truncated"):
            assert torch.equal(getattr(b, name), getattr(a, name)), name
        for name, value in eager.params.items():
            torch.testing.assert_close(fused.params[name], value, atol=0, rtol=1e-6)
        assert torch.equal(fused.episode_step, eager.episode_step)
        assert torch.equal(fused.random.counter, eager.random.counter)
    a_stats, b_stats = eager.stats.reset_interval(), fused.stats.reset_interval()
    assert a_stats["episodes"] > 10_000
    for name, value in a_stats.items():
        torch.testing.assert_close(b_stats[name], value, atol=0, rtol=1e-6)


def test_fused_step_is_one_kernel_and_the_default_on_cuda(tmp_path) -> None:
    config = load_config(
        overrides=[
            "tracking.wandb=disabled",
            "experiment.device=cuda",
            "experiment.total_env_steps=65536",
            "env.num_envs=4096",
        ]
    )
    run = tmp_path / "run"
    train(config, run_dir=run)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["env_stepping"] == "fused" and meta["cuda_graph"] is True

    env = Cartpole(CartpoleConfig(num_envs=4096), CUDA, torch.Generator(CUDA).manual_seed(0))
    env.fuse()
    actions = torch.zeros(4096, dtype=torch.int64, device=CUDA)
    env.step(actions)
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            env.step(actions)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    kernels = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert kernels == ["_cartpole_step"], kernels


@pytest.mark.parametrize("how", ["eager", "compiled", "fused"])
def test_graphed_env_steps_equal_eager_steps(how: str) -> None:
    """Replays of a captured 16-step region (resets and randomisation included) give the
    eager trajectory; compiled or fused, the kernels agree to float32 rounding."""
    from harness.graphs import GraphedRegion, side_stream

    n = 4096
    actions = torch.randint(0, 2, (n,), device=CUDA, generator=torch.Generator(CUDA))

    def run(graphed: bool) -> list[torch.Tensor]:
        env = Cartpole(_cartpole_randomized(n), CUDA, torch.Generator(CUDA).manual_seed(3))
        if how == "compiled" and graphed:
            env.compile()
        if how == "fused" and graphed:
            env.fuse()
        obs = env.reset()

        def region(o: torch.Tensor) -> tuple[torch.Tensor, None]:
            for _ in range(16):
                o = env.step(actions).obs
            return o, None

        out = []
        if not graphed:
            for _ in range(6):
                obs, _ = region(obs)
                out.append(obs.clone())
            return out
        with side_stream(CUDA):
            for _ in range(2):
                obs, _ = region(obs)
                out.append(obs.clone())
        graph = GraphedRegion(region, env, [], obs)
        if how == "fused":  # the observation is the env's state: copied back once per replay
            assert graph.obs is graph.inputs["state.packed"]
        for _ in range(4):
            out.append(graph()[0].clone())
        return out

    eager, graphed = run(False), run(True)
    for a, b in zip(eager, graphed, strict=True):
        if how != "eager":
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
        else:
            torch.testing.assert_close(b, a, atol=0, rtol=0)


@pytest.mark.parametrize("scope", ["iteration", "update"])
def test_graphed_ppo_training_follows_eager_training(scope: str, tmp_path, monkeypatch) -> None:
    """The same seeded run, eager and with experiment.cuda_graph (the whole iteration, or as
    with an env stepping outside torch, the update alone): same metrics and weights."""
    import pandas as pd

    if scope == "update":
        graph_updates_only(monkeypatch)

    results = {}
    for graph in (False, True):
        config = load_config(
            overrides=[
                "tracking.wandb=disabled",
                "experiment.device=cuda",
                f"experiment.cuda_graph={str(graph).lower()}",
                "env.num_envs=1024",
                "env.randomization.pole_mass={low: 0.05, high: 0.2}",
                "experiment.total_env_steps=163840",  # 10 iterations
                "experiment.log_interval=1",
            ]
        )
        result = train(config, run_dir=tmp_path / f"graph-{graph}")
        meta = json.loads((result.run_dir / "meta.json").read_text())
        assert meta["graph_scope"] == (scope if graph else None)
        rows = pd.read_csv(result.run_dir / "metrics.csv")
        weights = torch.load(result.run_dir / "checkpoint.pt", map_location="cpu")
        results[graph] = rows, weights["algo"]["model"]
    (eager_rows, eager_w), (graph_rows, graph_w) = results[False], results[True]
    assert len(graph_rows) == len(eager_rows) == 10
    for key in ("episode_return", "policy_loss", "value_loss", "approx_kl", "lr"):
        torch.testing.assert_close(
            torch.tensor(graph_rows[key].to_numpy()),
            torch.tensor(eager_rows[key].to_numpy()),
            atol=1e-3,
            rtol=1e-3,
            equal_nan=True,
        )
    for name, value in eager_w.items():
        torch.testing.assert_close(graph_w[name], value, atol=1e-4, rtol=1e-4)


def test_graphed_ppo_learns_cartpole_with_bf16_policy(tmp_path) -> None:
    # bf16 slows learning down: about 19M env steps to 475 against 3.6M in float32 (H100).
    config = load_config(
        overrides=[
            "tracking.wandb=disabled",
            "experiment.device=cuda",
            "experiment.cuda_graph=true",
            "algo.policy_precision=bfloat16",
            "env.num_envs=4096",
            "experiment.total_env_steps=40000000",
            "experiment.stop_at_return=475",
        ]
    )
    assert train(config, run_dir=tmp_path / "run").final_return >= 475


def test_counter_random_gives_the_same_numbers_on_cuda_and_cpu() -> None:
    from envs.randomization import CounterRandom

    cpu, cuda = CounterRandom(5, torch.device("cpu")), CounterRandom(5, CUDA)
    for _ in range(3):
        torch.testing.assert_close(
            cuda.uniform(3, 10_000).cpu(), cpu.uniform(3, 10_000), atol=0, rtol=0
        )


def test_graphed_run_logs_collection_and_update_time(tmp_path) -> None:
    """A graphed iteration's marks are events inside the graph: each row has the split of
    its last replay, and the two phases are nearly all of an iteration's wall time."""
    import pandas as pd

    config = load_config(
        overrides=[
            "tracking.wandb=disabled",
            "experiment.device=cuda",
            "experiment.cuda_graph=true",
            "env.num_envs=4096",
            "experiment.total_env_steps=3276800",  # 50 iterations of 65536 env steps
            "experiment.log_interval=10",
        ]
    )
    rows = pd.read_csv(train(config, run_dir=tmp_path / "run").run_dir / "metrics.csv")
    assert (rows["collection_s"] > 0).all() and (rows["update_s"] > 0).all()
    iteration_s = 65536 / rows["interval_env_steps_per_second"].iloc[1:]
    ratio = ((rows["collection_s"] + rows["update_s"]).iloc[1:] / iteration_s).to_numpy()
    assert ((ratio > 0.8) & (ratio < 1.1)).all(), ratio
