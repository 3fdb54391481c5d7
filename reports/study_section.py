"""A study's section: its trials as tables, its figures drawn by Optuna's own matplotlib
visualisations (history, importance per objective, parallel coordinates, slices, Pareto
front, intermediate values), and the held-out robustness check vecbench adds."""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
import yaml

from reports import figures
from reports.collect import StudyData
from reports.sections import Section


def trials_frame(study: StudyData) -> pd.DataFrame:
    rows = []
    for t in study.trials:
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        values = t.values or []
        for i in range(len(study.directions)):
            row["value" if i == 0 else f"value_{i}"] = values[i] if i < len(values) else math.nan
        end, start = t.datetime_complete, t.datetime_start
        row["duration_s"] = (end - start).total_seconds() if end and start else math.nan
        row.update(t.params)
        seed_metrics = t.user_attrs.get("seed_metrics") or []
        for key in ("final_return", "eval_return"):
            vals = [m[key] for m in seed_metrics if key in m]
            row[f"mean_{key}"] = float(np.mean(vals)) if vals else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def objective_names(study: StudyData) -> list[str]:
    """The objectives' metric names from the study file kept with the study, else value_i."""
    n = len(study.directions)
    fallback = ["value" if i == 0 else f"value_{i}" for i in range(n)]
    try:
        spec = yaml.safe_load(study.spec_text or "") or {}
    except yaml.YAMLError:
        return fallback
    objective = spec.get("objective", "final_return") if isinstance(spec, dict) else None
    items = objective if isinstance(objective, list) else [objective]
    names = [o.get("metric") if isinstance(o, dict) else o for o in items]
    if len(names) != n or not all(isinstance(x, str) for x in names):
        return fallback
    return names


def best_trial(study: StudyData, trials: pd.DataFrame) -> pd.Series | None:
    """The best complete trial by the first objective."""
    done = trials[trials["state"] == "COMPLETE"].dropna(subset=["value"])
    if done.empty:
        return None
    ordered = done.sort_values("value", ascending=study.directions[0] == "minimize")
    return ordered.iloc[0]


def study_section(study: StudyData) -> Section:
    trials = trials_frame(study)
    names = objective_names(study)
    section = Section(f"Study: {study.name}")
    counts = trials["state"].value_counts().to_dict() if len(trials) else {}
    section.text.append(
        f"{len(trials)} trials from {study.source}: "
        + ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items()))
        + ". Objective(s): "
        + ", ".join(f"{n} ({d})" for n, d in zip(names, study.directions, strict=True))
        + "."
    )
    if trials.empty:
        return section
    params = [p for p in trials.columns if "." in p]
    done = trials[trials["state"] == "COMPLETE"]
    best = done.sort_values("value", ascending=study.directions[0] == "minimize").head(10)
    section.tables.append((f"{study.name}_best_trials", "Best trials", best))
    top = best_trial(study, trials)
    if top is not None:
        setting = ", ".join(f"{p}={top[p]}" for p in params if not pd.isna(top[p]))
        section.summary.append(
            f"Study {study.name}: best trial {int(top['number'])} by {names[0]} "
            f"({top['value']:.4g}), with {setting or 'the base config'}."
        )
    section.tables.append((f"{study.name}_trials", "All trials", trials))
    _optuna_figures(study, names, len(done), params, section)
    robust = _robustness(trials, params)
    if robust is not None:
        section.text.append(
            "Robustness: each trial's policy evaluated on the held-out range of "
            "the study's `evaluation` settings, next to its training return."
        )
        section.tables.append(
            (f"{study.name}_robustness", "Training range vs held-out range", robust)
        )
        section.figures.append(
            (
                f"{study.name}_robustness",
                "Return on the training range and on the held-out range",
                figures.robustness(robust),
            )
        )
    return section


def _optuna_figures(
    study: StudyData, names: list[str], complete: int, params: list[str], section: Section
) -> None:
    import optuna
    from optuna.visualization import matplotlib as plots

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Categorical choices such as num_envs [128, 256] are drawn as categories, on purpose.
    logging.getLogger("matplotlib.category").setLevel(logging.WARNING)
    copy = optuna.create_study(directions=study.directions)
    copy.add_trials([t for t in study.trials if t.state.is_finished()])
    several = len(names) > 1

    def target(i: int) -> Any:
        return (lambda t: t.values[i]) if several else None

    def add(slug: str, caption: str, draw: Any) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            try:
                axes = draw()
            except (ValueError, RuntimeError) as err:
                section.text.append(f"{caption}: not drawn ({err}).")
                return
            first = axes.flat[0] if isinstance(axes, np.ndarray) else axes
            first.figure.set_size_inches(*_size(first.figure, axes))
            first.figure.tight_layout()  # a colour bar makes it warn; the layout still fits
        section.figures.append((f"{study.name}_{slug}", caption, first.figure))

    def per_objective(slug: str, caption: str, plot: Any) -> None:
        for i, name in enumerate(names):
            add(
                f"{slug}_{name}",
                caption.format(name),
                lambda i=i, name=name: plot(copy, target=target(i), target_name=name),
            )

    if complete == 0:
        return
    per_objective("history", "Optimisation history of {}", plots.plot_optimization_history)
    if several:
        add(
            "pareto_front",
            "Pareto front (" + " against ".join(names) + "), best trials highlighted",
            lambda: plots.plot_pareto_front(copy, target_names=names),
        )
    if complete < 2 or not params:
        return
    per_objective(
        "importance",
        "Hyperparameter importance for {} (Optuna's default evaluator)",
        plots.plot_param_importances,
    )
    for i, name in enumerate(names):
        imp = _importances(copy, target(i))
        if imp:
            section.tables.append(
                (
                    f"{study.name}_importance_{name}",
                    f"Hyperparameter importance for {name}",
                    pd.DataFrame({"param": list(imp), "importance": list(imp.values())}),
                )
            )
    first = names[0]
    add(
        "parallel",
        f"Parallel coordinates (complete trials, colour = {first})",
        lambda: plots.plot_parallel_coordinate(copy, target=target(0), target_name=first),
    )
    add(
        "slices",
        f"{first} against each parameter",
        lambda: plots.plot_slice(copy, target=target(0), target_name=first),
    )
    if not several and any(t.intermediate_values for t in copy.trials):
        add(
            "intermediate",
            "Intermediate values the pruner saw, per trial",
            lambda: plots.plot_intermediate_values(copy),
        )


def _importances(study: Any, target: Any) -> dict[str, float]:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return optuna.importance.get_param_importances(study, target=target)
        except (ValueError, RuntimeError):
            return {}


def _size(fig: Any, axes: Any) -> tuple[float, float]:
    """Room for several slice panels side by side; one panel keeps a laptop-width figure."""
    panels = axes.size if isinstance(axes, np.ndarray) else 1
    return (max(6.4, min(3.2 * panels, 12.0)), 4.2)


def _robustness(trials: pd.DataFrame, params: list[str]) -> pd.DataFrame | None:
    if "mean_eval_return" not in trials or trials["mean_eval_return"].isna().all():
        return None
    done = trials.dropna(subset=["mean_eval_return"])
    setting = (
        done[params].astype(str).agg(", ".join, axis=1) if params else done["number"].astype(str)
    )
    return pd.DataFrame(
        {
            "trial": done["number"],
            "setting": setting,
            "train_return": done["mean_final_return"],
            "heldout_return": done["mean_eval_return"],
        }
    ).sort_values("heldout_return", ascending=False)
