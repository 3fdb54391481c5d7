"""Aggregate statistics over runs, after Agarwal et al. (2021), "Deep RL at the Edge of the
Statistical Precipice": mean, median, IQM and optimality gap of normalised scores with
stratified bootstrap confidence intervals, performance profiles and the probability of
improvement.

Scores are arrays ``[R, K]``: R runs (seeds) of each of K tasks, normalised so that 1 is the
best possible return of the task.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Statistic = Callable[[np.ndarray], float]


def mean(scores: np.ndarray) -> float:
    """Mean over tasks of the per-task mean."""
    return float(np.mean(np.mean(scores, axis=0)))


def median(scores: np.ndarray) -> float:
    """Median over tasks of the per-task mean."""
    return float(np.median(np.mean(scores, axis=0)))


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50 % of all R*K scores.

    floor(n / 4) scores are cut from each end, as scipy.stats.trim_mean(x, 0.25) does.
    """
    flat = np.sort(np.asarray(scores, dtype=float).ravel())
    cut = int(0.25 * flat.size)
    return float(np.mean(flat[cut : flat.size - cut]))


def optimality_gap(scores: np.ndarray, gamma: float = 1.0) -> float:
    """How far scores fall short of ``gamma`` on average (scores above gamma count as gamma)."""
    return float(gamma - np.mean(np.minimum(scores, gamma)))


AGGREGATES: dict[str, Statistic] = {
    "mean": mean,
    "median": median,
    "iqm": iqm,
    "optimality_gap": optimality_gap,
}


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float


def stratified_bootstrap(
    scores: np.ndarray,
    statistic: Statistic,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile interval of ``statistic`` over resamples that redraw the R runs of each
    task with replacement, task by task (the strata)."""
    scores = np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    runs, tasks = scores.shape
    samples = np.empty(reps)
    columns = np.arange(tasks)
    for i in range(reps):
        rows = rng.integers(0, runs, size=(runs, tasks))
        samples[i] = statistic(scores[rows, columns])
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha])
    return Interval(statistic(scores), float(low), float(high))


def performance_profile(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """[len(taus)]: for each tau, the mean over tasks of the fraction of runs scoring > tau."""
    scores = np.asarray(scores, dtype=float)
    above = scores[None, :, :] > np.asarray(taus, dtype=float)[:, None, None]  # [T, R, K]
    return above.mean(axis=1).mean(axis=1)


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y): the mean over tasks of the chance that a run of X beats a run of Y (ties
    count a half), i.e. the Mann-Whitney U statistic over R_x * R_y, averaged over tasks."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    per_task = []
    for k in range(x.shape[1]):
        a, b = x[:, k][:, None], y[:, k][None, :]
        per_task.append(float(np.mean((a > b) + 0.5 * (a == b))))
    return float(np.mean(per_task))


def probability_of_improvement_interval(
    x: np.ndarray, y: np.ndarray, reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """P(X > Y) with a stratified bootstrap interval (each side resampled on its own)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rng = np.random.default_rng(seed)
    samples = np.empty(reps)
    cols_x, cols_y = np.arange(x.shape[1]), np.arange(y.shape[1])
    for i in range(reps):
        rx = rng.integers(0, x.shape[0], size=x.shape)
        ry = rng.integers(0, y.shape[0], size=y.shape)
        samples[i] = probability_of_improvement(x[rx, cols_x], y[ry, cols_y])
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha])
    return Interval(probability_of_improvement(x, y), float(low), float(high))


def mean_band(
    curves: np.ndarray, confidence: float = 0.95, reps: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over runs of curves [R, S] and a percentile-bootstrap band of that mean.

    Runs are resampled with replacement; NaNs (a run that has not reached that point) are
    ignored. The band stays inside the range of the runs, unlike a t-interval on 2 seeds.
    """
    curves = np.asarray(curves, dtype=float)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, curves.shape[0], size=(reps, curves.shape[0]))  # [B, R]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        centre = np.nanmean(curves, axis=0)
        means = np.nanmean(curves[rows], axis=1)  # [B, S]
        alpha = (1.0 - confidence) / 2.0
        low, high = np.nanquantile(means, [alpha, 1.0 - alpha], axis=0)
    return centre, low, high


def bootstrap_coverage(
    n_runs: int, confidence: float = 0.95, trials: int = 2000, reps: int = 1000, seed: int = 0
) -> float:
    """How often a percentile-bootstrap interval of the mean of ``n_runs`` runs (the method
    of `mean_band`, and of the aggregates' intervals at one task) covers the true mean:
    simulated on ``trials`` samples of normally distributed returns. Below the nominal
    ``confidence`` at small ``n_runs`` (about 0.90 at 10 runs for a nominal 0.95): the
    resampled means spread by sqrt((n - 1) / n) of the mean's standard error and without
    Student's t."""
    rng = np.random.default_rng(seed)
    samples = rng.standard_normal((trials, n_runs))  # true mean 0
    covered = 0
    alpha = (1.0 - confidence) / 2.0
    step = max(1, 4_000_000 // (reps * n_runs))  # [step, reps, n] resamples at a time
    for start in range(0, trials, step):
        block = samples[start : start + step]
        rows = rng.integers(0, n_runs, size=(block.shape[0], reps, n_runs))
        means = np.take_along_axis(block[:, None, :], rows, axis=2).mean(axis=2)
        low, high = np.quantile(means, [alpha, 1.0 - alpha], axis=1)
        covered += int(np.sum((low <= 0.0) & (0.0 <= high)))
    return covered / trials


def coverage_note(n_runs: int, confidence: float = 0.95) -> str:
    """A sentence for reports: the simulated coverage of their nominal interval at the
    smallest number of seeds they aggregate, when that falls short by a point or more
    (beyond 50 seeds it is within a point: not simulated)."""
    if n_runs < 2 or n_runs > 50:
        return ""
    actual = bootstrap_coverage(n_runs, confidence)
    if actual >= confidence - 0.01:
        return ""
    return (
        f" With {n_runs} seeds a nominal {confidence:.0%} percentile-bootstrap interval covers "
        f"the true mean about {actual:.0%} of the time (simulated for normally distributed "
        "returns, reports.stats.bootstrap_coverage): read the bands and intervals as "
        "approximate."
    )
