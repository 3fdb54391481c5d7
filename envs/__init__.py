"""Vectorised environments: the VecEnv contract, domain randomisation and the tasks."""

import logging
import os

# MuJoCo picks its OpenGL backend when first imported: offscreen EGL (videos of the arm and
# the quadruped) unless the user chose another. PyOpenGL's note on its optional C extension
# is not news to anyone.
os.environ.setdefault("MUJOCO_GL", "egl")
logging.getLogger("OpenGL.acceleratesupport").setLevel(logging.WARNING)

from envs.base import ActionSpace, EnvConfig, EnvStep, TensorTask, VecEnv  # noqa: E402

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
