"""Replay buffer, SAC and TD3: mechanics, and learning continuous cartpole."""

from __future__ import annotations

import pytest
import torch

from algos.offpolicy import TwinCritic, soft_update
from algos.replay import ReplayBuffer
from algos.sac import SAC, SACConfig
from algos.td3 import TD3, TD3Config
from envs.cartpole import Cartpole, CartpoleConfig
from harness.config import load_config
from harness.errors import ConfigError
from harness.registry import make_algo, make_env
from harness.tracking import RunStore
from tests.helpers.recipes import (
    SAC_RECIPE,
    TD3_C51_RECIPE,
    TD3_CARTPOLE_RECIPE,
    greedy_returns,
    solve,
)

CPU = torch.device("cpu")


def test_buffer_wraps_around_and_keeps_the_newest() -> None:
    buf = ReplayBuffer(capacity=10, obs_size=1, action_size=1, device=CPU)
    for step in range(4):  # 4 inserts of 3 transitions: 12 > 10, the oldest 2 are gone
        values = torch.arange(3, dtype=torch.float32) + 3 * step  # 0..11
        buf.add(values[:, None], values[:, None], values, values[:, None], values > 100)
    assert buf.size == 10 and buf.position == 2
    assert sorted(buf.rewards.tolist()) == [float(v) for v in range(2, 12)]
    assert buf.rewards[0] == 10.0 and buf.rewards[1] == 11.0  # wrapped into rows 0 and 1
    torch.testing.assert_close(buf.obs[:, 0], buf.rewards)  # rows stay aligned


def test_buffer_checkpoint_restores_rows_and_where_it_writes_next() -> None:
    def filled() -> ReplayBuffer:
        buf = ReplayBuffer(capacity=10, obs_size=1, action_size=1, device=CPU)
        for step in range(3):
            values = torch.arange(3, dtype=torch.float32) + 3 * step
            buf.add(values[:, None], values[:, None], values, values[:, None], values > 4)
        return buf

    saved = filled().state_dict()
    assert saved["size"] == 9 and saved["rewards"].shape == (9,)  # only the rows held
    restored = ReplayBuffer(capacity=10, obs_size=1, action_size=1, device=CPU)
    restored.load_state_dict(saved)
    original = filled()
    for buf in (restored, original):  # the next insert wraps the same way in both
        values = torch.tensor([100.0, 101.0])
        buf.add(values[:, None], values[:, None], values, values[:, None], values > 0)
    for name in ReplayBuffer.FIELDS:
        torch.testing.assert_close(getattr(restored, name), getattr(original, name))
    assert (restored.position, restored.size) == (1, 10)
    with pytest.raises(ValueError, match="more than buffer_size 4"):
        ReplayBuffer(capacity=4, obs_size=1, action_size=1, device=CPU).load_state_dict(saved)


# device_fill: the sampler reads the fill level from the device (the default on CUDA, so a
# CUDA graph replays it); the host's draws are torch.randint's.
FILL = pytest.mark.parametrize("device_fill", [False, True], ids=["host_fill", "device_fill"])


@FILL
def test_buffer_samples_uniformly_from_what_it_holds(device_fill: bool) -> None:
    buf = ReplayBuffer(capacity=100, obs_size=1, action_size=1, device=CPU, device_fill=device_fill)
    values = torch.arange(40, dtype=torch.float32)
    buf.add(values[:, None], values[:, None], values, values[:, None], values < 0)
    batch = buf.sample(40_000, torch.Generator().manual_seed(0))
    counts = torch.bincount(batch["rewards"].long(), minlength=40).float()
    assert counts.shape == (40,) and counts.min() > 0  # never beyond size, every row drawn
    assert (counts / 1000).sub(1).abs().max() < 0.2  # ~1000 each
    with pytest.raises(RuntimeError, match="empty"):
        ReplayBuffer(4, 1, 1, CPU).sample(1, torch.Generator())


def fill_two_envs(capacity: int, device_fill: bool, steps: int = 4) -> ReplayBuffer:
    """Env 0: obs t, reward t + 1, never ends. Env 1: obs 100 + t, reward 10 (t + 1); its
    episode ends (truncated, not terminated) at t = 1."""
    buf = ReplayBuffer(capacity, 1, 1, CPU, device_fill=device_fill)
    for t in range(steps):
        obs = torch.tensor([[float(t)], [100.0 + t]])
        rewards = torch.tensor([t + 1.0, 10.0 * (t + 1)])
        ended = torch.tensor([False, t == 1])
        buf.add(obs, obs, rewards, obs + 0.5, torch.zeros(2, dtype=torch.bool), ended)
    return buf


@FILL
def test_n_step_samples_sum_discounted_rewards_and_stop_at_episode_ends(device_fill: bool) -> None:
    buf = fill_two_envs(100, device_fill)
    batch = buf.sample(4000, torch.Generator().manual_seed(0), 3, gamma=0.5)
    # By hand, gamma 0.5, per start: (return, next_obs, discount).
    expected = {
        0.0: (1 + 0.5 * 2 + 0.25 * 3, 2.5, 0.125),
        1.0: (2 + 0.5 * 3 + 0.25 * 4, 3.5, 0.125),
        100.0: (10 + 0.5 * 20, 101.5, 0.25),  # cut after t = 1, where the episode ended
        101.0: (20.0, 101.5, 0.5),
    }
    starts = batch["obs"][:, 0].tolist()
    assert set(starts) == set(expected)  # t = 2, 3 have no 2 successors stored yet
    for i, start in enumerate(starts):
        ret, next_obs, discount = expected[start]
        assert batch["rewards"][i].item() == pytest.approx(ret)
        assert batch["next_obs"][i, 0].item() == next_obs
        assert batch["discount"][i].item() == discount
    one = fill_two_envs(100, device_fill).sample(64, torch.Generator().manual_seed(0), 1, 0.5)
    assert (one["discount"] == 0.5).all() and (one["next_obs"] == one["obs"] + 0.5).all()


@FILL
def test_n_step_successors_wrap_around_a_full_buffer(device_fill: bool) -> None:
    buf = fill_two_envs(6, device_fill)  # 8 transitions into 6 rows: t = 3 overwrote t = 0
    batch = buf.sample(2000, torch.Generator().manual_seed(0), 2, gamma=0.5)
    starts = sorted(set(batch["obs"][:, 0].tolist()))
    assert starts == [1.0, 2.0, 101.0, 102.0]  # the oldest two steps of each env
    for i, start in enumerate(batch["obs"][:, 0].tolist()):
        if start == 101.0:  # ended at t = 1: one reward, no successor
            assert batch["rewards"][i].item() == 20.0 and batch["discount"][i].item() == 0.5
        else:
            step_reward = 10.0 if start >= 100 else 1.0
            t = start - 100 if start >= 100 else start
            ret = step_reward * (t + 1) + 0.5 * step_reward * (t + 2)
            assert batch["rewards"][i].item() == pytest.approx(ret)
            assert batch["next_obs"][i, 0].item() == start + 1.5


def test_soft_update_is_polyak_averaging() -> None:
    torch.manual_seed(0)
    source, target = TwinCritic(3, 1, (8,), "relu"), TwinCritic(3, 1, (8,), "relu")
    before = [p.clone() for p in target.parameters()]
    soft_update(target, source, 0.25)
    for t, b, s in zip(target.parameters(), before, source.parameters(), strict=True):
        torch.testing.assert_close(t, 0.75 * b + 0.25 * s)


def make(cls, config, n: int = 8, steps: int = 20):
    env = Cartpole(
        CartpoleConfig(num_envs=n, action_type="continuous"), CPU, torch.Generator().manual_seed(0)
    )
    algo = cls(config, 4, env.action_space, n, CPU, torch.Generator().manual_seed(1))
    obs = env.reset()
    for _ in range(steps):
        step = env.step(algo.act(obs))
        algo.observe(step)
        obs = step.obs
    return algo


def test_sac_temperature_moves_toward_the_target_entropy() -> None:
    # Entropy above the target (-A = -1 for a fresh, wide policy): alpha must fall.
    sac = make(
        SAC,
        SACConfig(
            batch_size=64, hidden=(16,), learning_starts=0, alpha_lr=1e-2, updates_per_iteration=20
        ),
    )
    start = sac.log_alpha.exp().item()
    stats = sac.update()
    assert stats["entropy"].item() > -1.0
    assert sac.log_alpha.exp().item() < start
    # A target above the policy's entropy makes alpha rise instead.
    sac = make(
        SAC,
        SACConfig(
            batch_size=64,
            hidden=(16,),
            learning_starts=0,
            alpha_lr=1e-2,
            updates_per_iteration=20,
            target_entropy=5.0,
        ),
    )
    sac.update()
    assert sac.log_alpha.exp().item() > start


def test_td3_updates_the_actor_every_policy_delay_steps() -> None:
    td3 = make(
        TD3,
        TD3Config(
            batch_size=32, hidden=(16,), learning_starts=0, policy_delay=3, updates_per_iteration=7
        ),
    )
    actor_before = [p.clone() for p in td3.actor.parameters()]
    critic_before = [p.clone() for p in td3.critic.parameters()]
    td3.update()
    assert td3.updates == 7 and td3.actor_updates == 2  # after updates 3 and 6
    assert all(
        not torch.equal(a, b) for a, b in zip(critic_before, td3.critic.parameters(), strict=True)
    )
    assert any(
        not torch.equal(a, b) for a, b in zip(actor_before, td3.actor.parameters(), strict=True)
    )
    td3 = make(
        TD3,
        TD3Config(
            batch_size=32, hidden=(16,), learning_starts=0, policy_delay=3, updates_per_iteration=2
        ),
    )
    actor_before = [p.clone() for p in td3.actor.parameters()]
    td3.update()
    assert td3.actor_updates == 0
    assert all(torch.equal(a, b) for a, b in zip(actor_before, td3.actor.parameters(), strict=True))


def test_a_checkpoint_from_cuda_resumes_on_the_cpus_adam_with_its_moments() -> None:
    """A CUDA run's optimisers are fused and capturable; its checkpoint, loaded on a CPU,
    keeps the moments and step count and steps on the CPU's kernels."""
    sac = make(SAC, SACConfig(batch_size=32, hidden=(16,), learning_starts=0))
    sac.update()
    saved = sac.state_dict()
    for name in ("actor_opt", "critic_opt", "alpha_opt"):
        for group in saved[name]["param_groups"]:
            group.update(fused=True, capturable=True, foreach=None)  # as written on CUDA
    resumed = make(SAC, SACConfig(batch_size=32, hidden=(16,), learning_starts=0))
    resumed.load_state_dict(saved)
    opt = resumed.critic_opt
    assert opt.param_groups[0]["capturable"] is False and not opt.param_groups[0]["fused"]
    first = next(iter(sac.critic_opt.state.values()))
    again = next(iter(opt.state.values()))
    assert float(again["step"]) == float(first["step"]) == 2.0
    torch.testing.assert_close(again["exp_avg_sq"], first["exp_avg_sq"])
    before = [p.clone() for p in resumed.critic.parameters()]
    resumed.update()  # a capturable step on CPU tensors would refuse to run
    assert float(again["step"]) == 4.0
    after = resumed.critic.parameters()
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_random_actions_until_learning_starts_and_no_update_before() -> None:
    sac = make(SAC, SACConfig(batch_size=16, hidden=(16,), learning_starts=10_000))
    assert not sac.learning and sac.update() == {}
    assert sac.buffer.size == 20 * 8


@pytest.mark.parametrize("scope", ["iteration", "update"])
@pytest.mark.parametrize("cls", [SAC, TD3])
def test_a_replay_advances_the_host_counters_as_eager_python_does(cls, scope: str) -> None:
    """A CUDA-graph replay runs no Python. `replayed` must advance what an iteration's Python
    advances (env steps, updates, TD3's actor updates, the buffer's position);
    `update_replayed` what `update`'s does, where collection stays eager (an env stepping
    outside the graph)."""
    config = (SACConfig if cls is SAC else TD3Config)(
        batch_size=16, hidden=(16,), learning_starts=0, buffer_size=100, updates_per_iteration=4
    )
    from harness.runner import collect

    env = Cartpole(CartpoleConfig(num_envs=8, action_type="continuous"), CPU, torch.Generator())
    algo = cls(config, 4, env.action_space, 8, CPU, torch.Generator().manual_seed(1))
    obs = env.reset()
    for _ in range(20):  # 160 transitions: the 100-row buffer has wrapped
        obs = collect(env, algo, obs)
    if scope == "update":
        collect(env, algo, obs)
    before = algo.host_state()
    if scope == "iteration":
        collect(env, algo, obs)
    algo.update()
    eager = algo.host_state()
    algo.load_host_state(before)
    algo.replayed() if scope == "iteration" else algo.update_replayed()
    assert algo.host_state() == eager
    assert eager["updates"] == before["updates"] + 4
    assert (eager["position"] != before["position"]) == (scope == "iteration")
    if cls is TD3:
        assert eager["actor_updates"] == before["actor_updates"] + 2


def test_td3_says_when_its_iteration_cannot_be_one_cuda_graph() -> None:
    assert TD3Config(updates_per_iteration=4, policy_delay=2).not_capturable is None
    why = TD3Config(updates_per_iteration=3, policy_delay=2).not_capturable
    assert "algo.updates_per_iteration (3)" in why and "algo.policy_delay (2)" in why
    assert SACConfig(updates_per_iteration=3).not_capturable is None


def test_n_step_learning_waits_until_each_env_has_n_steps() -> None:
    # learning_starts 0 and n_step 3: the first two steps cannot make a 3-step sample yet.
    config = TD3Config(batch_size=16, hidden=(16,), learning_starts=0, n_step=3)
    td3 = make(TD3, config, steps=2)
    assert not td3.learning and td3.update() == {}
    td3 = make(TD3, config, steps=3)
    assert td3.learning and set(td3.update()) == {"critic_loss", "actor_loss", "q_mean"}


@pytest.mark.parametrize("name", ["sac", "td3"])
def test_off_policy_needs_continuous_actions(name: str) -> None:
    config = load_config(overrides=[f"algo.name={name}"])
    env = make_env(config.env, CPU, torch.Generator())
    with pytest.raises(ConfigError, match=f"algo.name {name} needs continuous actions"):
        make_algo(config.algo, env, CPU, torch.Generator())


@pytest.mark.parametrize("name", ["sac", "td3"])
def test_off_policy_runs_through_the_runner_and_resumes(name: str, tmp_path) -> None:
    from harness.runner import resume, train

    config = load_config(
        overrides=[
            f"algo.name={name}",
            "env.action_type=continuous",
            "env.num_envs=16",
            "algo.batch_size=32",
            "algo.hidden=[16]",
            "algo.learning_starts=512",
            "experiment.total_env_steps=1024",
            "experiment.log_interval=16",
            "tracking.wandb=disabled",
        ]
    )
    result = train(config, run_dir=tmp_path / "run")
    assert result.env_steps == 1024
    # The losses start after learning_starts; the file gains their columns then.
    metrics = RunStore.open(tmp_path / "run").metrics()
    assert list(metrics["env_steps"]) == [256, 512, 768, 1024]
    assert metrics["critic_loss"].isna().tolist() == [True, False, False, False]
    # The checkpoint carries the replay buffer: a resumed run learns from all it collected.
    state = RunStore.open(tmp_path / "run").load_checkpoint(torch.device("cpu"))
    assert state["algo"]["replay"]["size"] == 1024
    again = resume(tmp_path / "run", ["experiment.total_env_steps=2048"])
    assert again.env_steps == 2048
    state = RunStore.open(tmp_path / "run").load_checkpoint(torch.device("cpu"))
    assert state["algo"]["replay"]["size"] == 2048


@pytest.mark.slow
@pytest.mark.parametrize(
    "recipe",
    [SAC_RECIPE, TD3_CARTPOLE_RECIPE, TD3_C51_RECIPE],
    ids=["sac", "td3", "td3-c51"],
)
def test_off_policy_solves_continuous_cartpole(
    recipe: list[str], tmp_path, seed_override: str
) -> None:
    """Solved: the greedy policy's mean return over 100 evaluation episodes >= 475
    (CartPole-v1's threshold) at two evaluations in a row, within 300k env steps."""
    from harness.runner import train

    config = load_config(
        overrides=[
            *recipe,
            "env.action_type=continuous",
            "experiment.total_env_steps=300000",
            seed_override,
            *solve(475, 100),
        ]
    )
    result = train(config, run_dir=tmp_path / "run")
    assert result.env_steps < 300_000, result
    assert min(greedy_returns(result.run_dir)[-2:]) >= 475


@pytest.mark.parametrize("name", ["sac", "td3"])
def test_experiment_compile_says_it_leaves_off_policy_updates_uncompiled(name, caplog) -> None:
    config = load_config(overrides=[f"algo.name={name}", "env.action_type=continuous"])
    env = make_env(config.env, CPU, torch.Generator())
    algo = make_algo(config.algo, env, CPU, torch.Generator().manual_seed(0))
    with caplog.at_level("WARNING", logger="vecbench.run"):
        algo.compile()
    said = f"experiment.compile: {name.upper()}'s networks and updates run uncompiled"
    assert said in caplog.text
