"""Running a study: create or resume it, and the worker loop (ask -> train -> tell).

Workers share the study through its storage only. A worker trains each trial in its own
process by default (warm: imports, CUDA context and compiled kernels serve every trial);
with ``trial_isolation: process`` each trial gets a subprocess (`studies.trial_child`) whose
events come back as JSON lines. Either way every metrics row reaches the worker, which
reports it for pruning and ends the trial when Optuna prunes.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from harness.config import to_dict
from harness.errors import ConfigError, one_line
from harness.progress import elapsed_and_eta
from harness.runner import diverged_losses
from studies.messages import RowLogged, SeedFinished, TrialEvent, TrialJob, decode, encode
from studies.spec import RETURN_METRICS, LoadedStudy, PrunerSpec, SamplerSpec, StudySpec, dump_spec
from studies.storage import StudyStorage, redact
from studies.trial import TrialStopped, run_job

log = logging.getLogger("vecbench")
optuna.logging.set_verbosity(optuna.logging.WARNING)
FINGERPRINT = "vecbench_fingerprint"
SAMPLER_STREAMS = "vecbench_sampler_streams"  # workers that have drawn from the sampler
POLL_S = 1.0


def make_sampler(spec: SamplerSpec, stream: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler as worker ``stream`` (see `claim_sampler_stream`) draws it."""
    seed = stream_seed(spec.seed, stream)
    if spec.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    # Grid points are queued as trials when the study is created; TPE handles the rest.
    return optuna.samplers.TPESampler(seed=seed)


def stream_seed(seed: int | None, stream: int) -> int | None:
    """Stream 0 (the study's first worker) draws from the study file's seed itself; every
    later stream from a seed of its own."""
    if seed is None or stream == 0:
        return seed
    return (seed + 1_000_003 * stream) % 2**32


def claim_sampler_stream(study: optuna.Study, storage: StudyStorage, name: str) -> int:
    """A sampler stream no other worker of this study has had, on any machine and in any
    earlier run: the count of workers that opened the study before, kept in its storage."""
    with storage.budget_lock(name):
        stream = int(study.user_attrs.get(SAMPLER_STREAMS, 0))
        study.set_user_attr(SAMPLER_STREAMS, stream + 1)
    return stream


def make_pruner(spec: PrunerSpec) -> optuna.pruners.BasePruner:
    if spec.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=spec.n_startup_trials, n_warmup_steps=spec.n_warmup_steps
        )
    if spec.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=spec.min_resource or "auto", reduction_factor=spec.reduction_factor
        )
    if spec.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=spec.min_resource or 1, reduction_factor=spec.reduction_factor
        )
    if spec.name == "threshold":
        return optuna.pruners.ThresholdPruner(lower=spec.lower, n_warmup_steps=spec.n_warmup_steps)
    if spec.name == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=spec.p_threshold)
    return optuna.pruners.NopPruner()


def open_study(
    loaded: LoadedStudy, storage_url: str | None = None
) -> tuple[optuna.Study, StudyStorage]:
    """Create the study (queueing a grid's points) or load it; refuse a different space."""
    spec = loaded.spec
    url = loaded.storage_url(storage_url)
    storage = StudyStorage(url, spec.heartbeat_interval_s, spec.heartbeat_grace_s, spec.max_retries)
    sampler, pruner = make_sampler(spec.sampler), make_pruner(spec.pruner)
    with storage.budget_lock(spec.name):
        try:
            study = optuna.create_study(
                storage=storage.optuna,
                study_name=spec.name,
                sampler=sampler,
                pruner=pruner,
                directions=spec.directions,
            )
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(
                study_name=spec.name, storage=storage.optuna, sampler=sampler, pruner=pruner
            )
            theirs = study.user_attrs.get(FINGERPRINT)
            if theirs != spec.fingerprint():
                raise ConfigError(
                    f"{loaded.path}: study {spec.name!r} already exists in {redact(storage.url)} "
                    "with a "
                    "different search space, objective or seeds; rename the study or use "
                    "another study_dir/storage"
                ) from None
            return study, storage
        study.set_user_attr(FINGERPRINT, spec.fingerprint())
        study.set_user_attr("vecbench_spec", dump_spec(loaded))
        if spec.sampler.name == "grid":
            for point in spec.grid():
                study.enqueue_trial(point)
    return study, storage


def budget_used(study: optuna.Study) -> int:
    """Trials that count against n_trials: all but failed ones that were queued again."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return sum(1 for t in trials if not (t.state == TrialState.FAIL and t.number in retried))


def budget(spec: StudySpec) -> int:
    return len(spec.grid()) if spec.sampler.name == "grid" else spec.n_trials


def suggest(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """Sample every active parameter, in file order (conditions see earlier values)."""
    params: dict[str, Any] = {}
    for path, p in spec.space.items():
        if any(params.get(key, _ABSENT) not in values for key, values in p.when.items()):
            continue
        if p.type == "categorical":
            params[path] = p.decode(trial.suggest_categorical(path, p.optuna_choices))
        elif p.type == "int":
            step = int(p.step or 1)
            params[path] = trial.suggest_int(path, int(p.low), int(p.high), step=step, log=p.log)  # type: ignore[arg-type]
        else:
            params[path] = trial.suggest_float(path, p.low, p.high, step=p.step, log=p.log)  # type: ignore[arg-type]
    return params


_ABSENT = object()


def aggregate(values: list[float], how: str) -> float:
    ordered = sorted(values)
    if how == "median":
        mid = len(ordered) // 2
        return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])
    if how == "min":
        return ordered[0]
    if how == "iqm":
        cut = len(ordered) // 4
        ordered = ordered[cut : len(ordered) - cut]
    return sum(ordered) / len(ordered)


@dataclass
class TrialOutcome:
    state: TrialState
    values: list[float] | None
    message: str = ""


class Worker:
    def __init__(self, loaded: LoadedStudy, storage_url: str | None, index: int = 0) -> None:
        self.loaded = loaded
        self.spec = loaded.spec
        self.index = index
        self.study, self.storage = open_study(loaded, storage_url)
        self._last_shown = 0.0  # when a trial's progress was last printed
        self._started = time.perf_counter()
        self._done_at_start = self._trials_done()  # for the study's eta
        # Workers seeded alike would suggest the same points in lockstep, and a restart would
        # repeat the finished ones: each worker draws from a stream of its own.
        self.sampler_stream = claim_sampler_stream(self.study, self.storage, self.spec.name)
        self.study.sampler = make_sampler(self.spec.sampler, self.sampler_stream)

    def run(self) -> int:
        """Run trials until the budget is spent and no trial is left running; the count run."""
        done = 0
        while True:
            for number in self.storage.reap_stale(self.study):
                log.info("worker %d: trial %d lost its worker; queued again", self.index, number)
            trials = self._next_trials(self.spec.batch_trials)
            if not trials:
                if self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    time.sleep(POLL_S)  # another worker's trial may still fail and come back
                    continue
                return done
            if self.spec.batch_trials == 1:
                self._run_trial(trials[0])
            else:
                from studies.batch import run_batch

                run_batch(self, trials)
            done += len(trials)

    def _next_trials(self, limit: int) -> list[optuna.Trial]:
        """Up to ``limit`` trials, as the budget allows."""
        trials: list[optuna.Trial] = []
        with self.storage.budget_lock(self.spec.name):
            while len(trials) < limit:
                waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                if not waiting and budget_used(self.study) >= budget(self.spec):
                    break
                trial = self.study.ask()
                # Beat at once: a database only fails trials that have beaten, so a worker
                # killed before its first beat would leave this trial running for ever.
                self.storage.beat(trial)
                trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
                trial.set_user_attr("sampler_stream", self.sampler_stream)
                trials.append(trial)
        return trials

    def _run_trial(self, trial: optuna.Trial) -> None:
        start = time.perf_counter()
        params: dict[str, Any] = {}
        try:
            params = suggest(trial, self.spec)
            job = self._job(trial, params)
        except ConfigError as err:
            self.finish(trial, params, TrialOutcome(TrialState.FAIL, None, str(err)), start)
            return
        with self.storage.heartbeat(trial):
            try:
                outcome = self._supervise(trial, job)
            except Exception as err:  # a bug here must fail this trial, not strand it RUNNING
                outcome = TrialOutcome(TrialState.FAIL, None, f"{type(err).__name__}: {err}")
        self.finish(trial, params, outcome, start)

    def finish(
        self, trial: optuna.Trial, params: dict[str, Any], outcome: TrialOutcome, start: float
    ) -> None:
        """Tell Optuna the trial's outcome and print its line."""
        if outcome.state == TrialState.COMPLETE:
            self.study.tell(trial, outcome.values)
        else:
            if outcome.message:
                trial.set_user_attr("error", outcome.message[-2000:])
            self.study.tell(trial, state=outcome.state)
        shown = (
            ""
            if outcome.values is None
            else " value " + ", ".join(f"{v:.4g}" for v in outcome.values)
        )
        why = f" | {reason(outcome.message)}" if outcome.message else ""
        log.info(
            "trial %d %s%s in %.1f s | %s%s",
            trial.number,
            outcome.state.name,
            shown,
            time.perf_counter() - start,
            " ".join(f"{k}={_short(v)}" for k, v in params.items()),
            why,
        )
        log.info(self._study_progress())

    def _study_progress(self) -> str:
        """ "study s: 12 of 64 trials done | 1 min 05 s elapsed, eta 4 min 40 s": the eta
        from how fast trials have finished (on any worker) since this worker started."""
        done, total = self._trials_done(), budget(self.spec)
        elapsed = time.perf_counter() - self._started
        rate = (done - self._done_at_start) / elapsed if elapsed > 0 else 0.0
        remaining = (total - done) / rate if rate > 0 else math.inf
        return f"study {self.spec.name}: {done} of {total} trials done | " + elapsed_and_eta(
            elapsed, remaining
        )

    def _trials_done(self) -> int:
        """Trials of the budget that have ended (complete, pruned, or failed for good)."""
        trials = self.study.get_trials(deepcopy=False)
        ongoing = sum(1 for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING))
        return budget_used(self.study) - ongoing

    def _job(self, trial: optuna.Trial, params: dict[str, Any]) -> TrialJob:
        spec = self.spec
        trial_dir = self.loaded.study_dir / "trials" / f"trial-{trial.number:04d}"
        configs = []
        for seed in spec.seeds:
            data = to_dict(self.loaded.trial_config(params, seed))
            data["tracking"]["group"] = spec.name
            configs.append(data)
        trial.set_user_attr("trial_dir", str(trial_dir))
        threshold = next((o.threshold for o in spec.objective if o.threshold is not None), None)
        evaluation = spec.evaluation
        return TrialJob(
            trial=trial.number,
            seeds=tuple(spec.seeds),
            configs=tuple(configs),
            trial_dir=str(trial_dir),
            context={"study": spec.name, "trial": trial.number, "params": params},
            threshold=threshold,
            eval_episodes=evaluation.episodes if evaluation is not None else None,
            eval_set=tuple(evaluation.set) if evaluation is not None else (),
        )

    def _supervise(self, trial: optuna.Trial, job: TrialJob) -> TrialOutcome:
        Path(job.trial_dir).mkdir(parents=True, exist_ok=True)
        if self.spec.trial_isolation == "process":
            return self._run_in_child(trial, job)
        return self._run_here(trial, job)

    def _run_here(self, trial: optuna.Trial, job: TrialJob) -> TrialOutcome:
        """Train the trial in this process: its CUDA context, compiled kernels and imports
        serve trial after trial. An exception fails this trial alone."""
        seeds: list[SeedFinished] = []

        def emit(event: TrialEvent) -> None:
            pruned = self._on_event(trial, job, event, seeds)
            if pruned:
                raise TrialStopped(pruned)

        run_log = logging.getLogger("vecbench.run")
        handler = logging.FileHandler(Path(job.trial_dir) / "trial.log")
        handler.setFormatter(logging.Formatter("%(message)s"))
        run_log.addHandler(handler)
        run_log.propagate = False  # the runner's lines go to trial.log, as a child's would
        try:
            run_job(job, emit)
        except TrialStopped as stop:
            return TrialOutcome(TrialState.PRUNED, None, str(stop))
        except Exception as err:
            return TrialOutcome(TrialState.FAIL, None, f"{type(err).__name__}: {err}")
        finally:
            run_log.removeHandler(handler)
            run_log.propagate = True
            handler.close()
            _release_memory()
        return self._outcome(seeds)

    def _run_in_child(self, trial: optuna.Trial, job: TrialJob) -> TrialOutcome:
        log_path = Path(job.trial_dir) / "trial.log"
        seeds: list[SeedFinished] = []
        pruned = ""
        with open(log_path, "a") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "studies.trial_child"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
            )
            try:
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(encode(job))
                proc.stdin.close()
                for line in proc.stdout:
                    event = decode(line)
                    assert isinstance(event, RowLogged | SeedFinished)
                    pruned = self._on_event(trial, job, event, seeds)
                    if pruned:
                        break
            finally:
                if proc.poll() is None and (pruned or sys.exc_info()[0] is not None):
                    proc.terminate()
                rc = proc.wait()
        if pruned:
            return TrialOutcome(TrialState.PRUNED, None, pruned)
        if rc != 0:
            tail = log_path.read_text()[-2000:]
            lines = tail.strip().splitlines()
            # The last line of a traceback names the error: first, as the trial's reason (a
            # signal leaves no such line, only whatever the trial logged last).
            last = f": {lines[-1]}" if lines and rc > 0 else ""
            return TrialOutcome(
                TrialState.FAIL, None, f"trial process {exit_reason(rc)}{last}\n{tail}"
            )
        return self._outcome(seeds)

    def _outcome(self, seeds: list[SeedFinished]) -> TrialOutcome:
        values = [
            aggregate([s.metrics[o.metric] for s in seeds], self.spec.aggregate)
            for o in self.spec.objective
        ]
        if any(math.isnan(v) for v in values):
            return TrialOutcome(TrialState.PRUNED, None, "objective is NaN")
        return TrialOutcome(TrialState.COMPLETE, values)

    def _on_event(
        self, trial: optuna.Trial, job: TrialJob, event: TrialEvent, seeds: list[SeedFinished]
    ) -> str:
        """Report one event to Optuna; the reason if the trial should be pruned."""
        if isinstance(event, RowLogged):
            pruned = self._report_row(trial, job, event)
            now = time.perf_counter()
            if now - self._last_shown > 5.0:
                self._last_shown = now
                row = event.row
                log.info(
                    "trial %d seed %d: %s steps | %s steps/s | return %.1f",
                    trial.number,
                    job.seeds[event.seed_index],
                    f"{row['env_steps']:,}",
                    f"{row['interval_env_steps_per_second']:,.0f}",
                    row["episode_return"],
                )
            return pruned
        seeds.append(event)
        trial.set_user_attr("run_dirs", [s.run_dir for s in seeds])
        trial.set_user_attr("seed_metrics", [s.metrics for s in seeds])
        return self._report_seed(trial, event)

    def _report_row(self, trial: optuna.Trial, job: TrialJob, event: RowLogged) -> str:
        row = event.row
        diverged = diverged_losses(row)
        if diverged:
            return f"non-finite {', '.join(diverged)} at {row['env_steps']} env steps"
        if self.spec.pruner.name in ("none", "wilcoxon"):
            return ""
        value = row["episode_return"]
        if not math.isfinite(value):
            return ""  # no episode finished yet
        step = event.seed_index * job.steps_per_seed + int(row["env_steps"])
        trial.report(value, step)
        return f"pruned at {step} env steps" if trial.should_prune() else ""

    def _report_seed(self, trial: optuna.Trial, event: SeedFinished) -> str:
        metric = self.spec.objective[0].metric
        value = event.metrics.get(metric, math.nan)
        if self.spec.pruner.name != "wilcoxon" or metric not in RETURN_METRICS:
            return ""
        if not math.isfinite(value):
            return "non-finite return"
        trial.report(value, event.seed_index)
        return "pruned by seeds" if trial.should_prune() else ""


def _release_memory() -> None:
    """What a finished trial held goes back before the next one (the GPU's cache too)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


REASON_CHARS = 300  # the most of an error a trial's line and `study status` show


def reason(message: str) -> str:
    """The first line of a trial's error (its ``error`` user attr), cut for one line."""
    lines = message.strip().splitlines()
    return one_line(lines[0] if lines else "", REASON_CHARS)


def exit_reason(code: int) -> str:
    """ "exited with 2" or "was killed by signal 9 (SIGKILL)", for a process's exit code."""
    if code >= 0:
        return f"exited with {code}"
    try:
        name = f" ({signal.Signals(-code).name})"
    except ValueError:
        name = ""
    return f"was killed by signal {-code}{name}"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
