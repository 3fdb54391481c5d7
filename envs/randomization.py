"""Domain randomisation: per-env physics parameters drawn from ranges given in config.

Shared by every task. A task declares its nominal parameters (name -> value); the config
maps some of those names to a `ParamRange`; `Randomizer.sample(n)` returns [n] tensors,
nominal where no range is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from harness.errors import FieldError


@dataclass(frozen=True)
class ParamRange:
    """Where one parameter is drawn from on each reset.

    operation ``absolute``: the value itself lies in [low, high].
    operation ``scale``: the value is nominal * s with s in [low, high].
    distribution ``log_uniform`` draws log(value) uniformly (low must be > 0).
    """

    low: float
    high: float
    distribution: Literal["uniform", "log_uniform"] = "uniform"
    operation: Literal["absolute", "scale"] = "absolute"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise FieldError("low", f"and high must be finite, got [{self.low}, {self.high}]")
        if self.low > self.high:
            raise FieldError("low", f"must be <= high, got low={self.low} > high={self.high}")
        if self.distribution == "log_uniform" and self.low <= 0:
            raise FieldError("low", f"must be > 0 for log_uniform, got {self.low}")


class Randomizer:
    """Draws per-env parameters; with no ranges every env holds the nominal values."""

    def __init__(
        self,
        nominal: dict[str, float],
        ranges: dict[str, ParamRange],
        device: torch.device,
        generator: torch.Generator,
    ) -> None:
        self.nominal = dict(nominal)
        self.ranges = dict(ranges)
        self.device = device
        self.generator = generator

    @property
    def active(self) -> bool:
        return bool(self.ranges)

    def sample(self, n: int) -> dict[str, torch.Tensor]:
        """name -> [n] f32 parameter values."""
        out = {}
        for name, nominal in self.nominal.items():
            spec = self.ranges.get(name)
            if spec is None:
                out[name] = torch.full((n,), nominal, device=self.device)
                continue
            u = torch.rand(n, device=self.device, generator=self.generator)  # [n] in [0, 1)
            if spec.distribution == "log_uniform":
                lo, hi = math.log(spec.low), math.log(spec.high)
                value = torch.exp(lo + (hi - lo) * u)
            else:
                value = spec.low + (spec.high - spec.low) * u
            out[name] = value * nominal if spec.operation == "scale" else value
        return out
