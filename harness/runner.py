"""The training loop: ``train(config) -> RunResult``, called by the CLI, studies and benchmarks.

The loop never reads a device value between log intervals: episode statistics and losses
accumulate as tensors and are turned into numbers in one transfer per interval.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from algos.base import Algorithm
from algos.distributed import all_reduce_sum
from envs.base import VecEnv
from harness import distributed
from harness.config import HASH_EXCLUDED, RunConfig, config_hash, refuse_overrides
from harness.device import device_name, make_generators
from harness.errors import ConfigError, DivergedError, RunDirError
from harness.evaluate import EVAL_SEED_OFFSET, run_episodes
from harness.graphs import Iterations, Updates
from harness.phases import PhaseTimer
from harness.progress import run_line
from harness.registry import (
    make_algo,
    make_env,
    refuse_speedups,
    speed_up_algo,
    speed_up_env,
)
from harness.tensorboard import summary_writer
from harness.tracking import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    NullStore,
    RunStore,
    WandbTracker,
    environment_meta,
)

log = logging.getLogger("vecbench.run")  # a study worker sends it to the trial's log

#: Called with each metrics row; may raise to stop the run (a pruned study trial).
LogCallback = Callable[[Mapping[str, float]], None]


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    final_return: float  # mean episode return of the last log interval
    best_return: float  # best logged mean episode return
    env_steps: int
    iterations: int
    wall_time_s: float  # training time, resumed segments added up
    env_steps_per_second: float  # end-to-end training throughput after burn-in
    gpu_memory_peak_mb: float = math.nan  # peak memory torch allocated on the GPU (CUDA only)


def default_run_dir(config: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return Path(config.experiment.run_root) / f"{config.run_name}-s{config.experiment.seed}-{stamp}"


def train(
    config: RunConfig,
    run_dir: Path | None = None,
    on_log: LogCallback | None = None,
    context: Mapping[str, Any] | None = None,
) -> RunResult:
    """Train from scratch into a new run directory.

    ``context`` (e.g. a study trial's name, number and parameters) is recorded in meta.json
    and in the W&B config under ``context``.
    """
    rank, device = distributed.setup(config.experiment.device)
    hold = contextlib.ExitStack()  # the run directory's lock, while training
    try:
        training = _Training(config, device, rank)  # bad settings fail before any file
        store = None
        if rank.main:
            run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config)
            meta = environment_meta(device, device_name(device))
            meta["world_size"] = rank.world_size
            meta["env_stepping"] = training.env_stepping
            meta["algo_stepping"] = training.algo_stepping
            meta["cuda_graph"] = training.use_graph
            meta["graph_scope"] = training.graph_scope
            if context:
                meta["context"] = dict(context)
            store = RunStore.create(run_dir, config, meta, hold)
        return training.run(store, on_log)
    finally:
        hold.close()
        distributed.teardown()


# What `train --resume --set` may change: the budget, stopping and evaluation (written to
# config.yaml, so a later resume keeps them), and how the steps run, are logged and tracked
# (this segment's alone). Not the env, the algorithm or the seed: they shaped the steps so far.
RESUMED_EXPERIMENT = ("total_env_steps", "stop_at_return", "stop_patience", "eval_interval",
                      "eval_episodes")  # fmt: skip
RESUME_EXECUTION = tuple(k for k in HASH_EXCLUDED["experiment"] if k not in ("name", "run_root"))
CHECKPOINT_KEYS = ("algo", "iteration", "steps_per_iteration", "wall_time_s", "best_return",
                   "final_return", "env_generator", "algo_generator")  # fmt: skip


def _resumable(key: str) -> bool:
    section, _, name = key.partition(".")
    if section == "experiment":
        return name in RESUMED_EXPERIMENT + RESUME_EXECUTION
    return section == "tracking"


def resume(
    run_dir: Path,
    overrides: list[str] | None = None,
    on_log: LogCallback | None = None,
) -> RunResult:
    """Continue a run from its checkpoint; ``overrides`` may change what `_resumable` allows
    (e.g. raise the step budget)."""
    store = RunStore.open(Path(run_dir))
    refuse_overrides(
        overrides,
        _resumable,
        f"a resumed run keeps its env, algo and seed; to change it, start a new run: "
        f"vecbench train --config {store.dir / CONFIG_FILE} --set ...",
    )
    saved = store.config()
    config = store.config(overrides)
    rank, device = distributed.setup(config.experiment.device)
    try:
        training = _Training(config, device, rank)
        with contextlib.ExitStack() as hold:
            if rank.main:
                hold.enter_context(store.lock())
            checkpoint = store.load_checkpoint(device, CHECKPOINT_KEYS)
            trained = checkpoint["iteration"] * checkpoint["steps_per_iteration"]
            budget = config.experiment.total_env_steps
            if trained >= budget and store.finished():  # a rerun would only blank summary.json
                raise RunDirError(
                    f"{store.dir}: already trained {trained:,} env steps of its "
                    f"experiment.total_env_steps={budget}; to train on, raise it: vecbench "
                    f"train --resume {store.dir} --set experiment.total_env_steps=N"
                )
            training.restore(checkpoint, store)
            kept = dataclasses.replace(
                saved,
                experiment=dataclasses.replace(
                    saved.experiment,
                    **{k: getattr(config.experiment, k) for k in RESUMED_EXPERIMENT},
                ),
            )
            if rank.main and kept != saved:
                store.write_config(kept)
                store.write_meta({**store.meta(), "config_hash": config_hash(kept)})
            return training.run(store if rank.main else None, on_log)
    finally:
        distributed.teardown()


def diverged_losses(row: Mapping[str, float]) -> list[str]:
    """The losses of a metrics row that are NaN or infinite (every algorithm names its
    losses ``*_loss``: PPO's policy and value, SAC's and TD3's actor and critic, ...)."""
    return sorted(k for k, v in row.items() if k.endswith("_loss") and not math.isfinite(v))


def collect(env: VecEnv, algo: Algorithm, obs: torch.Tensor) -> torch.Tensor:
    """One iteration's experience: ``algo.steps_per_update`` act -> step -> observe; the
    observation to continue from."""
    for _ in range(algo.steps_per_update):
        step = env.step(algo.act(obs))
        algo.observe(step)
        obs = step.obs
    return obs


class _Training:
    def __init__(
        self, config: RunConfig, device: torch.device, rank: distributed.Rank | None = None
    ) -> None:
        self.config = config
        self.device = device
        self.rank = rank or distributed.Rank()
        exp = config.experiment
        refuse_speedups(config.env.name, exp.fused_env, exp.compile)
        self.env_gen, self.algo_gen = make_generators(
            config.experiment.seed, device, self.rank.rank
        )
        self.env = make_env(config.env, device, self.env_gen)
        self.algo = make_algo(config.algo, self.env, device, self.algo_gen)
        exp = config.experiment
        # Greedy evaluation during training steps envs of its own, drawn afresh from their own
        # seed each time: it changes nothing of the training trajectory, every evaluation
        # plays the same episodes, and `vecbench eval` (same seed) plays them too.
        self.eval_config = dataclasses.replace(config.env, num_envs=exp.eval_episodes)
        self.stop_streak = 0  # checks in a row at or above experiment.stop_at_return
        # "iteration": one graph per training iteration; "update": the env steps outside
        # torch (MJX), the update alone is a graph; None: eager.
        self.graph_scope = _graph_scope(config, device, self.env)
        self.use_graph = self.graph_scope is not None
        if config.tracking.tensorboard:
            summary_writer()  # a missing package fails before the run directory exists
        self.env_stepping = speed_up_env(self.env, exp.fused_env, exp.compile)
        self.env.use_graphs(exp.cuda_graph is not False)
        self.algo_stepping = speed_up_algo(self.algo, exp.fused_algo, exp.compile)
        video = config.tracking.video_interval
        if video % exp.log_interval:
            raise ConfigError(
                f"tracking.video_interval must be 0 or a multiple of experiment.log_interval "
                f"({exp.log_interval}), got {video}"
            )
        # Collection and update time per iteration (a graph's from its last replay).
        self.phases = PhaseTimer(device)
        # The env draws from its own counter: only the algorithm's generator is registered.
        self.iterate = Iterations(
            self._eager_iteration,
            self.env,
            [self.algo_gen],
            device,
            self.graph_scope == "iteration",
            self.algo,
        )
        self.updates = Updates(self.algo, [self.algo_gen], device, self.graph_scope == "update")
        # Env steps of one iteration over all ranks (each steps env.num_envs envs).
        self.steps_per_iteration = (
            self.algo.steps_per_update * self.env.num_envs * self.rank.world_size
        )
        self.total_iterations = math.ceil(
            config.experiment.total_env_steps / self.steps_per_iteration
        )
        self.iteration = 0
        self.wall_time_before = 0.0  # from earlier segments of a resumed run
        self.best_return = -math.inf
        self.final_return = math.nan
        self.throughput = math.nan  # env steps/s after burn-in, as of the last log row

    @property
    def env_steps(self) -> int:
        return self.iteration * self.steps_per_iteration

    def restore(self, checkpoint: dict[str, Any], store: RunStore) -> None:
        """Continue from ``checkpoint``; drops metric rows logged after it."""
        if checkpoint.get("steps_per_iteration") != self.steps_per_iteration:
            raise RunDirError(
                f"{store.dir}: checkpoint was taken with "
                f"{checkpoint.get('steps_per_iteration')} env steps per iteration, the config "
                f"gives {self.steps_per_iteration}; env.num_envs and algo.num_steps must not change"
            )
        store.load_algo(self.algo, checkpoint)
        self.iteration = checkpoint["iteration"]
        self.wall_time_before = checkpoint["wall_time_s"]
        self.best_return = checkpoint["best_return"]
        self.final_return = checkpoint["final_return"]
        # Generator states are CPU byte tensors even for CUDA generators; map_location moved them.
        self.env_gen.set_state(checkpoint["env_generator"].cpu())
        self.algo_gen.set_state(checkpoint["algo_generator"].cpu())
        store.truncate_metrics(self.env_steps)

    def run(self, store: RunStore | None, on_log: LogCallback | None) -> RunResult:
        """Train; ``store`` is None on data-parallel ranks other than 0 (they write nothing)."""
        self.store = store if store is not None else NullStore()
        exp = self.config.experiment
        meta = self.store.meta()
        tracker = WandbTracker(
            self.config if store is not None else _without_tracking(self.config),
            self.store.dir,
            meta.get("wandb_run_id"),
            meta.get("context"),
            start_step=self.env_steps,
        )
        if tracker.run_id and meta.get("wandb_run_id") != tracker.run_id:
            self.store.write_meta({**meta, "wandb_run_id": tracker.run_id})
        if self.env_steps and tracker.active and tracker.last_step < self.env_steps:
            with contextlib.suppress(RunDirError):  # no metrics.csv yet: nothing to send
                tracker.backfill(self.store.metrics())  # rows an earlier segment lost
        if store is None:
            log.disabled = True  # rank 0 speaks for the run
        log.info(
            "training %s on %s (%s): %d envs, %d iterations of %d env steps -> %s",
            self.config.run_name,
            self.device,
            device_name(self.device),
            self.env.num_envs,
            self.total_iterations,
            self.steps_per_iteration,
            self.store.dir,
        )
        obs = self.env.reset()
        start = time.perf_counter()
        burn_in: tuple[float, int] | None = None  # (time, env steps) after the first iteration
        interval: tuple[float, int] = (start, self.env_steps)
        losses: dict[str, torch.Tensor] = {}
        completed = False
        try:
            while self.iteration < self.total_iterations:
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
                    row = self._log_row(losses, start, burn_in, interval)
                    if exp.eval_interval and (self.iteration % exp.eval_interval == 0 or last):
                        row.update(self._evaluate())
                    interval = (time.perf_counter(), self.env_steps)
                    losses = {}
                    self.store.append_metrics(row)
                    tracker.log(row, step=self.env_steps, videos=self._videos(tracker, last))
                    log.info(
                        run_line(
                            row,
                            self.total_iterations,
                            self.total_iterations * self.steps_per_iteration,
                        )
                    )
                    if on_log is not None:
                        on_log(row)
                    diverged = diverged_losses(row)
                    if diverged:
                        saved = (self.store.dir / CHECKPOINT_FILE).exists()
                        kept = "the last checkpoint is from before" if saved else "no checkpoint"
                        raise DivergedError(
                            f"{self.store.dir}: training diverged at {self.env_steps:,} env "
                            f"steps ({', '.join(diverged)} not finite); metrics.csv keeps every "
                            f"row so far and {kept}; try a lower learning rate or max_grad_norm"
                        )
                    if self._reached_stop(row):
                        log.info(
                            "mean %s reached %.1f %d time(s) in a row; stopping",
                            self.stop_metric,
                            exp.stop_at_return,
                            exp.stop_patience,
                        )
                        last = True
                if self.iteration % exp.checkpoint_interval == 0 or last:
                    self._checkpoint(start)
                if last:
                    break
            completed = True
        finally:
            self.iterate.release()
            self.updates.release()
            wall = self.wall_time_before + time.perf_counter() - start
            result = self._result(wall)
            summary = {**result.__dict__, "run_dir": str(result.run_dir), "completed": completed}
            if completed:
                self.store.write_summary(summary)
            tracker.finish(summary)
        log.info("done: final return %.1f, results in %s", result.final_return, result.run_dir)
        return result

    def _videos(self, tracker: WandbTracker, last: bool) -> dict[str, Path]:
        """tracking.video_interval: a GIF of the greedy policy now, for W&B's row."""
        every = self.config.tracking.video_interval
        if not (every and tracker.active and (self.iteration % every == 0 or last)):
            return {}
        from harness.video import play

        path = self.store.dir / "videos" / f"policy-{self.env_steps:012d}.gif"
        seed = self.config.experiment.seed + EVAL_SEED_OFFSET
        play(self.config, self.algo, self.device, path, envs=4, steps=200, seed=seed)
        return {"policy_video": path}

    def _eager_iteration(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.phases.mark(0)
        obs = collect(self.env, self.algo, obs)
        self.phases.mark(1)
        stats = self.updates()
        self.phases.mark(2)
        return obs, stats

    @property
    def stop_metric(self) -> str:
        """The row entry that experiment.stop_at_return is compared with."""
        return "eval_return" if self.config.experiment.eval_interval else "episode_return"

    def _reached_stop(self, row: Mapping[str, float]) -> bool:
        """Whether the run has met experiment.stop_at_return ``stop_patience`` checks in a
        row; a row without the metric (no evaluation in it) is not a check."""
        exp = self.config.experiment
        value = row.get(self.stop_metric)
        if exp.stop_at_return is None or value is None:
            return False
        self.stop_streak = self.stop_streak + 1 if value >= exp.stop_at_return else 0
        return self.stop_streak >= exp.stop_patience

    def _evaluate(self) -> dict[str, float]:
        """Greedy episodes on the evaluation env, averaged over ranks: eval_* entries."""
        seed = self.config.experiment.seed + EVAL_SEED_OFFSET
        env = make_env(self.eval_config, self.device, _generator(seed, self.device))
        result = run_episodes(env, self.algo, deterministic=True)
        names = ["return", "length", *result.metrics]
        values = [result.mean_return, result.mean_length, *result.metrics.values()]
        if self.rank.world_size > 1:  # every rank must take the same stop decision
            total = all_reduce_sum(torch.tensor(values, device=self.device))
            values = (total / self.rank.world_size).tolist()
        return {f"eval_{name}": value for name, value in zip(names, values, strict=True)}

    def _log_row(
        self,
        losses: dict[str, torch.Tensor],
        start: float,
        burn_in: tuple[float, int],
        interval: tuple[float, int],
    ) -> dict[str, float]:
        reduce = all_reduce_sum if self.rank.world_size > 1 else None
        episode = self.env.stats.reset_interval(reduce)
        n = (
            self.iteration % self.config.experiment.log_interval
            or self.config.experiment.log_interval
        )
        names = list(episode) + list(losses)
        values = [episode[k] for k in episode] + [losses[k] / n for k in losses]
        numbers = torch.stack([v.float() for v in values]).tolist()  # the one sync per interval
        now = time.perf_counter()
        phases = self.phases.read(self.iterate.replays)  # after the sync: marks reached
        row: dict[str, Any] = {
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "wall_time_s": self.wall_time_before + now - start,
        }
        row.update(zip(names, numbers, strict=True))
        row.update(phases)
        row["env_steps_per_second"] = _rate(self.env_steps - burn_in[1], now - burn_in[0])
        row["interval_env_steps_per_second"] = _rate(
            self.env_steps - interval[1], now - interval[0]
        )
        self.throughput = row["env_steps_per_second"]
        ret = row["episode_return"]
        if not math.isnan(ret):
            self.final_return = ret
            self.best_return = max(self.best_return, ret)
        return row

    def _checkpoint(self, start: float) -> None:
        self.store.save_checkpoint(
            {
                "algo": self.algo.state_dict(),
                "iteration": self.iteration,
                "env_steps": self.env_steps,
                "steps_per_iteration": self.steps_per_iteration,
                "wall_time_s": self.wall_time_before + time.perf_counter() - start,
                "best_return": self.best_return,
                "final_return": self.final_return,
                "env_generator": self.env_gen.get_state(),
                "algo_generator": self.algo_gen.get_state(),
                "config_hash": config_hash(self.config),
            }
        )

    def _result(self, wall: float) -> RunResult:
        return RunResult(
            run_dir=self.store.dir,
            final_return=self.final_return,
            best_return=self.best_return if self.best_return > -math.inf else math.nan,
            env_steps=self.env_steps,
            iterations=self.iteration,
            wall_time_s=wall,
            env_steps_per_second=self.throughput,
            gpu_memory_peak_mb=_peak_memory_mb(self.device),
        )


def _graph_scope(config: RunConfig, device: torch.device, env: VecEnv) -> str | None:
    """What a CUDA graph replays (experiment.cuda_graph; null: wherever it can): "iteration",
    "update" where the env steps outside torch (MJX), or None (eager)."""
    why_not = None
    if device.type != "cuda":
        why_not = f"needs a CUDA device, got {device}"
    elif config.algo.not_capturable:
        why_not = config.algo.not_capturable
    wanted = config.experiment.cuda_graph
    if wanted and why_not:
        raise ConfigError(f"experiment.cuda_graph {why_not}")
    if wanted is False or why_not is not None:
        return None
    return "update" if env.not_capturable else "iteration"


def _without_tracking(config: RunConfig) -> RunConfig:
    return dataclasses.replace(
        config, tracking=dataclasses.replace(config.tracking, wandb="disabled", tensorboard=False)
    )


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type != "cuda":
        return math.nan
    return torch.cuda.max_memory_allocated(device) / 2**20


def _rate(steps: int, seconds: float) -> float:
    return steps / seconds if seconds > 0 and steps > 0 else math.nan
