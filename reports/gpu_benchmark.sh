#!/usr/bin/env bash
# The published GPU benchmark: cartpole env-only, env + policy inference and PPO training
# over num_envs: eager; CUDA graphs + torch.compile; CUDA graphs + the fused Triton env
# step (the default on CUDA) and a compiled bf16 policy; PPO training also compiled, and at
# PureJaxRL's 2048 envs; SAC and TD3 training, eager and graphed; PPO launch to a mean
# return of 475; the arm task's env step; then the report of all of it. Every figure is
# the median of `vecbench bench`'s repeats (5 on CUDA) with its min and max.
#   bash reports/gpu_benchmark.sh reports/published/h200             (on a CUDA machine)
#   bash reports/gpu_benchmark.sh reports/published/h200 train launch   (some parts)
# Parts: env inference train offpolicy launch arm report (default: all, in that order); one
# call of the device tool runs out at 10 minutes, so run them a few at a time there, the
# report last (it reads every part's files under OUTPUT_DIR/bench; it also runs on a CPU).
# Rough part times on an H200, read off the calls behind reports/published/h200 (5 repeats
# for env, inference, arm and launch, 3 for train and offpolicy; parts cut short there are
# extrapolated): env 4 min, inference 1.5, arm 2, launch 4.5, train 6.5, offpolicy 5.5.
# VECBENCH picks the command (default: vecbench; e.g. VECBENCH="python3 -m harness.cli");
# REPEATS, if set, is every bench call's --repeats (the report names each row's count);
# SET adds overrides to every bench call (e.g. SET=tracking.wandb=disabled).
set -euo pipefail
out=${1:?usage: gpu_benchmark.sh OUTPUT_DIR [PART...]}
shift
parts=${*:-env inference train offpolicy launch arm report}
vb=${VECBENCH:-vecbench}
repeat=()
[ -n "${REPEATS:-}" ] && repeat=(--repeats "$REPEATS")
extra=()
[ -n "${SET:-}" ] && read -ra extra <<<"--set $SET"
bench() { $vb bench "${repeat[@]}" --device cuda "$@" "${extra[@]}"; }
raw="$out/bench"
mkdir -p "$raw"
# eager and compiled rows take PPO's torch steps; fused rows its Triton kernels (the default)
eager="experiment.cuda_graph=false experiment.fused_env=false experiment.fused_algo=false"
compiled="experiment.cuda_graph=true experiment.compile=true experiment.fused_env=false \
experiment.fused_algo=false"
fused="experiment.cuda_graph=true"
sizes="4096 16384 65536 262144 1048576"
train_sizes="1024 2048 4096 16384 65536 262144"
mlp256=("algo.actor_hidden=[256, 256]")
offpolicy="env.action_type=continuous algo.learning_starts=0"
has() { case " $parts " in *" $1 "*) return 0;; esac; return 1; }
if has env; then  # env-only and env + policy inference (eager and compiled), fused env-only
  bench --modes env inference --num-envs $sizes --steps 1280 --set $eager -o "$raw/eager"
  bench --modes env inference --num-envs $sizes --steps 1280 --set $compiled \
      -o "$raw/graph-compile"
  bench --modes env --num-envs $sizes --steps 1280 --set $fused -o "$raw/graph-fused"
fi
if has inference; then  # the bf16 256-256 policy
  bench --modes inference --num-envs $sizes --steps 1280 \
      --set $compiled algo.policy_precision=bfloat16 "${mlp256[@]}" -o "$raw/graph-compile-bf16-mlp256"
  bench --modes inference --num-envs $sizes --steps 1280 \
      --set $fused experiment.compile=true algo.policy_precision=bfloat16 "${mlp256[@]}" \
      -o "$raw/graph-fused-compile-bf16-mlp256"
fi
if has train; then
  bench --modes train --num-envs $train_sizes --set $eager -o "$raw/train-eager"
  bench --modes train --num-envs $train_sizes --set $fused -o "$raw/train-graph-fused"
  bench --modes train --num-envs $train_sizes --train-iterations 100 \
      --set $fused experiment.compile=true experiment.fused_algo=false \
      -o "$raw/train-graph-fused-compile"
fi
if has offpolicy; then
  for algo in td3 sac; do
    bench --modes train --num-envs 1024 4096 16384 --train-iterations 200 \
        --set algo.name=$algo $offpolicy $eager -o "$raw/train-$algo-eager"
    bench --modes train --num-envs 1024 4096 16384 --train-iterations 1500 \
        --set algo.name=$algo $offpolicy $fused -o "$raw/train-$algo-graph-fused"
  done
fi
if has launch; then
  # A launch compiles whatever Python source has no cached bytecode: on a machine that keeps
  # none (PYTHONDONTWRITEBYTECODE, as on the H200 image) that was about 2.5 s in one call.
  if python3 -c 'import sys; sys.exit(not sys.flags.dont_write_bytecode)'; then
    echo "launch: this Python writes no bytecode; uncached modules are compiled at every launch" >&2
  fi
  bench --modes launch --num-envs 4096 --set $eager -o "$raw/launch-eager"
  bench --modes launch --num-envs 4096 --set $fused experiment.fused_env=false -o "$raw/launch-graph"
  bench --modes launch --num-envs 4096 --set $fused -o "$raw/launch-graph-fused"
  bench --modes launch --num-envs 4096 --set $fused algo.policy_precision=bfloat16 \
      -o "$raw/launch-graph-fused-bf16"
fi
if has arm; then
  bench --modes env --num-envs 4096 65536 --set env.name=arm $eager -o "$raw/arm-eager"
  bench --modes env --num-envs 4096 65536 --set env.name=arm $compiled -o "$raw/arm-graph-compile"
fi
if has report; then
  $vb report "$raw" -o "$out" --title "vecbench GPU benchmark"
fi
