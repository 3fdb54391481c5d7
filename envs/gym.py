"""vecbench's tasks as gymnasium vector envs: ``gymnasium.make_vec("vecbench/CartPole-v1",
num_envs=N)`` (also ``vecbench/Arm-v0`` and ``vecbench/Quadruped-v0``).

Episodes reset within the step that ends them (gymnasium's same-step autoreset): the step
returns the new episode's first observation, and ``info["final_obs"]`` holds the ended
one's last where ``info["_final_obs"]`` is True. Arrays are numpy by default; with
``tensors=True`` they stay torch tensors on the env's device (no copy), and
``info["final_obs"]`` is then the whole [N, O] tensor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from harness.config import build
from harness.registry import ENV_CONFIGS, make_env


class VecbenchVectorEnv(VectorEnv):
    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        task: str = "cartpole",
        num_envs: int = 1,
        device: str = "cpu",
        tensors: bool = False,
        **config: Any,
    ) -> None:
        """``config``: the task's config keys (``action_type``, ``randomization``, ...)."""
        self.device = torch.device(device)
        self.tensors = tensors
        self.env_config = build(
            ENV_CONFIGS[task],
            {**config, "name": task, "num_envs": num_envs},
            "env",
            f"vecbench {task} env",
        )
        self.num_envs = num_envs
        self._make(seed=0)
        space = self.env.action_space
        if space.kind == "discrete":
            self.single_action_space: spaces.Space = spaces.Discrete(space.n)
        else:
            self.single_action_space = spaces.Box(space.low, space.high, (space.shape,), np.float32)
        self.single_observation_space = spaces.Box(
            -np.inf, np.inf, (self.env.observation_size,), np.float32
        )
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)

    def _make(self, seed: int) -> None:
        generator = torch.Generator(device=self.device).manual_seed(seed)
        self.env = make_env(self.env_config, self.device, generator)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if seed is not None:  # the same seed gives the same episodes
            self._make(seed)
        return self._out(self.env.reset()), {}

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        discrete = self.env.action_space.kind == "discrete"
        a = torch.as_tensor(actions, device=self.device)
        a = a.long() if discrete else a.float().reshape(self.num_envs, -1)
        step = self.env.step(a)
        done = step.terminated | step.truncated
        info: dict[str, Any] = {}
        if self.tensors:
            info["final_obs"], info["_final_obs"] = step.info["final_obs"], done
        else:
            mask = done.cpu().numpy()
            final = step.info["final_obs"].cpu().numpy()
            objects = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(mask):
                objects[i] = final[i]
            info["final_obs"], info["_final_obs"] = objects, mask
        return (
            self._out(step.obs),
            self._out(step.reward),
            self._out(step.terminated),
            self._out(step.truncated),
            info,
        )

    def _out(self, x: torch.Tensor) -> Any:
        return x.clone() if self.tensors else x.cpu().numpy().copy()
