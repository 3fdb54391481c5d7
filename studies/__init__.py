"""Optuna studies over `harness.runner.train`: sweeps of hyperparameters, num_envs and
randomisation ranges."""
