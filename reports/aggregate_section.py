"""The aggregate section: final scores normalised per task, aggregated over seeds with
stratified bootstrap intervals, performance profiles and the probability of improvement
(Agarwal et al., 2021; the statistics are reports.stats)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from reports import figures, stats
from reports.collect import Collection
from reports.sections import Section, _top_groups


def score_matrix(runs: pd.DataFrame, label: str) -> np.ndarray | None:
    """[R, K] normalised final scores of one configuration (None if tasks have unequal R)."""
    part = runs[runs["label"] == label]
    per_task = [
        g["final_return"].to_numpy() / g["max_return"].to_numpy() for _, g in part.groupby("task")
    ]
    if len({len(t) for t in per_task}) != 1:
        return None
    return np.stack(per_task, axis=1)


def aggregates(c: Collection, threshold: float | None, reps: int) -> Section | None:
    runs = c.runs
    if runs.empty or runs["max_return"].isna().all():
        return None
    runs = runs.dropna(subset=["max_return", "final_return"])
    labels = [lab for lab in _top_groups(runs, 8) if (runs["label"] == lab).sum() >= 2]
    matrices = {lab: m for lab in labels if (m := score_matrix(runs, lab)) is not None}
    if not matrices:
        return None
    section = Section("Aggregate performance")
    section.text.append(
        "Final returns normalised by each task's maximum return (cartpole: the time limit), "
        f"aggregated over seeds with 95 % stratified bootstrap confidence intervals ({reps} "
        "resamples; Agarwal et al., 2021). Lower is better for the optimality gap."
        + stats.coverage_note(min(m.shape[0] for m in matrices.values()))
    )
    intervals = {
        lab: {
            name: stats.stratified_bootstrap(m, fn, reps=reps, seed=i)
            for i, (name, fn) in enumerate(stats.AGGREGATES.items())
        }
        for lab, m in matrices.items()
    }
    rows = []
    for lab, ivs in intervals.items():
        row: dict[str, Any] = {"label": lab, "runs": matrices[lab].size}
        for name, iv in ivs.items():
            row[name] = iv.estimate
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = iv.low, iv.high
        rows.append(row)
    table = pd.DataFrame(rows)
    section.tables.append(("aggregates", "Aggregate normalised scores with 95 % CIs", table))
    best = table.sort_values("iqm", ascending=False).iloc[0]
    section.summary.append(
        f"Best configuration by IQM of normalised score: {best['label']}, IQM "
        f"{best['iqm']:.3f} (95 % CI {best['iqm_ci_low']:.3f} to {best['iqm_ci_high']:.3f}, "
        f"{int(best['runs'])} runs)."
    )
    section.figures.append(
        (
            "aggregates",
            "Aggregate metrics with 95 % stratified bootstrap CIs",
            figures.aggregate_intervals(intervals),
        )
    )
    taus = np.linspace(0.0, 1.0, 101)
    section.figures.append(
        (
            "performance_profiles",
            "Performance profiles (score distributions)",
            figures.performance_profiles(
                taus, {lab: stats.performance_profile(m, taus) for lab, m in matrices.items()}
            ),
        )
    )
    if len(matrices) >= 2:
        best, *others = list(matrices)
        poi = []
        for other in others:
            iv = stats.probability_of_improvement_interval(
                matrices[best], matrices[other], reps=reps
            )
            poi.append(
                {
                    "x": best,
                    "y": other,
                    "p_x_better": iv.estimate,
                    "ci_low": iv.low,
                    "ci_high": iv.high,
                }
            )
        section.tables.append(
            (
                "probability_of_improvement",
                "P(X > Y): the best configuration against each other one",
                pd.DataFrame(poi),
            )
        )
    return section
