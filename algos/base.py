"""The contract every algorithm implements; the runner knows nothing more of them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from envs.base import EnvStep


class Algorithm(ABC):
    """act -> env.step -> observe, repeated ``steps_per_update`` times, then update.

    Everything returned stays a device tensor; the runner reads numbers once per log
    interval.
    """

    #: How many act/observe pairs come between two calls of `update`.
    steps_per_update: int

    @abstractmethod
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Exploring actions for obs [N, O]; remembers what `update` needs."""

    @abstractmethod
    def observe(self, step: EnvStep) -> None:
        """The outcome of the last `act`."""

    @abstractmethod
    def update(self) -> dict[str, torch.Tensor]:
        """Learn from what was observed; returns detached scalar tensors (losses, lr...)."""

    @abstractmethod
    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Actions for evaluation; changes no training state."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training (networks, optimiser, normaliser)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def set_progress(self, fraction: float) -> None:  # noqa: B027 - optional hook
        """Fraction of the training budget done, in [0, 1], for schedules."""

    def compile(self) -> None:  # noqa: B027 - optional hook
        """torch.compile what the algorithm runs each iteration (experiment.compile): the
        same computation, rounding aside; a no-op where nothing is compiled."""

    def fused_unavailable(self) -> str | None:
        """Why `fuse` cannot run here (None: it can); experiment.fused_algo."""
        return f"{type(self).__name__} has no fused kernels (PPO has)"

    def fuse(self) -> None:
        """Run the policy step and the update as a few hand-written kernels: the same
        computation, rounding aside."""
        raise NotImplementedError(self.fused_unavailable())

    # CUDA graphs (harness.graphs.Iterations): whether the config allows a capture at all is
    # the algorithm config's `not_capturable`; these say when, and keep host counters right.

    @property
    def capture_ready(self) -> bool:
        """Whether every iteration from here on runs the same GPU program, so it can be
        captured (not while an off-policy algorithm still acts at random)."""
        return True

    def host_state(self) -> dict[str, Any]:
        """Counters kept on the host. A capture runs an iteration's Python but none of its
        GPU work, so they are saved before it and put back after."""
        return {}

    def load_host_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Put back what `host_state` returned."""

    def replayed(self) -> None:
        """Advance the host counters by one iteration that a graph replay ran without
        Python (its collection, then `update_replayed`)."""
        self.update_replayed()

    def update_replayed(self) -> None:  # noqa: B027 - optional hook
        """Advance the host counters by one `update` that a graph replay ran without Python
        (harness.graphs.Updates: the env steps outside the graph)."""
