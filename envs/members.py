"""Several runs' envs as blocks of one batched env (batched study trials).

Block ``k`` holds member k's ``N`` envs. Each block draws its random numbers from the
member's own key with the indices its env would use alone, its randomisation ranges are
per-env bounds, and its episode statistics are summed apart, so a block steps exactly as
the member's env would step alone.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from envs.base import EnvConfig, EpisodeStatistics, VecEnv
from envs.randomization import CounterRandom, Randomizer, _hash32, _low32, draw_bounds


class BlockRandom(CounterRandom):
    """`CounterRandom` with one key per block of ``block`` elements along the env axis."""

    def __init__(self, keys: list[int], block: int, counter: torch.Tensor) -> None:
        self.device = counter.device
        self.block = block
        self.members = len(keys)
        self.keys = torch.tensor(keys, dtype=torch.int64, device=self.device)  # [K]
        self.counter = counter

    def bits(self, *shape: int) -> torch.Tensor:
        k, n = self.members, self.block
        env_dims = [i for i, size in enumerate(shape) if size == k * n]
        if len(env_dims) != 1:
            raise ValueError(
                f"cannot tell the env axis of a draw of shape {shape} ({k} x {n} envs)"
            )
        axis = env_dims[0]
        alone = list(shape)
        alone[axis] = n  # the draw each member makes alone
        index = torch.arange(math.prod(alone), dtype=torch.int64, device=self.device)
        index = index.view(*alone).unsqueeze(axis)  # [..., 1, N, ...]
        keys = self.keys.view(*([1] * axis), k, *([1] * (len(shape) - axis)))
        stream = _hash32(_low32(self.counter * 0x61C88647 + keys))  # [.., K, 1, ..]
        self.counter += 1
        return _hash32(_low32(index * 0x27D4EB2F + stream)).reshape(shape)


class BlockRandomizer(Randomizer):
    """Per-env bounds: member k's ranges in block k (every member ranges the same names
    with the same distribution and operation; the bounds may differ)."""

    def __init__(
        self, base: Randomizer, configs: list[EnvConfig], block: int, random: BlockRandom
    ) -> None:
        super().__init__(base.nominal, configs[0].randomization, base.device, random)
        self.per_env: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name in self.ranges:
            lows, spans = zip(*(draw_bounds(c.randomization[name]) for c in configs), strict=True)
            self.per_env[name] = (
                torch.tensor(lows, device=self.device).repeat_interleave(block),
                torch.tensor(spans, device=self.device).repeat_interleave(block),
            )

    def bounds(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return self.per_env[name]


class BlockStatistics(EpisodeStatistics):
    """Episode statistics summed per block: `reset_interval` gives [K] tensors."""

    def __init__(self, base: EpisodeStatistics, members: int, block: int) -> None:
        num_envs = members * block
        super().__init__(num_envs, base.term_names, base.sums.device, base.final_names)
        self.members, self.block = members, block
        self.sums = torch.zeros(members, base.sums.shape[0], device=base.sums.device)
        self.last_means = torch.full(
            (members, base.last_means.shape[0]), math.nan, device=base.sums.device
        )

    def _ended(self, finished: torch.Tensor) -> torch.Tensor:
        """[K, 3 + T]: the sums of `EpisodeStatistics` per block."""
        per_env = torch.cat(
            [
                finished.unsqueeze(1),
                (self.running_return * finished).unsqueeze(1),
                (self.running_length * finished).unsqueeze(1),
                self.running_terms * finished.unsqueeze(1),
            ],
            dim=1,
        )  # [K * N, 3 + T]
        return per_env.view(self.members, self.block, -1).sum(1)

    def means(self, reduce: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        count = self.sums[:, :1].clone()  # [K, 1]; the sums are zeroed after reading
        fresh = self.sums[:, 1:] / count.clamp(min=1.0)
        return torch.where(count > 0, fresh, self.last_means), count.squeeze(1)

    def reset_interval(self, reduce: Any = None) -> dict[str, torch.Tensor]:
        means, count = self.means()
        out = {"episode_return": means[:, 0], "episode_length": means[:, 1]}
        for i, name in enumerate(self.term_names):
            out[f"reward_{name}"] = means[:, 2 + i]
        for i, name in enumerate(self.final_names):
            out[name] = means[:, 2 + len(self.term_names) + i]
        out["episodes"] = count
        self.last_means.copy_(means)
        self.sums.zero_()
        return out


def shape_key(config: EnvConfig) -> dict[str, Any]:
    """What must be equal for envs to share a batch: everything but the range bounds."""
    data = dataclasses.asdict(config)
    data["randomization"] = {
        name: (r.distribution, r.operation) for name, r in sorted(config.randomization.items())
    }
    return data


def make_member_env(
    configs: list[EnvConfig], device: torch.device, generators: list[torch.Generator]
) -> VecEnv:
    """One env whose block k steps as ``make_env(configs[k], device, generators[k])`` would."""
    from harness.registry import make_env

    first = shape_key(configs[0])
    for config in configs[1:]:
        if shape_key(config) != first:
            raise ValueError("members of one batch need the same env settings but for ranges")
    members, block = len(configs), configs[0].num_envs
    placeholder = torch.Generator(device=device).manual_seed(0)
    env = make_env(dataclasses.replace(configs[0], num_envs=members * block), device, placeholder)
    keys = [CounterRandom.from_generator(g, device).key for g in generators]
    env.draw_member_keys(generators)  # after the key above, as the env alone draws them
    # The placeholder's counter already counts the draws the env made while being built.
    random = BlockRandom(keys, block, env.random.counter.clone())
    env.random = random
    env.randomizer = BlockRandomizer(env.randomizer, configs, block, random)
    env.stats = BlockStatistics(env.stats, members, block)
    env.members = members  # type: ignore[attr-defined]
    return env


def select_blocks(env: VecEnv, keep: list[int], obs: torch.Tensor) -> torch.Tensor:
    """Keep only blocks ``keep`` of a batched env (members that stopped leave the batch);
    returns ``obs`` [K * N, O] cut the same way."""
    stats: BlockStatistics = env.stats  # type: ignore[assignment]
    k, n = stats.members, stats.block
    index = torch.tensor(keep, device=obs.device)

    def pick(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 0 or t.shape[0] != k * n:
            return t
        return t.view(k, n, *t.shape[1:])[index].reshape(len(keep) * n, *t.shape[1:])

    env.load_tensors({name: pick(t) for name, t in env.tensors().items()})
    for name, value in list(vars(env).items()):  # a task's own per-env buffers
        if isinstance(value, torch.Tensor):
            setattr(env, name, pick(value))
    for name in ("running_return", "running_length", "running_terms"):
        setattr(stats, name, pick(getattr(stats, name)))
    stats.sums, stats.last_means = stats.sums[index], stats.last_means[index]
    random: BlockRandom = env.random  # type: ignore[assignment]
    random.keys, random.members = random.keys[index], len(keep)
    randomizer: BlockRandomizer = env.randomizer  # type: ignore[assignment]
    randomizer.per_env = {
        k_: (pick(lo), pick(span)) for k_, (lo, span) in randomizer.per_env.items()
    }
    stats.members = env.members = len(keep)  # type: ignore[attr-defined]
    env.num_envs = len(keep) * n
    env.config = dataclasses.replace(env.config, num_envs=env.num_envs)
    return pick(obs)
