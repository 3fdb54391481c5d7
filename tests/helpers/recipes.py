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

# SAC on the same scale: it needs more gradient steps per env step than TD3 (8 per iteration of
# 64 transitions). It solves continuous cartpole within about 100k env steps; trained on
# past that, this recipe's returns fall again as the temperature drops, so the test stops
# at the threshold.
SAC_RECIPE = [
    "tracking.wandb=disabled",
    "algo.name=sac",
    "env.num_envs=64",
    "algo.hidden=[128, 128]",
    "algo.batch_size=512",
    "algo.updates_per_iteration=8",
    "algo.actor_lr=1e-4",
    "algo.learning_starts=20000",
    "experiment.log_interval=100",
]
