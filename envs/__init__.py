"""Vectorised environments: the VecEnv contract, domain randomisation and the tasks."""

from envs.base import ActionSpace, EnvConfig, EnvStep, TensorTask, VecEnv

__all__ = ["ActionSpace", "EnvConfig", "EnvStep", "TensorTask", "VecEnv"]

# gymnasium ids of the tasks (``gymnasium.make_vec(id, num_envs=N)``; see envs.gym).
GYM_IDS = {
    "vecbench/CartPole-v1": "cartpole",
    "vecbench/Arm-v0": "arm",
    "vecbench/Quadruped-v0": "quadruped",
}


def _register_with_gymnasium() -> None:
    try:
        import gymnasium
    except ImportError:  # gymnasium is only needed to use the tasks through it
        return
    for env_id, task in GYM_IDS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(
                env_id, vector_entry_point="envs.gym:VecbenchVectorEnv", kwargs={"task": task}
            )


_register_with_gymnasium()
