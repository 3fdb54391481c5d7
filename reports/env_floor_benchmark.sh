#!/usr/bin/env bash
# The env step against its floors on one CUDA GPU, in one call: env-only cartpole (the fused
# kernel, fixed random actions) at 4096 / 65536 / 1M envs next to the device copy bandwidth
# (46 bytes per env step) and the peers kit's hand-fused one-kernel step (`graph_triton`),
# then the MJX quadruped next to raw jit(vmap(mjx.step)) at 4096 / 8192 envs.
#   bash reports/env_floor_benchmark.sh reports/published/h200/env-floor
# VECBENCH picks the command (default: vecbench; e.g. VECBENCH="python3 -m harness.cli");
# PEERS the peers kit (default .peers, else ../shared/peers); QUADRUPED=0 leaves the quadruped out.
set -euo pipefail
out=${1:?usage: env_floor_benchmark.sh OUTPUT_DIR}
vb=${VECBENCH:-vecbench}
peers=${PEERS:-.peers}
[ -f "$peers/copy_bw.py" ] || peers=../shared/peers
sizes=(4096 65536 1048576)
mkdir -p "$out"
$vb bench --device cuda --modes env --num-envs "${sizes[@]}" --repeats 3 \
  --set tracking.wandb=disabled -o "$out/cartpole-env"
python3 "$peers/copy_bw.py" --out "$out/copy_bw.json"
python3 "$peers/torch_cartpole.py" --modes graph_triton --out "$out/hand_fused.json" \
  --sizes "$(IFS=,; echo "${sizes[*]}")"
if [ "${QUADRUPED:-1}" != 0 ]; then
  python3 -m reports.mjx_benchmark --device cuda --num-envs 4096 8192 -o "$out/quadruped-env"
fi
python3 - "$out" <<'PY' | tee "$out/cartpole-env.md"
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
rows = json.loads((out / "cartpole-env.json").read_text())
copy = json.loads((out / "copy_bw.json").read_text())
peer = {r["N"]: r for r in json.loads((out / "hand_fused.json").read_text())["rows"]}
floor = copy["steps_per_s_at_46B"]
meta = rows[0]
print(f"Env-only cartpole, env steps/s: {meta['device_name']}, driver {meta['driver']}, "
      f"torch {meta['torch']}, commit {meta['git_commit']}. Floor: 46 bytes per env step at "
      f"the device copy's {copy['TBps_read_plus_write']:.2f} TB/s = {floor:.3g} steps/s.")
print()
print("| envs | vecbench (fused kernel) | of the floor | hand-fused peer | of the floor "
      "| vecbench / peer |")
print("| ---: | ---: | ---: | ---: | ---: | ---: |")
for r in rows:
    n, ours = r["num_envs"], r["steps_per_second"]
    theirs = peer.get(n, {}).get("steps_per_s", float("nan"))
    print(f"| {n} | {ours:.3g} | {ours / floor:.0%} | {theirs:.3g} | {theirs / floor:.0%} "
          f"| {ours / theirs:.2f} |")
PY
