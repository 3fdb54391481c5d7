"""Training several runs as one batched program: ``train_members(members) -> results``.

Each member is a full run (its config, run directory, metrics.csv, checkpoint, summary and
W&B run) whose envs are one block of a batched env and whose networks are one slice of
stacked weights (`algos.ppo_members`, `algos.offpolicy_members`). A member that stops
(pruned, diverged, or at its stop_at_return) learns no more and writes no more rows; the
others go on unchanged.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from algos.offpolicy_members import SHAPE_KEYS as OFFPOLICY_SHAPE_KEYS
from algos.offpolicy_members import OffPolicyMembers
from algos.ppo import ActorCritic
from algos.ppo_members import SHAPE_KEYS, PPOMembers
from envs.base import VecEnv
from envs.members import make_member_env, select_blocks, shape_key
from harness.config import RunConfig, config_hash
from harness.device import device_name, make_generators, resolve_device
from harness.errors import ConfigError
from harness.graphs import Iterations, refill
from harness.progress import batch_line
from harness.registry import speed_up_env
from harness.runner import (
    RunResult,
    _peak_memory_mb,
    _rate,
    _synchronize,
    collect,
    diverged_losses,
)
from harness.tracking import RunStore, WandbTracker, environment_meta

log = logging.getLogger("vecbench.run")

#: Called with (member index, metrics row); returns why the member should stop ("": go on).
MemberLog = Callable[[int, Mapping[str, float]], str]

# Experiment settings that fix the loop: equal within a batch.
_EXPERIMENT_KEYS = (
    "device",
    "total_env_steps",
    "log_interval",
    "checkpoint_interval",
    "eval_interval",
    "cuda_graph",
    "compile",
    "fused_env",
    "fused_algo",
)


@dataclass(frozen=True)
class Member:
    config: RunConfig
    run_dir: Path
    context: Mapping[str, Any] = field(default_factory=dict)


def unsupported(config: RunConfig) -> str | None:
    """Why ``config`` cannot train as a member of a batch (None: it can)."""
    if config.algo.name not in ("ppo", *OFFPOLICY_SHAPE_KEYS):
        return f"algo.name is {config.algo.name}; batched trials train ppo, sac and td3"
    if config.experiment.eval_interval:
        return "experiment.eval_interval: batched trials do not evaluate during training"
    if getattr(config.algo, "distributional", False):
        return "algo.distributional: batched trials train scalar critics"
    if config.experiment.fused_algo:
        return "experiment.fused_algo: batched trials run their own stacked update"
    return None


def group_key(config: RunConfig) -> str:
    """Runs with the same key can train in one batch (shapes and loops agree)."""
    key = {
        "env": shape_key(config.env),
        "algo": {k: getattr(config.algo, k) for k in ("name", *_shape_keys(config))},
        "experiment": {k: getattr(config.experiment, k) for k in _EXPERIMENT_KEYS},
    }
    return json.dumps(key, sort_keys=True, default=str)


def _shape_keys(config: RunConfig) -> tuple[str, ...]:
    return OFFPOLICY_SHAPE_KEYS.get(config.algo.name, SHAPE_KEYS)


def train_members(members: list[Member], on_log: MemberLog | None = None) -> list[RunResult]:
    """Train every member together; one result per member, in order."""
    for m in members:
        why = unsupported(m.config)
        if why:
            raise ConfigError(why)
    keys = {group_key(m.config) for m in members}
    if len(keys) != 1:
        raise ConfigError("members of one batch must agree on every shape and loop setting")
    key = f"{keys.pop()}|{len(members)}"
    training = _WARM.pop(key, None)
    release_warm()  # a kept batch of other shapes gives its GPU memory back
    if training is None:
        training = _Batch(members)
    else:
        training.take(members)
        log.info("the last batch's objects and captured iteration serve this batch too")
    results = training.run(on_log)
    if training.reusable:
        _WARM[key] = training
    return results


# A worker's last batch, kept (with its captured CUDA graph) for a next batch of the same
# shapes and size, which `_Batch.take` fills in place: no new objects, no new capture.
_WARM: dict[str, _Batch] = {}


def release_warm() -> None:
    """Free the kept batch: its graph and tensors."""
    for batch in _WARM.values():
        batch.iterate.release()
    _WARM.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _Batch:
    def __init__(self, members: list[Member]) -> None:
        first = members[0].config
        self.device = device = resolve_device(first.experiment.device)
        self.env_gens: list[torch.Generator] = []
        self.algo_gens: list[torch.Generator] = []
        for m in members:
            # As a run alone: the seed fixes the init weights, then the two generators.
            env_gen, algo_gen = make_generators(m.config.experiment.seed, device)
            self.env_gens.append(env_gen)
            self.algo_gens.append(algo_gen)
        self.env, self.algo = self._build(members)
        exp = first.experiment
        self.env_stepping = speed_up_env(self.env, exp.fused_env, exp.compile)
        self.env.use_graphs(exp.cuda_graph is not False)
        self.use_graph = (
            device.type == "cuda"
            and first.experiment.cuda_graph is not False
            and not first.algo.not_capturable
            and not self.env.not_capturable
        )
        self.iterate = self._iterations()
        self._start(members)

    def _build(self, members: list[Member]) -> tuple[VecEnv, PPOMembers | OffPolicyMembers]:
        """The batched env and algorithm, drawing from the members' generators as runs
        alone draw from theirs."""
        first, device, gens = members[0].config, self.device, self.algo_gens
        n = first.env.num_envs
        env = make_member_env([m.config.env for m in members], device, self.env_gens)
        configs = [m.config.algo for m in members]
        if first.algo.name != "ppo":
            seeds = [m.config.experiment.seed for m in members]
            obs, actions = env.observation_size, env.action_space
            return env, OffPolicyMembers(configs, seeds, obs, actions, n, device, gens)
        models = []
        for m in members:
            torch.manual_seed(m.config.experiment.seed)
            models.append(ActorCritic(m.config.algo, env.observation_size, env.action_space))
        models = [model.to(device) for model in models]
        return env, PPOMembers(configs, models, env.action_space, n, device, gens)

    def take(self, members: list[Member]) -> None:
        """Train ``members`` (the shapes and size of the last batch) in these objects: the
        generators are reseeded in place (a captured graph holds them) and every tensor of a
        freshly built env and algorithm is copied into this batch's."""
        for env_gen, algo_gen, m in zip(self.env_gens, self.algo_gens, members, strict=True):
            fresh_env, fresh_algo = make_generators(m.config.experiment.seed, self.device)
            env_gen.set_state(fresh_env.get_state())
            algo_gen.set_state(fresh_algo.get_state())
        env, algo = self._build(members)
        if self.env_stepping == "fused":
            env.fuse()  # the kept env's tensors (an int16 step counter, the packed state)
        refill(self.env, env)  # a compiled kept env keeps its own compiled step
        refill(self.algo, algo)
        self.iterate.stale = True  # the reset in `run` moves the env off the graph's inputs
        self._start(members)

    @property
    def reusable(self) -> bool:
        """Whether a next batch can take these objects: none left the batch, and the env's
        state lives in torch."""
        return len(self.slots) == len(self.members) and not self.env.not_capturable

    def _start(self, members: list[Member]) -> None:
        self.members = members
        self.config = first = members[0].config
        k = len(members)
        self.steps_per_iteration = self.algo.steps_per_update * first.env.num_envs  # per member
        self.total_iterations = math.ceil(
            first.experiment.total_env_steps / self.steps_per_iteration
        )
        self.iteration = 0
        self.active = [True] * k
        self.slots = list(range(k))  # the member in each slot of the batch
        self.best = [-math.inf] * k
        self.final = [math.nan] * k
        self.streak = [0] * k
        self.ended_at = [0] * k  # iteration at which each member stopped
        self.ended_wall = [math.nan] * k  # training seconds until then
        self.rate = [math.nan] * k  # env steps/s after burn-in, as of the member's last row
        self.completed = [False] * k

    def run(self, on_log: MemberLog | None) -> list[RunResult]:
        exp = self.config.experiment
        meta = environment_meta(self.device, device_name(self.device))
        meta.update(
            env_stepping=self.env_stepping,
            cuda_graph=self.use_graph,
            graph_scope="iteration" if self.use_graph else None,
            world_size=1,
        )
        stores, trackers = [], []
        for i, m in enumerate(self.members):
            member_meta = {**meta, "batch": {"members": len(self.members), "index": i}}
            if m.context:
                member_meta["context"] = dict(m.context)
            store = RunStore.create(m.run_dir, m.config, member_meta)
            tracker = WandbTracker(m.config, store.dir, None, m.context, start_step=0)
            if tracker.run_id:
                store.write_meta({**store.meta(), "wandb_run_id": tracker.run_id})
            stores.append(store)
            trackers.append(tracker)
        log.info(
            "training %d members on %s (%s): %d envs each, %d iterations of %d env steps",
            len(self.members),
            self.device,
            device_name(self.device),
            self.env.num_envs // len(self.members),
            self.total_iterations,
            self.steps_per_iteration,
        )
        obs = self.env.reset()
        start = time.perf_counter()
        burn_in: tuple[float, int] | None = None
        interval = (start, 0)
        losses: dict[str, torch.Tensor] = {}
        try:
            while self.iteration < self.total_iterations and any(self.active):
                self.algo.set_progress(self.iteration / self.total_iterations)
                obs, stats = self.iterate(obs)
                for key, value in stats.items():
                    losses[key] = losses[key] + value if key in losses else value.clone()
                self.iteration += 1
                if burn_in is None:
                    _synchronize(self.device)
                    burn_in = (time.perf_counter(), self.env_steps)
                    interval = burn_in
                last = self.iteration == self.total_iterations
                if self.iteration % exp.log_interval == 0 or last:
                    rows = self._log_rows(losses, start, burn_in, interval)
                    interval = (time.perf_counter(), self.env_steps)
                    losses = {}
                    for slot, row in enumerate(rows):
                        i = self.slots[slot]
                        if not self.active[i]:
                            continue  # stopped, not yet dropped from the batch
                        self._member_row(i, row, stores[i], trackers[i], on_log, last)
                        if not self.active[i]:
                            self.ended_wall[i] = row["wall_time_s"]
                    log.info(
                        batch_line(
                            rows,
                            self.active,
                            self.total_iterations,
                            self.total_iterations * self.steps_per_iteration,
                        )
                    )
                interval_due = self.iteration % exp.checkpoint_interval == 0 or last
                for slot, i in enumerate(self.slots):
                    # A member that stopped now is checkpointed now, as a run alone would be.
                    if (self.active[i] and interval_due) or self.ended_at[i] == self.iteration:
                        stores[i].save_checkpoint(self._checkpoint(i, slot, start))
                obs = self._compact(obs)
        finally:
            wall = time.perf_counter() - start
            results = []
            for i, m in enumerate(self.members):
                result = self._result(i, m.run_dir, wall)
                summary = {**result.__dict__, "run_dir": str(result.run_dir)}
                summary["completed"] = self.completed[i]
                if self.completed[i]:
                    stores[i].write_summary(summary)
                trackers[i].finish(summary)
                results.append(result)
        return results

    @property
    def env_steps(self) -> int:
        return self.iteration * self.steps_per_iteration

    def _member_row(
        self,
        i: int,
        row: dict[str, float],
        store: RunStore,
        tracker: WandbTracker,
        on_log: MemberLog | None,
        last: bool,
    ) -> None:
        store.append_metrics(row)
        tracker.log(row, step=self.env_steps)
        self.rate[i] = row["env_steps_per_second"]
        ret = row["episode_return"]
        if not math.isnan(ret):
            self.final[i] = ret
            self.best[i] = max(self.best[i], ret)
        why = on_log(i, row) if on_log is not None else ""
        stop_at = self.members[i].config.experiment
        diverged = diverged_losses(row)
        if not why and diverged:
            why = f"diverged ({', '.join(diverged)} not finite)"
        elif not why and stop_at.stop_at_return is not None:
            self.streak[i] = self.streak[i] + 1 if ret >= stop_at.stop_at_return else 0
            if self.streak[i] >= stop_at.stop_patience:
                self.completed[i] = True  # solved: a finished run
                why = "reached stop_at_return"
        if last and not why:
            self.completed[i] = True
        if why or last:
            self.active[i] = False
            self.ended_at[i] = self.iteration
            self.algo.stop(self.slots.index(i))
            if why:
                log.info("member %d stops at %d env steps: %s", i, self.env_steps, why)

    def _eager(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        obs = collect(self.env, self.algo, obs)
        return obs, self.algo.update()

    def _log_rows(
        self,
        losses: dict[str, torch.Tensor],
        start: float,
        burn_in: tuple[float, int],
        interval: tuple[float, int],
    ) -> list[dict[str, float]]:
        """One metrics row per member, read in one transfer."""
        episode = self.env.stats.reset_interval()
        log_interval = self.config.experiment.log_interval
        n = self.iteration % log_interval or log_interval
        names = list(episode) + list(losses)
        values = [episode[k] for k in episode] + [losses[k] / n for k in losses]
        table = torch.stack([v.float() for v in values], dim=1).tolist()  # [K][F]
        now = time.perf_counter()
        common = {
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "wall_time_s": now - start,
            "env_steps_per_second": _rate(self.env_steps - burn_in[1], now - burn_in[0]),
            "interval_env_steps_per_second": _rate(self.env_steps - interval[1], now - interval[0]),
        }
        rows = []
        for values_k in table:
            row: dict[str, Any] = dict(common)
            row.update(zip(names, values_k, strict=True))
            rows.append(row)
        return rows

    def _compact(self, obs: torch.Tensor) -> torch.Tensor:
        """Drop stopped members from the batch once they are a quarter of it (each drop
        captures the iteration again); returns the observation of the members left."""
        keep = [slot for slot, i in enumerate(self.slots) if self.active[i]]
        stopped = len(self.slots) - len(keep)
        if not keep or stopped < max(1, len(self.slots) // 4) or not self.env.blocks_can_leave:
            return obs  # (an env whose blocks cannot leave keeps stopped members, masked)
        obs = select_blocks(self.env, keep, obs)
        self.algo.select(keep)
        self.slots = [self.slots[slot] for slot in keep]
        self.iterate = self._iterations()
        log.info("%d member(s) left the batch; %d go on", stopped, len(keep))
        return obs

    def _iterations(self) -> Iterations:
        # Off-policy members act at random first: those iterations stay eager.
        hooks = self.algo if isinstance(self.algo, OffPolicyMembers) else None
        return Iterations(
            self._eager, self.env, self.algo.generators, self.device, self.use_graph, hooks
        )

    def _checkpoint(self, i: int, slot: int, start: float) -> dict[str, Any]:
        return {
            "algo": self.algo.member_state_dict(slot),
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "steps_per_iteration": self.steps_per_iteration,
            "wall_time_s": time.perf_counter() - start,
            "best_return": self.best[i],
            "final_return": self.final[i],
            "env_generator": self.env_gens[i].get_state(),
            "algo_generator": self.algo_gens[i].get_state(),
            "config_hash": config_hash(self.members[i].config),
        }

    def _result(self, i: int, run_dir: Path, wall: float) -> RunResult:
        iterations = self.ended_at[i] or self.iteration
        return RunResult(
            run_dir=run_dir,
            final_return=self.final[i],
            best_return=self.best[i] if self.best[i] > -math.inf else math.nan,
            env_steps=iterations * self.steps_per_iteration,
            iterations=iterations,
            wall_time_s=wall if math.isnan(self.ended_wall[i]) else self.ended_wall[i],
            env_steps_per_second=self.rate[i],
            gpu_memory_peak_mb=_peak_memory_mb(self.device),
        )
