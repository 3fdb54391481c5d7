#!/usr/bin/env bash
# A study's wall time with warm workers against a process per trial: 8 PPO cartpole trials
# (random lr), one worker, W&B off; prints each study's wall time and its trials' table.
#   bash reports/study_benchmark.sh OUTPUT_DIR [NUM_ENVS] [ENV_STEPS_PER_TRIAL]
# VECBENCH picks the command (default: vecbench; e.g. VECBENCH="python3 -m harness.cli").
set -euo pipefail
out=${1:?usage: study_benchmark.sh OUTPUT_DIR [NUM_ENVS] [ENV_STEPS_PER_TRIAL]}
envs=${2:-4096}
steps=${3:-4000000}
vb=${VECBENCH:-vecbench}
mkdir -p "$out"
for isolation in process worker; do
    cat > "$out/$isolation.yaml" <<YAML
name: study-$isolation
study_dir: $out/study-$isolation
trial_isolation: $isolation
config:
  tracking: {wandb: disabled}
  experiment: {total_env_steps: $steps, log_interval: 20}
  env: {num_envs: $envs}
space:
  algo.lr: {type: float, low: 1.0e-4, high: 1.0e-3, log: true}
n_trials: 8
sampler: {name: random, seed: 0}
YAML
    start=$(date +%s.%N)
    $vb study run "$out/$isolation.yaml" > "$out/$isolation.log" 2>&1
    end=$(date +%s.%N)
    echo "trial_isolation $isolation: wall $(python3 -c "print(round($end - $start, 1))") s" \
        | tee -a "$out/summary.txt"
    $vb study status "$out/$isolation.yaml" | tail -n 9 | tee -a "$out/summary.txt"
done
