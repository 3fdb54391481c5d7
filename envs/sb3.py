"""A vecbench task as a Stable-Baselines3 VecEnv: ``VecbenchSB3Env("cartpole", num_envs=8)``.

SB3 has its own vector API (dones, a list of info dicts, the ended episode's last
observation in ``info["terminal_observation"]``); this adapts the gymnasium vector env of
`envs.gym` to it. Keyword arguments are the task's config keys.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from envs.gym import VecbenchVectorEnv


class VecbenchSB3Env(VecEnv):
    def __init__(self, task: str = "cartpole", num_envs: int = 1, **config: Any) -> None:
        self.vec = VecbenchVectorEnv(task=task, num_envs=num_envs, **config)
        super().__init__(num_envs, self.vec.single_observation_space, self.vec.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        seed = self._seeds[0]  # SB3's seed(s) gives env i seed s + i; one batch takes s
        obs, _ = self.vec.reset(seed=seed)
        self._reset_seeds()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        obs, reward, terminated, truncated, info = self.vec.step(self._actions)
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(dones):
            infos[i]["terminal_observation"] = info["final_obs"][i]
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, reward, dones, infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self.vec, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self.vec, attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list:
        result = getattr(self.vec, method_name)(*args, **kwargs)
        return [result] * len(self._get_indices(indices))

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False] * len(self._get_indices(indices))
