"""Training recipes the learning tests share."""

# TD3 for thousands-of-envs style training on CPU: it solves continuous cartpole and reaches
# the arm's targets (tests/algos/test_offpolicy.py, tests/envs/test_arm_learning.py).
TD3_RECIPE = [
    "tracking.wandb=disabled",
    "algo.name=td3",
    "env.num_envs=64",
    "algo.hidden=[128, 128]",
    "algo.batch_size=512",
    "algo.updates_per_iteration=2",
    "algo.actor_lr=1e-4",
    "algo.exploration_noise=0.3",
    "algo.learning_starts=20000",
    "experiment.log_interval=100",
]
