#!/usr/bin/env bash
# The published GPU benchmark: cartpole env-only, env + policy inference and PPO training
# over num_envs, eager and with CUDA graphs + torch.compile (+ bf16 policy), PPO launch to
# a mean return of 475, and the arm task's env step; then the report of all of it.
#   bash reports/gpu_benchmark.sh reports/published/h100     (on a CUDA machine)
# VECBENCH picks the command (default: vecbench; e.g. VECBENCH="python3 -m harness.cli").
set -euo pipefail
out=${1:?usage: gpu_benchmark.sh OUTPUT_DIR}
vb=${VECBENCH:-vecbench}
raw="$out/bench"
mkdir -p "$raw"
eager="experiment.cuda_graph=false"
fast="experiment.cuda_graph=true experiment.compile=true"
sizes="4096 16384 65536 262144 1048576"
$vb bench --device cuda --modes env inference --num-envs $sizes --steps 640 --set $eager -o "$raw/eager"
$vb bench --device cuda --modes env inference --num-envs $sizes --steps 640 --set $fast -o "$raw/graph-compile"
$vb bench --device cuda --modes inference --num-envs $sizes --steps 640 \
    --set $fast algo.policy_precision=bfloat16 -o "$raw/graph-compile-bf16"
$vb bench --device cuda --modes inference --num-envs $sizes --steps 640 -o "$raw/graph-compile-bf16-mlp256" \
    --set $fast algo.policy_precision=bfloat16 "algo.actor_hidden=[256, 256]"
$vb bench --device cuda --modes train --num-envs 1024 4096 16384 65536 262144 --set $eager -o "$raw/train-eager"
$vb bench --device cuda --modes train --num-envs 1024 4096 16384 65536 262144 \
    --set experiment.cuda_graph=true -o "$raw/train-graph"
$vb bench --device cuda --modes launch --num-envs 4096 --set $eager -o "$raw/launch-eager"
$vb bench --device cuda --modes launch --num-envs 4096 --set experiment.cuda_graph=true -o "$raw/launch-graph"
$vb bench --device cuda --modes launch --num-envs 4096 --set experiment.cuda_graph=true \
    algo.policy_precision=bfloat16 -o "$raw/launch-graph-bf16"
$vb bench --device cuda --modes env --num-envs 4096 65536 --set env.name=arm $eager -o "$raw/arm-eager"
$vb bench --device cuda --modes env --num-envs 4096 65536 --set env.name=arm $fast -o "$raw/arm-graph-compile"
$vb report "$raw" -o "$out" --title "vecbench GPU benchmark"
