"""C51's target projection against hand-computed cases, and TD3 with C51 critics."""

from __future__ import annotations

import pytest
import torch

from algos.distributional import expected, project, support
from algos.td3 import TD3Config
from harness.errors import FieldError

ATOMS = support(0.0, 10.0, 11, torch.device("cpu"))  # 0, 1, ..., 10


def test_projection_splits_each_shifted_atom_between_its_neighbours() -> None:
    probs = torch.zeros(3, 11)
    probs[0, 5] = 1.0  # 1 + 0.5 * 5 = 3.5: half on 3, half on 4
    probs[1, 10] = 1.0  # 0.5 + 1.0 * 10 = 10.5: clipped to 10
    probs[2, [2, 7]] = 0.5  # terminal (bootstrap 0): all on the reward, 0
    out = project(probs, torch.tensor([1.0, 0.5, 0.0]), torch.tensor([0.5, 1.0, 0.0]), ATOMS)
    expected_out = torch.zeros(3, 11)
    expected_out[0, 3] = expected_out[0, 4] = 0.5
    expected_out[1, 10] = 1.0
    expected_out[2, 0] = 1.0
    torch.testing.assert_close(out, expected_out)


def test_projection_keeps_mass_and_the_mean_inside_the_support() -> None:
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(64, 11, generator=g), -1)
    rewards = torch.rand(64, generator=g)
    bootstrap = 0.9 * torch.rand(64, generator=g)  # r + b * z stays in [0, 10]
    out = project(probs, rewards, bootstrap, ATOMS)
    torch.testing.assert_close(out.sum(-1), torch.ones(64))
    torch.testing.assert_close((out * ATOMS).sum(-1), rewards + bootstrap * (probs * ATOMS).sum(-1))
    logits = torch.log(probs)
    torch.testing.assert_close(expected(logits, ATOMS), (probs * ATOMS).sum(-1))


def test_distributional_settings_are_checked_by_name() -> None:
    with pytest.raises(FieldError, match="num_atoms"):
        TD3Config(distributional=True, num_atoms=1)
    with pytest.raises(FieldError, match="v_max"):
        TD3Config(distributional=True, v_min=5.0, v_max=5.0)
