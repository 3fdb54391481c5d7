#!/usr/bin/env bash
# PPO at PureJaxRL's configuration (2048 envs x 16 steps, 64-64 tanh, 4 epochs x 4
# minibatches: vecbench's defaults) on one CUDA GPU, eager against experiment.compile:
# kernels and ms per graphed iteration, training env steps/s (median of 3), and, where the
# peers kit sits in .peers (../shared/peers/README.md), PureJaxRL in the same call.
#   bash reports/ppo_compile_benchmark.sh reports/published/h200/ppo-compile
# VECBENCH picks the command (default: vecbench; e.g. VECBENCH="python3 -m harness.cli").
set -euo pipefail
out=${1:?usage: ppo_compile_benchmark.sh OUTPUT_DIR}
vb=${VECBENCH:-vecbench}
mkdir -p "$out"
# PPO's torch steps throughout (experiment.fused_algo=false): compile applies to them only
python3 -m reports.iteration_kernels --num-envs 2048 16384 --kernels 40 \
  --set experiment.fused_algo=false | tee "$out/kernels.txt"
for compile in false true; do
  $vb bench --device cuda --modes train --num-envs 2048 16384 --train-iterations 300 \
    --repeats 3 --set tracking.wandb=disabled experiment.compile=$compile experiment.fused_algo=false \
    -o "$out/train-compile-$compile"
done
if [ -f .peers/run_peers.sh ]; then
  OUT="$out/peers" STAGES=pjr BUDGET_S=150 bash .peers/run_peers.sh
  rm -f "$out/peers/peers.log"
fi
