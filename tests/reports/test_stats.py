"""Statistics against hand-computed values and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from reports import stats


def test_iqm_of_known_arrays() -> None:
    # 8 scores: cut 2 from each end -> mean of 3, 4, 5, 6 = 4.5
    assert stats.iqm(np.array([[1, 2, 3, 4], [5, 6, 7, 100]])) == 4.5
    # 10 scores 0..9: cut 2 each end -> mean of 2..7 = 4.5
    assert stats.iqm(np.arange(10).reshape(5, 2)) == 4.5
    rng = np.random.default_rng(0)
    for n in (4, 7, 13, 50):
        x = rng.normal(size=(n, 3))
        assert stats.iqm(x) == pytest.approx(sps.trim_mean(x, 0.25, axis=None))


def test_mean_median_and_optimality_gap_by_hand() -> None:
    scores = np.array([[0.2, 1.0, 0.5], [0.4, 1.4, 0.1]])  # per-task means: .3, 1.2, .3
    assert stats.mean(scores) == pytest.approx(0.6)
    assert stats.median(scores) == pytest.approx(0.3)
    # min(score, 1): .2 1 .5 .4 1 .1 -> mean .5333; gap = 1 - .5333
    assert stats.optimality_gap(scores) == pytest.approx(1 - 3.2 / 6)


def test_bootstrap_interval_covers_the_true_mean_about_95_percent() -> None:
    rng = np.random.default_rng(1)
    true_mean, hits, trials = 0.7, 0, 200
    for i in range(trials):
        scores = rng.normal(true_mean, 0.2, size=(30, 2))
        ci = stats.stratified_bootstrap(scores, stats.mean, reps=400, seed=i)
        hits += ci.low <= true_mean <= ci.high
    assert 0.89 <= hits / trials <= 0.99, hits


def test_bootstrap_resamples_within_each_task() -> None:
    # Task 0 always 0, task 1 always 1: any within-task resample keeps the mean at 0.5.
    scores = np.stack([np.zeros(10), np.ones(10)], axis=1)
    ci = stats.stratified_bootstrap(scores, stats.mean, reps=200)
    assert ci.estimate == ci.low == ci.high == 0.5


def test_probability_of_improvement_matches_mann_whitney() -> None:
    x = np.array([[3.0], [5.0], [7.0]])
    y = np.array([[4.0], [5.0]])
    # pairs x>y: (5>4), (7>4), (7>5) = 3, ties (5,5) = 0.5 -> 3.5 / 6
    assert stats.probability_of_improvement(x, y) == pytest.approx(3.5 / 6)
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(12, 1)), rng.normal(0.5, size=(9, 1))
    u = sps.mannwhitneyu(a[:, 0], b[:, 0], alternative="greater").statistic
    assert stats.probability_of_improvement(a, b) == pytest.approx(u / (12 * 9))
    ci = stats.probability_of_improvement_interval(b, a, reps=300)
    assert ci.low <= ci.estimate <= ci.high and ci.estimate > 0.5


def test_performance_profile_counts_runs_above_tau() -> None:
    scores = np.array([[0.1, 0.9], [0.5, 0.2], [0.8, 0.6]])
    profile = stats.performance_profile(scores, np.array([0.0, 0.55, 1.0]))
    # tau .55: task 0 -> 1/3 (0.8), task 1 -> 2/3 (0.9, 0.6) -> 0.5
    np.testing.assert_allclose(profile, [1.0, 0.5, 0.0])


def test_mean_band_is_a_bootstrap_band_of_the_mean() -> None:
    curves = np.array([[1.0, 2.0, 0.0], [3.0, 2.0, 0.0], [5.0, np.nan, 9.0]])
    centre, low, high = stats.mean_band(curves, reps=4000)
    np.testing.assert_allclose(centre, [3.0, 2.0, 3.0])
    assert low[1] == high[1] == 2.0  # no spread, no band
    # The mean of resampled runs lies between the smallest and largest run.
    assert 1.0 <= low[0] < 3.0 < high[0] <= 5.0
    # Percentile band of the bootstrap mean of [1, 3, 5]: check against a direct simulation.
    rng = np.random.default_rng(0)
    sims = np.array([1.0, 3.0, 5.0])[rng.integers(0, 3, size=(4000, 3))].mean(axis=1)
    assert low[0] == pytest.approx(np.quantile(sims, 0.025), abs=0.34)
    assert high[0] == pytest.approx(np.quantile(sims, 0.975), abs=0.34)


@pytest.mark.parametrize("n_runs", [5, 10])
def test_bootstrap_coverage_simulation_agrees_with_its_theory(n_runs: int) -> None:
    """The percentile bootstrap of a mean is, for large resample counts, the normal
    interval with the plug-in standard deviation: it covers a normal sample's mean with
    probability P(|t_(n-1)| < z * sqrt((n - 1) / n)). The simulation must agree (2000
    samples: standard error about 0.007), and both fall well short of 95 %."""
    theory = 2 * sps.t.cdf(1.959964 * math.sqrt((n_runs - 1) / n_runs), n_runs - 1) - 1
    simulated = stats.bootstrap_coverage(n_runs)
    assert simulated == pytest.approx(theory, abs=0.025)
    assert simulated < 0.93


def test_reports_say_when_their_intervals_are_approximate() -> None:
    note = stats.coverage_note(5)
    assert "With 5 seeds a nominal 95% percentile-bootstrap interval covers" in note
    assert "approximate" in note
    assert stats.coverage_note(1) == "" and stats.coverage_note(60) == ""
