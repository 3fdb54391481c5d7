#!/usr/bin/env bash
# The published GPU benchmark: cartpole env-only, env + policy inference and PPO training
# over num_envs: eager; CUDA graphs + torch.compile; CUDA graphs + the fused Triton env
# step (the default on CUDA) and a compiled bf16 policy; PPO launch to a mean return of
# 475; the arm task's env step; then the report of all of it.
#   bash reports/gpu_benchmark.sh reports/published/h100     (on a CUDA machine)
# VECBENCH picks the command (default: vecbench; e.g. VECBENCH="python3 -m harness.cli").
set -euo pipefail
out=${1:?usage: gpu_benchmark.sh OUTPUT_DIR}
vb=${VECBENCH:-vecbench}
raw="$out/bench"
mkdir -p "$raw"
eager="experiment.cuda_graph=false experiment.fused_env=false"
compiled="experiment.cuda_graph=true experiment.compile=true experiment.fused_env=false"
fused="experiment.cuda_graph=true"
sizes="4096 16384 65536 262144 1048576"
mlp256=("algo.actor_hidden=[256, 256]")
$vb bench --device cuda --modes env inference --num-envs $sizes --steps 1280 --set $eager -o "$raw/eager"
$vb bench --device cuda --modes env inference --num-envs $sizes --steps 1280 --set $compiled -o "$raw/graph-compile"
$vb bench --device cuda --modes env --num-envs $sizes --steps 1280 --set $fused -o "$raw/graph-fused"
$vb bench --device cuda --modes inference --num-envs $sizes --steps 1280 \
    --set $compiled algo.policy_precision=bfloat16 "${mlp256[@]}" -o "$raw/graph-compile-bf16-mlp256"
$vb bench --device cuda --modes inference --num-envs $sizes --steps 1280 \
    --set $fused experiment.compile=true algo.policy_precision=bfloat16 "${mlp256[@]}" \
    -o "$raw/graph-fused-compile-bf16-mlp256"
$vb bench --device cuda --modes train --num-envs 1024 4096 16384 65536 262144 --set $eager -o "$raw/train-eager"
$vb bench --device cuda --modes train --num-envs 1024 4096 16384 65536 262144 --set $fused -o "$raw/train-graph-fused"
$vb bench --device cuda --modes launch --num-envs 4096 --set $eager -o "$raw/launch-eager"
$vb bench --device cuda --modes launch --num-envs 4096 --set $fused experiment.fused_env=false -o "$raw/launch-graph"
$vb bench --device cuda --modes launch --num-envs 4096 --set $fused -o "$raw/launch-graph-fused"
$vb bench --device cuda --modes launch --num-envs 4096 --set $fused algo.policy_precision=bfloat16 \
    -o "$raw/launch-graph-fused-bf16"
$vb bench --device cuda --modes env --num-envs 4096 65536 --set env.name=arm $eager -o "$raw/arm-eager"
$vb bench --device cuda --modes env --num-envs 4096 65536 --set env.name=arm $compiled -o "$raw/arm-graph-compile"
$vb report "$raw" -o "$out" --title "vecbench GPU benchmark"
