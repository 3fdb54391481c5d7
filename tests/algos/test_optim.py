"""vecbench's Adam takes the same steps as torch.optim.Adam."""

from __future__ import annotations

import pytest
import torch

from algos.optim import Adam


def test_adam_matches_torch_optim_adam_over_many_steps() -> None:
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    ours = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    ours.load_state_dict(ref.state_dict())
    lr = torch.tensor(3e-3)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=3e-3, eps=1e-8)
    opt = Adam(ours.parameters(), lr=lr)
    for i in range(50):
        x = torch.randn(32, 5)
        if i == 25:  # a schedule changes lr in place
            lr.fill_(1e-3)
            ref_opt.param_groups[0]["lr"] = 1e-3
        for model, o in ((ref, ref_opt), (ours, opt)):
            o.zero_grad()
            (model(x) ** 2).mean().backward()
            o.step()
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert opt.steps.item() == 50


def test_adam_state_round_trips_and_rejects_foreign_state() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    opt = Adam([p], lr=torch.tensor(0.1))
    p.grad = torch.tensor([1.0, -2.0, 3.0])
    opt.step()
    state = opt.state_dict()
    q = torch.nn.Parameter(torch.ones(3))
    other = Adam([q], lr=torch.tensor(0.1))
    other.load_state_dict(state)
    torch.testing.assert_close(other.exp_avg[0], opt.exp_avg[0])
    assert other.steps.item() == 1
    with pytest.raises(ValueError, match="older vecbench"):
        other.load_state_dict({"state": {}, "param_groups": []})
