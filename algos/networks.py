"""Networks shared by the algorithms: MLPs and the policy heads."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

Activation = Literal["tanh", "elu", "relu"]
_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "elu": nn.ELU, "relu": nn.ReLU}


def mlp(
    in_size: int, hidden: tuple[int, ...], out_size: int, activation: Activation, out_gain: float
) -> nn.Sequential:
    """An MLP with orthogonal init (gain sqrt(2) inside, ``out_gain`` on the last layer)."""
    layers: list[nn.Module] = []
    size = in_size
    for width in hidden:
        layers += [_linear(size, width, math.sqrt(2.0)), _ACTIVATIONS[activation]()]
        size = width
    layers.append(_linear(size, out_size, out_gain))
    return nn.Sequential(*layers)


def _linear(in_size: int, out_size: int, gain: float) -> nn.Linear:
    layer = nn.Linear(in_size, out_size)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class CategoricalHead(nn.Module):
    """Discrete actions [B] int64 from logits [B, n]."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    @property
    def out_size(self) -> int:
        return self.n

    def sample(self, out: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return self.sample_from(out, self.noise(out.shape[0], out.device, generator))

    def noise(
        self, batch: int, device: torch.device, generator: torch.Generator | None
    ) -> torch.Tensor:
        """The random numbers `sample_from` turns into ``batch`` actions (apart, so that a
        compiled policy takes them as input and draws what the eager one draws)."""
        return torch.rand((batch, self.n), device=device, generator=generator)

    def sample_from(self, out: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        # Gumbel-max: one argmax, no validity check that would wait on the GPU.
        return (out - torch.log(-torch.log(noise.clamp_min(1e-20)))).argmax(-1)

    def mode(self, out: torch.Tensor) -> torch.Tensor:
        return out.argmax(-1)

    def log_prob(self, out: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(out, dim=-1)
        return logp.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self, out: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(out, dim=-1)
        return -(logp.exp() * logp).sum(-1)


class GaussianHead(nn.Module):
    """Continuous actions [B, A]: the network gives the mean, log std is a learned vector."""

    def __init__(self, action_size: int, init_log_std: float) -> None:
        super().__init__()
        self.action_size = action_size
        self.log_std = nn.Parameter(torch.full((action_size,), init_log_std))  # [A]

    @property
    def out_size(self) -> int:
        return self.action_size

    def sample(self, out: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return self.sample_from(out, self.noise(out.shape[0], out.device, generator))

    def noise(
        self, batch: int, device: torch.device, generator: torch.Generator | None
    ) -> torch.Tensor:
        return torch.randn((batch, self.action_size), device=device, generator=generator)

    def sample_from(self, out: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return out + noise * self.log_std.exp()

    def mode(self, out: torch.Tensor) -> torch.Tensor:
        return out

    def log_prob(self, out: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        z = (actions - out) / self.log_std.exp()
        return (-0.5 * z**2 - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self, out: torch.Tensor) -> torch.Tensor:
        per_dim = 0.5 + 0.5 * math.log(2 * math.pi) + self.log_std  # [A]
        return per_dim.sum().expand(out.shape[0])
