"""Policy heads against torch.distributions."""

from __future__ import annotations

import torch
from torch.distributions import Categorical, Normal

from algos.networks import CategoricalHead, GaussianHead


def test_categorical_log_prob_and_entropy() -> None:
    logits = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    head = CategoricalHead(3)
    actions = torch.randint(0, 3, (64,))
    ref = Categorical(logits=logits)
    torch.testing.assert_close(head.log_prob(logits, actions), ref.log_prob(actions))
    torch.testing.assert_close(head.entropy(logits), ref.entropy())


def test_categorical_samples_follow_the_probabilities() -> None:
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]])).expand(60_000, 3)
    samples = CategoricalHead(3).sample(logits, torch.Generator().manual_seed(1))
    freq = torch.bincount(samples, minlength=3).float() / 60_000
    torch.testing.assert_close(freq, torch.tensor([0.2, 0.5, 0.3]), atol=0.01, rtol=0)


def test_gaussian_log_prob_entropy_and_samples() -> None:
    head = GaussianHead(2, init_log_std=-0.5)
    mean = torch.randn(50_000, 2, generator=torch.Generator().manual_seed(2))
    ref = Normal(mean, torch.full((2,), -0.5).exp())
    actions = head.sample(mean, torch.Generator().manual_seed(3))
    torch.testing.assert_close(head.log_prob(mean, actions), ref.log_prob(actions).sum(-1))
    torch.testing.assert_close(head.entropy(mean), ref.entropy().sum(-1))
    std = (actions - mean).std(0)
    torch.testing.assert_close(std, torch.full((2,), -0.5).exp(), atol=0.01, rtol=0)
