"""Batched trials: a worker's trials trained together as one program (`harness.members`).

Every seed of every trial is a member. Trials whose runs agree on shapes and loops share a
batch; the others form batches of their own. Each member reports its rows for pruning as
a trial alone would; when Optuna prunes a trial, all its members stop and the rest go on.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from harness.config import config_from_dict
from harness.errors import ConfigError
from harness.evaluate import evaluate
from harness.members import Member, group_key, train_members, unsupported
from studies.messages import RowLogged, SeedFinished, TrialJob
from studies.trial import seed_metrics

if TYPE_CHECKING:
    from studies.engine import TrialOutcome, Worker

log = logging.getLogger("vecbench")


class _Planned:
    """One trial of the batch: its job, what its seeds reported, and how it ended."""

    def __init__(self, trial: optuna.Trial, params: dict[str, Any], job: TrialJob) -> None:
        self.trial, self.params, self.job = trial, params, job
        self.configs = [
            config_from_dict(data, f"trial {job.trial} seed {seed}")
            for seed, data in zip(job.seeds, job.configs, strict=True)
        ]
        self.rows: list[list[dict[str, Any]]] = [[] for _ in job.seeds]
        self.seeds: list[SeedFinished] = []
        self.stopped = ""  # why the trial was pruned, once it was
        self.failed = ""


def run_batch(worker: Worker, trials: list[optuna.Trial]) -> None:
    """Train ``trials`` in batches of runs that agree on shapes, then tell Optuna each result."""
    from studies.engine import TrialOutcome, suggest

    start = time.perf_counter()
    planned: list[_Planned] = []
    for trial in trials:
        params: dict[str, Any] = {}
        try:
            params = suggest(trial, worker.spec)
            plan = _Planned(trial, params, worker._job(trial, params))
        except ConfigError as err:
            worker.finish(trial, params, TrialOutcome(TrialState.FAIL, None, str(err)), start)
            continue
        Path(plan.job.trial_dir).mkdir(parents=True, exist_ok=True)
        planned.append(plan)
    groups: dict[str, list[_Planned]] = {}
    alone: list[_Planned] = []
    for plan in planned:
        why = unsupported(plan.configs[0])
        if why:
            log.info("trial %d trains alone: %s", plan.trial.number, why)
            alone.append(plan)
        else:
            groups.setdefault(group_key(plan.configs[0]), []).append(plan)
    with worker.storage.heartbeat(*(p.trial for p in planned)):
        for group in groups.values():
            _train_group(worker, group)
        for plan in alone:
            outcome = worker._supervise(plan.trial, plan.job)
            worker.finish(plan.trial, plan.params, outcome, start)
    for group in groups.values():
        for plan in group:
            worker.finish(plan.trial, plan.params, _outcome(worker, plan), start)


def _train_group(worker: Worker, group: list[_Planned]) -> None:
    members: list[Member] = []
    owners: list[tuple[_Planned, int]] = []  # (trial, seed index) of each member
    for plan in group:
        for index, (seed, config) in enumerate(zip(plan.job.seeds, plan.configs, strict=True)):
            run_dir = Path(plan.job.trial_dir) / f"seed-{seed}"
            members.append(Member(config, run_dir, plan.job.context))
            owners.append((plan, index))
    group_keys = {group_key(m.config) for m in members}
    if len(group_keys) != 1:  # a seed changed a shape: train these trials one by one
        for plan in group:
            plan.failed = "its seeds' configs differ in shape; set batch_trials: 1"
        return

    def on_log(member: int, row: Any) -> str:
        plan, index = owners[member]
        plan.rows[index].append(dict(row))
        if plan.stopped:
            return plan.stopped
        plan.stopped = worker._on_event(
            plan.trial, plan.job, RowLogged(index, dict(row)), plan.seeds
        )
        return plan.stopped

    handlers = _log_to(group)
    log.info(
        "batch of %d trial(s), %d run(s): %s",
        len(group),
        len(members),
        " ".join(str(p.trial.number) for p in group),
    )
    try:
        results = train_members(members, on_log)
    except Exception as err:  # every trial of the batch fails; the worker goes on
        for plan in group:
            plan.failed = f"{type(err).__name__}: {err}"
        return
    finally:
        _stop_logging(handlers)
        _release_memory()
    for (plan, index), result in zip(owners, results, strict=True):
        if plan.stopped or plan.failed:
            continue
        metrics = seed_metrics(result, plan.rows[index], plan.job.threshold)
        try:
            if plan.job.eval_episodes:
                metrics["eval_return"] = evaluate(
                    result.run_dir,
                    episodes=plan.job.eval_episodes,
                    overrides=list(plan.job.eval_set),
                ).mean_return
        except Exception as err:
            plan.failed = f"{type(err).__name__}: {err}"
            continue
        event = SeedFinished(index, plan.job.seeds[index], str(result.run_dir), metrics)
        plan.stopped = worker._on_event(plan.trial, plan.job, event, plan.seeds)


def _outcome(worker: Worker, plan: _Planned) -> TrialOutcome:
    from studies.engine import TrialOutcome

    if plan.failed:
        return TrialOutcome(TrialState.FAIL, None, plan.failed)
    if plan.stopped:
        return TrialOutcome(TrialState.PRUNED, None, plan.stopped)
    return worker._outcome(plan.seeds)


def _log_to(group: list[_Planned]) -> list[logging.Handler]:
    """The batch's runner lines go to each of its trials' trial.log."""
    run_log = logging.getLogger("vecbench.run")
    handlers: list[logging.Handler] = []
    for plan in group:
        handler = logging.FileHandler(Path(plan.job.trial_dir) / "trial.log")
        handler.setFormatter(logging.Formatter("%(message)s"))
        run_log.addHandler(handler)
        handlers.append(handler)
    run_log.propagate = False
    return handlers


def _stop_logging(handlers: list[logging.Handler]) -> None:
    run_log = logging.getLogger("vecbench.run")
    for handler in handlers:
        run_log.removeHandler(handler)
        handler.close()
    run_log.propagate = True


def _release_memory() -> None:
    from studies.engine import _release_memory as release

    release()
