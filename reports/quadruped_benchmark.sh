#!/usr/bin/env bash
# The quadruped on a GPU: env-only steps/s next to raw MJX (1024 / 4096 / 8192 envs), then
# PPO learning to walk at the commanded 0.5 m/s, then the greedy policy's velocity over
# 256 episodes (mean_velocity_x and velocity_error in eval.txt).
#   bash reports/quadruped_benchmark.sh reports/published/h100/quadruped
# VECBENCH picks the command (default: vecbench; e.g. VECBENCH="python3 -m harness.cli").
set -euo pipefail
out=${1:?usage: quadruped_benchmark.sh OUTPUT_DIR}
vb=${VECBENCH:-vecbench}
steps=${WALK_ENV_STEPS:-100000000}
mkdir -p "$out"
python3 -m reports.mjx_benchmark --device cuda --num-envs 1024 4096 8192 -o "$out/env"
walk=(
    env.name=quadruped env.num_envs=4096
    algo.num_steps=24 algo.num_epochs=5 algo.num_minibatches=4
    algo.lr=1e-3 algo.lr_schedule=adaptive algo.desired_kl=0.01 algo.entropy_coef=0.005
    "algo.actor_hidden=[512, 256, 128]" "algo.critic_hidden=[512, 256, 128]" algo.activation=elu
    algo.init_log_std=-0.5
    experiment.total_env_steps=$steps experiment.log_interval=10 experiment.checkpoint_interval=50
)
$vb train --device cuda --wandb disabled --run-dir "$out/walk" --set "${walk[@]}"
$vb eval "$out/walk" --episodes 256 | tee "$out/eval.txt"
