"""Vectorised environments: the VecEnv contract, domain randomisation and the tasks."""

from envs.base import ActionSpace, EnvConfig, EnvStep, TensorTask, VecEnv

__all__ = ["ActionSpace", "EnvConfig", "EnvStep", "TensorTask", "VecEnv"]
