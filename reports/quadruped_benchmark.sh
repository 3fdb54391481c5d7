#!/usr/bin/env bash
# The quadruped on a GPU: env-only steps/s next to raw MJX (1024 / 4096 / 8192 envs), then
# PPO and SAC learning to walk at the commanded 0.5 m/s, each followed by its greedy
# policy's velocity over 256 episodes (mean_velocity_x and velocity_error in eval-*.txt)
# and the wall time at which its training episodes (a log row of at least 100) first tracked
# the command to 0.1 m/s (reached-*.txt).
#   bash reports/quadruped_benchmark.sh reports/published/h200/quadruped
# VECBENCH picks the command (default: vecbench; e.g. VECBENCH="python3 -m harness.cli"),
# PARTS the parts (default "env ppo sac"), PPO_ENV_STEPS and SAC_ENV_STEPS the budgets,
# SET extra --set overrides for both runs (e.g. tracking.wandb=disabled).
set -euo pipefail
out=${1:?usage: quadruped_benchmark.sh OUTPUT_DIR}
vb=${VECBENCH:-vecbench}
parts=${PARTS:-env ppo sac}
read -r -a extra <<< "${SET:-}"
mkdir -p "$out"

ppo=(
    env.name=quadruped env.num_envs=4096
    algo.num_steps=24 algo.num_epochs=5 algo.num_minibatches=4
    algo.lr=1e-3 algo.lr_schedule=adaptive algo.desired_kl=0.01 algo.entropy_coef=0.005
    "algo.actor_hidden=[512, 256, 128]" "algo.critic_hidden=[512, 256, 128]" algo.activation=elu
    algo.init_log_std=-0.5
    experiment.total_env_steps=${PPO_ENV_STEPS:-100000000}
    experiment.log_interval=10 experiment.checkpoint_interval=1000000
)
# SAC at MJX's batch, FastTD3-style: n-step returns, large batches, several updates per env
# step (each iteration's 4 updates are one CUDA graph replay).
sac=(
    env.name=quadruped env.num_envs=4096
    algo.name=sac algo.n_step=3 algo.batch_size=8192 algo.updates_per_iteration=4
    algo.buffer_size=1048576 algo.learning_starts=40960 algo.tau=0.05
    "algo.hidden=[512, 256, 128]"
    experiment.total_env_steps=${SAC_ENV_STEPS:-32000000}
    experiment.log_interval=100 experiment.checkpoint_interval=1000000
)

walk() {  # name, overrides...
    local name=$1
    shift
    $vb train --device cuda --wandb disabled --run-dir "$out/walk-$name" --set "$@" "${extra[@]}"
    $vb eval "$out/walk-$name" --episodes 256 | tee "$out/eval-$name.txt"
    python3 - "$out/walk-$name/metrics.csv" <<'EOF' | tee "$out/reached-$name.txt"
import sys

import pandas as pd

rows = pd.read_csv(sys.argv[1])
# Rows of at least 100 finished episodes: the off-policy runs' episodes end together, and
# their rows between those ends average one or two.
rows = rows[rows["episodes"] >= 100]
hit = rows[rows["velocity_error"] < 0.1]
if rows.empty:
    print("no log row with 100 finished episodes")
elif hit.empty:
    print(f"training velocity_error never below 0.1 m/s (last {rows['velocity_error'].iloc[-1]:.3f})")
else:
    first = hit.iloc[0]
    print(f"training velocity_error below 0.1 m/s at {first['wall_time_s']:.1f} s of training, "
          f"{int(first['env_steps']):,} env steps ({int(first['episodes'])} episodes in the row)")
EOF
}

for part in $parts; do
    case $part in
        env) python3 -m reports.mjx_benchmark --device cuda --num-envs 1024 4096 8192 -o "$out/env" ;;
        ppo) walk ppo "${ppo[@]}" ;;
        sac) walk sac "${sac[@]}" ;;
        *) echo "unknown part: $part (env, ppo, sac)" >&2; exit 2 ;;
    esac
done
