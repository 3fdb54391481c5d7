"""Domain randomisation: per-env parameters, their ranges, and their effect on dynamics."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from envs.cartpole import Cartpole, CartpoleConfig
from envs.randomization import CounterRandom, ParamRange, Randomizer

CPU = torch.device("cpu")


def make(n: int, seed: int = 0, **ranges: ParamRange) -> Cartpole:
    config = CartpoleConfig(num_envs=n, randomization=dict(ranges))
    env = Cartpole(config, CPU, torch.Generator().manual_seed(seed))
    env.reset()
    return env


def test_without_ranges_every_env_has_the_nominal_values() -> None:
    env = make(16)
    assert (env.params["cart_mass"] == 1.0).all()
    assert (env.params["pole_mass"] == 0.1).all()
    assert (env.params["pole_length"] == 0.5).all()
    assert (env.params["motor_gain"] == 1.0).all()


def test_ranges_give_distinct_values_inside_the_range() -> None:
    env = make(
        4096,
        pole_mass=ParamRange(0.05, 0.5),
        cart_mass=ParamRange(0.5, 2.0, distribution="log_uniform"),
        motor_gain=ParamRange(0.8, 1.2, operation="scale"),
    )
    pole, cart, gain = env.params["pole_mass"], env.params["cart_mass"], env.params["motor_gain"]
    assert pole.unique().numel() > 4000
    assert pole.min() >= 0.05 and pole.max() <= 0.5
    assert cart.min() >= 0.5 and cart.max() <= 2.0
    assert gain.min() >= 0.8 and gain.max() <= 1.2
    # Uniform: mean near the midpoint. Log-uniform: log-mean near the log-midpoint.
    assert pole.mean().item() == pytest.approx(0.275, abs=0.01)
    assert cart.log().mean().item() == pytest.approx(
        0.5 * (math.log(0.5) + math.log(2.0)), abs=0.02
    )
    assert (env.params["pole_length"] == 0.5).all()  # no range: nominal


def test_scale_operation_multiplies_the_nominal_value() -> None:
    random = CounterRandom(0, CPU)
    r = Randomizer({"m": 4.0}, {"m": ParamRange(2.0, 2.0, operation="scale")}, CPU, random)
    assert (r.sample(10)["m"] == 8.0).all()


def test_same_seed_same_parameters_other_seed_others() -> None:
    a = make(256, seed=3, pole_length=ParamRange(0.3, 0.8))
    b = make(256, seed=3, pole_length=ParamRange(0.3, 0.8))
    c = make(256, seed=4, pole_length=ParamRange(0.3, 0.8))
    torch.testing.assert_close(a.params["pole_length"], b.params["pole_length"])
    assert not torch.equal(a.params["pole_length"], c.params["pole_length"])


def test_parameters_are_resampled_only_for_envs_that_reset() -> None:
    env = make(64, pole_mass=ParamRange(0.05, 0.5))
    before = env.params["pole_mass"].clone()
    state = torch.zeros(64, 4)
    state[:32, 2] = 0.25  # past the angle limit: the first half ends on the next step
    env.set_state(state)
    env.step(torch.zeros(64, dtype=torch.long))
    after = env.params["pole_mass"]
    assert (after[:32] != before[:32]).all()
    torch.testing.assert_close(after[32:], before[32:])


def _one_step_accelerations(env: Cartpole, action: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_acc, theta_acc) [N] from a state tilted by 0.1 rad at rest."""
    state = torch.zeros(env.num_envs, 4)
    state[:, 2] = 0.1
    env.set_state(state)
    step = env.step(torch.full((env.num_envs,), action, dtype=torch.long))
    final = step.info["final_obs"]
    return final[:, 1] / 0.02, final[:, 3] / 0.02


def _set(env: Cartpole, name: str, values: list[float]) -> None:
    env.params[name] = torch.tensor(values)


def test_changed_parameters_change_dynamics_in_the_expected_direction() -> None:
    env = make(2)
    _set(env, "pole_length", [0.5, 1.0])
    _, theta_acc = _one_step_accelerations(env, action=0)
    assert theta_acc[1] < theta_acc[0]  # a longer pole falls more slowly

    env = make(2)
    _set(env, "cart_mass", [1.0, 3.0])
    x_acc, _ = _one_step_accelerations(env, action=1)
    assert x_acc[1] < x_acc[0]  # a heavier cart accelerates less under the same push

    env = make(2)
    _set(env, "motor_gain", [1.0, 2.0])
    x_acc, _ = _one_step_accelerations(env, action=1)
    assert x_acc[1] > 1.8 * x_acc[0]  # twice the motor gain, about twice the push

    env = make(2)
    _set(env, "gravity", [9.8, 1.62])
    _, theta_acc = _one_step_accelerations(env, action=0)
    assert theta_acc[1] < theta_acc[0]  # the pole falls more slowly on the moon


def test_pole_falls_later_when_longer() -> None:
    env = make(2)
    _set(env, "pole_length", [0.5, 2.0])
    state = torch.zeros(2, 4)
    state[:, 2] = 0.05
    env.set_state(state)
    fall_step = [None, None]
    for t in range(200):
        step = env.step(torch.tensor([0, 0]))  # push left: the pole tips right and falls
        for i in range(2):
            if fall_step[i] is None and step.terminated[i]:
                fall_step[i] = t
        if all(s is not None for s in fall_step):
            break
    assert fall_step[0] is not None and fall_step[1] is not None
    assert fall_step[1] > fall_step[0]


def test_counter_random_is_uniform_independent_and_repeatable() -> None:
    random = CounterRandom(7, CPU)
    u = random.uniform(4, 50_000)  # four draws' worth of streams at once
    v = random.uniform(4, 50_000)  # the next draw
    assert stats.kstest(u.flatten().numpy(), "uniform").pvalue > 1e-3
    assert stats.kstest(v.flatten().numpy(), "uniform").pvalue > 1e-3
    assert u.min() >= 0.0 and u.max() < 1.0
    # Neighbouring elements, rows and successive draws are uncorrelated.
    for a, b in ((u[0, :-1], u[0, 1:]), (u[0], u[1]), (u[0], v[0])):
        r = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
        assert abs(r) < 0.02, r
    assert random.counter.item() == 2
    again = CounterRandom(7, CPU)
    assert torch.equal(again.uniform(4, 50_000), u)
    assert not torch.equal(CounterRandom(8, CPU).uniform(4, 50_000), u)


def test_counter_random_normal_has_unit_moments() -> None:
    z = CounterRandom(1, CPU).normal(200_000)
    assert abs(z.mean().item()) < 0.01
    assert abs(z.std().item() - 1.0) < 0.01
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-3
