"""The quadruped's env-only throughput next to raw MJX on the same model, in one process:
``python -m reports.mjx_benchmark --num-envs 1024 4096 8192 --device cuda -o OUT``
writes OUT.json and OUT.md (steps/s of vecbench's env, of ``jit(vmap(mjx.step))`` with the
same substeps, and their ratio, the adapter's cost).

Raw MJX runs three times: holding the standing pose; holding random joint targets drawn as
the env benchmark draws its actions (uniform in [-1, 1], times the action scale), carried
from call to call; and replaying the env benchmark's own timed steps: call i steps the
states its robots were in before its step i (the same seed draws the same actions and
resets) with those targets. MJX's solver iterates until it converges, so its speed depends
on the motion: the third floor does the env's physics work, and the gap to it is what the
env adds (its task's JAX work and the exchange with torch)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from harness.bench import env_steps_per_second, random_actions
from harness.config import RunConfig, load_config
from harness.device import device_name, make_generators, resolve_device
from harness.registry import make_env
from harness.tracking import environment_meta

WARMUP = 20  # env_steps_per_second's default


def env_states(config: RunConfig, steps: int) -> tuple[list[dict], np.ndarray]:
    """The qpos, qvel and warm start of the env benchmark's robots before each of its timed
    steps, and the joint targets its actions hold (the same seed: the same draws)."""
    import jax.numpy as jnp

    from envs.quadruped_mjx import STAND

    device = resolve_device(config.experiment.device)
    env_gen, _ = make_generators(config.experiment.seed, device)
    env = make_env(config.env, device, env_gen)
    actions = random_actions(env, env_gen)
    env.reset()
    states = []
    for i in range(WARMUP + steps):
        if i >= WARMUP:
            states.append({k: jnp.array(env.state[k]) for k in ("qpos", "qvel", "warm")})
        env.step(actions)
    targets = np.asarray(STAND, np.float32) + config.env.action_scale * np.clip(
        actions.cpu().numpy(), -1.0, 1.0
    )
    return states, targets.astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import jax

    from envs import quadruped_mjx as sim
    from envs.quadruped import MODEL_PATH, _jax_device

    device = resolve_device(args.device)
    meta = environment_meta(device, device_name(device))
    meta["jax"] = jax.__version__
    model = sim.load_model(MODEL_PATH)
    rows = []
    for n in args.num_envs:
        config = load_config(
            overrides=[
                "env.name=quadruped",
                f"env.num_envs={n}",
                f"experiment.device={args.device}",
                "tracking.wandb=disabled",
            ]
        )
        env_rate = env_steps_per_second(config, warmup=WARMUP, steps=args.steps)
        jax_device = _jax_device(jax, device)
        raw_rate = sim.raw_steps_per_second(
            model, n, config.env.substeps, jax_device, steps=args.steps
        )
        moving = np.random.default_rng(0).uniform(-1.0, 1.0, (n, 12)).astype(np.float32)
        targets = np.asarray(sim.STAND, np.float32) + config.env.action_scale * moving
        moving_rate = sim.raw_steps_per_second(
            model, n, config.env.substeps, jax_device, steps=args.steps, targets=targets
        )
        states, env_targets = env_states(config, args.steps)
        same_rate = sim.raw_steps_per_second(
            model, n, config.env.substeps, jax_device, steps=args.steps, targets=env_targets,
            states=states,
        )  # fmt: skip
        rows.append(
            {"num_envs": n, "env": env_rate, "raw_mjx": raw_rate, "ratio": env_rate / raw_rate,
             "raw_mjx_moving": moving_rate, "ratio_moving": env_rate / moving_rate,
             "raw_mjx_env_states": same_rate, "ratio_env_states": env_rate / same_rate}
        )  # fmt: skip
        logging.info("%6d envs  env %11.0f  raw MJX %11.0f (ratio %.2f)  moving %11.0f (%.2f)"
                     "  env's states %11.0f (%.2f)",
                     n, env_rate, raw_rate, env_rate / raw_rate, moving_rate,
                     env_rate / moving_rate, same_rate, env_rate / same_rate)  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        f"Quadruped env-only, control steps/s (4 physics steps each): {meta['device_name']}, "
        f"torch {meta['torch']}, JAX {meta['jax']}, commit {meta['git_commit']}.",
        "",
        "| envs | vecbench env | raw jit(vmap(mjx.step)), standing | env / raw "
        "| raw, random joint targets | env / raw | raw, the env's states | env / raw |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['num_envs']} | {r['env']:.3g} | {r['raw_mjx']:.3g} | {r['ratio']:.2f} "
        f"| {r['raw_mjx_moving']:.3g} | {r['ratio_moving']:.2f} "
        f"| {r['raw_mjx_env_states']:.3g} | {r['ratio_env_states']:.2f} |"
        for r in rows
    ]
    args.output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
