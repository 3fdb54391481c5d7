#!/usr/bin/env bash
# PPO at PureJaxRL's configuration (2048 envs x 16 steps, 64-64 tanh, 4 epochs x 4
# minibatches: vecbench's defaults) on one CUDA GPU, the fused Triton kernels (the default)
# against experiment.fused_algo=false: kernels and ms per graphed iteration, training env
# steps/s (median of 3), launch -> mean return 475 at 4096 envs (median of 3; also with
# fused_env=false), and, where the peers kit sits in .peers (../shared/peers/README.md),
# PureJaxRL in the same call.
#   bash reports/ppo_fused_benchmark.sh reports/published/h200/ppo-fused
# VECBENCH picks the command (default: vecbench; e.g. VECBENCH="python3 -m harness.cli");
# PEER_WHEELS the wheels the peers kit installs (default .whl/*.whl).
set -euo pipefail
out=${1:?usage: ppo_fused_benchmark.sh OUTPUT_DIR}
vb=${VECBENCH:-vecbench}
mkdir -p "$out"
off=tracking.wandb=disabled
{
  python3 -m reports.iteration_kernels --num-envs 2048 16384 --compile false --kernels 12
  python3 -m reports.iteration_kernels --num-envs 2048 16384 --compile false --kernels 12 \
    --set experiment.fused_algo=false
} | tee "$out/kernels.txt"
for fused in true false; do
  $vb bench --device cuda --modes train --num-envs 2048 16384 --train-iterations 300 \
    --repeats 3 --set $off experiment.fused_algo=$fused -o "$out/train-fused-$fused"
done
$vb bench --device cuda --modes launch --num-envs 4096 --repeats 3 --set $off \
  -o "$out/launch-defaults"
for switch in experiment.fused_algo=false experiment.fused_env=false; do
  $vb bench --device cuda --modes launch --num-envs 4096 --repeats 3 --set $off $switch \
    -o "$out/launch-${switch#experiment.}"
done
if [ -f .peers/run_peers.sh ]; then
  OUT="$out/peers" STAGES=pjr BUDGET_S=150 WHEELS="${PEER_WHEELS:-.whl/*.whl}" \
    bash .peers/run_peers.sh
  rm -f "$out/peers/peers.log"
fi
