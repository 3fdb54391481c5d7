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

    low: float  # lower bound (of the value, or of the scale with operation scale)
    high: float  # upper bound
    distribution: Literal["uniform", "log_uniform"] = "uniform"  # log_uniform: of the log
    operation: Literal["absolute", "scale"] = "absolute"  # scale: times the nominal value

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise FieldError("low", f"and high must be finite, got [{self.low}, {self.high}]")
        if self.low > self.high:
            raise FieldError("low", f"must be <= high, got low={self.low} > high={self.high}")
        if self.distribution == "log_uniform" and self.low <= 0:
            raise FieldError("low", f"must be > 0 for log_uniform, got {self.low}")


def _low32(x: torch.Tensor) -> torch.Tensor:
    """x mod 2^32 for int64 x, written with shifts only (compilers keep literals in int32)."""
    return x - ((x >> 32) << 32)


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer (xor-shift-multiply) on int64 tensors holding values in
    [0, 2^32); the multipliers are below 2^31, so products stay below 2^63."""
    x = x ^ (x >> 16)
    x = _low32(x * 0x21F0AAAD)
    x = x ^ (x >> 15)
    x = _low32(x * 0x735A2D97)
    return x ^ (x >> 15)


class CounterRandom:
    """Random numbers as a hash of (seed, draw number, element index).

    The only state is one device counter, bumped in place by each draw, so draws are
    plain elementwise tensor ops: they fuse into compiled env kernels, replay in CUDA
    graphs without registration, and give the same numbers on CPU and CUDA.
    """

    def __init__(self, seed: int, device: torch.device) -> None:
        self.key = int(_hash32(torch.tensor(seed % 2**31))) % 2**31
        self.device = device
        self.counter = torch.zeros((), dtype=torch.int64, device=device)  # draws so far

    @classmethod
    def from_generator(cls, generator: torch.Generator, device: torch.device) -> CounterRandom:
        """Seeded by one draw of ``generator`` (which the run's seed determines)."""
        seed = int(torch.randint(0, 2**31, (1,), generator=generator, device=generator.device))
        return cls(seed, device)

    def bits(self, *shape: int) -> torch.Tensor:
        """int64 [shape] of uniform 32-bit values."""
        numel = math.prod(shape)
        index = torch.arange(numel, dtype=torch.int64, device=self.device).view(*shape)
        stream = _hash32(_low32(self.counter * 0x61C88647 + self.key))
        self.counter += 1
        return _hash32(_low32(index * 0x27D4EB2F + stream))

    def uniform(self, *shape: int) -> torch.Tensor:
        """float32 [shape] uniform in [0, 1) (24 random bits each)."""
        return (self.bits(*shape) >> 8).to(torch.float32) * (1.0 / (1 << 24))

    def normal(self, *shape: int) -> torch.Tensor:
        """float32 [shape] standard normal (Box-Muller)."""
        u = self.uniform(2, *shape)
        radius = torch.sqrt(-2.0 * torch.log1p(-u[0]))  # 1 - u in (0, 1]
        return radius * torch.cos(2.0 * math.pi * u[1])


class Randomizer:
    """Draws per-env parameters; with no ranges every env holds the nominal values."""

    def __init__(
        self,
        nominal: dict[str, float],
        ranges: dict[str, ParamRange],
        device: torch.device,
        random: CounterRandom,
    ) -> None:
        self.nominal = dict(nominal)
        self.ranges = dict(ranges)
        self.device = device
        self.random = random

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
            u = self.random.uniform(n)  # [n] in [0, 1)
            low, span = self.bounds(name)
            value = low + span * u
            if spec.distribution == "log_uniform":
                value = torch.exp(value)
            out[name] = value * nominal if spec.operation == "scale" else value
        return out

    def bounds(self, name: str) -> tuple[float | torch.Tensor, float | torch.Tensor]:
        """(low, high - low) of the uniform draw for ``name`` (of its log for log_uniform)."""
        return draw_bounds(self.ranges[name])


def draw_bounds(spec: ParamRange) -> tuple[float, float]:
    """(low, high - low) of the uniform draw ``spec`` makes (of the log for log_uniform)."""
    if spec.distribution == "log_uniform":
        low, high = math.log(spec.low), math.log(spec.high)
        return low, high - low
    return spec.low, spec.high - spec.low
