"""C51's categorical value distribution (Bellemare et al., 2017), as FastTD3 uses for TD3's
critics: a fixed support of ``num_atoms`` returns in [v_min, v_max], the Bellman target
projected back onto it."""

from __future__ import annotations

import torch


def support(v_min: float, v_max: float, num_atoms: int, device: torch.device) -> torch.Tensor:
    """The atoms [M], evenly spaced from v_min to v_max."""
    return torch.linspace(v_min, v_max, num_atoms, device=device)


def expected(logits: torch.Tensor, atoms: torch.Tensor) -> torch.Tensor:
    """The mean return [B] of the distributions with ``logits`` [B, M]."""
    return (torch.softmax(logits, dim=-1) * atoms).sum(-1)


def project(
    probs: torch.Tensor, rewards: torch.Tensor, bootstrap: torch.Tensor, atoms: torch.Tensor
) -> torch.Tensor:
    """The distribution of rewards + bootstrap * Z [B, M] on the support ``atoms`` [M], for
    Z with ``probs`` [B, M] (rewards, bootstrap [B]): each shifted atom, clipped to the
    support, splits its probability between its two neighbouring atoms by distance."""
    v_min, v_max = atoms[0], atoms[-1]
    m = atoms.shape[0]
    delta = (v_max - v_min) / (m - 1)
    shifted = (rewards.unsqueeze(1) + bootstrap.unsqueeze(1) * atoms).clamp(v_min, v_max)
    b = (shifted - v_min) / delta  # [B, M] fractional atom index
    lower = b.floor().clamp(0, m - 1)
    upper = b.ceil().clamp(0, m - 1)
    # An exact atom (lower == upper) keeps all its mass there: its two weights below add to 1.
    upper_weight = b - lower
    lower_weight = 1.0 - upper_weight
    out = torch.zeros_like(probs)
    out.scatter_add_(1, lower.long(), probs * lower_weight)
    out.scatter_add_(1, upper.long(), probs * upper_weight)
    return out
