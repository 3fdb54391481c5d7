"""The report's figures (matplotlib, no display needed). Each function returns a Figure."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from reports.stats import Interval, mean_band  # noqa: E402

MODE_NAMES = {"env": "env only", "inference": "env + policy", "train": "training"}


def throughput_scaling(table: pd.DataFrame) -> Figure:
    """steps/s against num_envs, log-log, one line per mode, with ideal linear scaling."""
    fig, ax = plt.subplots(figsize=(9.6, 4.8))
    ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)  # a colour each for up to 20 modes
    for mode, part in table.groupby("mode", sort=False):
        part = part.sort_values("num_envs")
        (line,) = ax.plot(
            part["num_envs"], part["steps_per_second"], "o-", label=MODE_NAMES.get(mode, mode)
        )
        if "steps_per_second_min" in part and part["steps_per_second_min"].notna().any():
            # min-max of repeated measurements (vecbench bench --repeats)
            spread = [
                part["steps_per_second"] - part["steps_per_second_min"],
                part["steps_per_second_max"] - part["steps_per_second"],
            ]
            ax.errorbar(
                part["num_envs"],
                part["steps_per_second"],
                yerr=spread,
                fmt="none",
                ecolor=line.get_color(),
                capsize=3,
            )
        n0, r0 = part["num_envs"].iloc[0], part["steps_per_second"].iloc[0]
        ax.plot(part["num_envs"], r0 * part["num_envs"] / n0, ":", color="grey", linewidth=1)
    ax.plot([], [], ":", color="grey", label="ideal linear scaling")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("parallel envs (num_envs)")
    ax.set_ylabel("env steps per second")
    ax.grid(True, which="both", alpha=0.3)
    # Beside the axes: a dozen modes' legend inside them hides the curves.
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def learning_curves(curves: pd.DataFrame, x: str, groups: list[str]) -> Figure:
    """Mean episode return against ``x`` (env_steps or wall_time_s) per configuration, with
    a 95 % confidence band over seeds."""
    fig, ax = plt.subplots(figsize=(9.0, 4.2))
    for label in groups:
        part = curves[curves["label"] == label]
        grid, runs = _resample(part, x)
        centre, low, high = mean_band(runs)
        seeds = runs.shape[0]
        (line,) = ax.plot(grid, centre, label=f"{label} ({seeds} seed{'s' * (seeds > 1)})")
        ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("env steps" if x == "env_steps" else "wall-clock time [s]")
    ax.set_ylabel("mean episode return")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def _resample(part: pd.DataFrame, x: str, points: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Curves of several runs on one common x grid [S] -> [R, S] (NaN past a run's end)."""
    top = part.groupby("run_id")[x].max().min()
    grid = np.linspace(0.0, float(top), points)
    runs = []
    for _, run in part.groupby("run_id"):
        run = run.sort_values(x).dropna(subset=["episode_return"])
        runs.append(
            np.interp(grid, run[x], run["episode_return"], left=np.nan, right=np.nan)
            if len(run)
            else np.full(points, np.nan)
        )
    return grid, np.array(runs)


def aggregate_intervals(table: dict[str, dict[str, Interval]]) -> Figure:
    """Point estimates and 95 % intervals per configuration (rows) and statistic (panels)."""
    labels = list(table)
    stats = list(next(iter(table.values())))
    fig, axes = plt.subplots(
        1,
        len(stats),
        figsize=(3.0 * len(stats), 0.5 + 0.45 * len(labels)),
        sharey=True,
        squeeze=False,
    )
    for ax, stat in zip(axes[0], stats, strict=True):
        for y, label in enumerate(labels):
            iv = table[label][stat]
            ax.plot([iv.low, iv.high], [y, y], linewidth=6, alpha=0.5)
            ax.plot([iv.estimate], [y], "k|", markersize=12)
        ax.set_title(stat.replace("_", " "))
        ax.set_yticks(range(len(labels)), labels)
        ax.grid(True, axis="x", alpha=0.3)
    axes[0][0].set_ylabel("configuration")
    fig.supxlabel("normalised score (1 = maximum return)", fontsize="small")
    fig.tight_layout()
    return fig


def performance_profiles(taus: np.ndarray, profiles: dict[str, np.ndarray]) -> Figure:
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, profile in profiles.items():
        ax.plot(taus, profile, label=label)
    ax.set_xlabel(r"normalised score $\tau$")
    ax.set_ylabel(r"fraction of runs with score > $\tau$")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def robustness(table: pd.DataFrame) -> Figure:
    """Return in the training range vs on the held-out range, per trial."""
    fig, ax = plt.subplots(figsize=(6.4, 0.8 + 0.4 * len(table)))
    y = np.arange(len(table))
    ax.barh(y - 0.2, table["train_return"], height=0.4, label="training range (final return)")
    ax.barh(y + 0.2, table["heldout_return"], height=0.4, label="held-out range (eval return)")
    ax.set_yticks(y, table["setting"])
    ax.set_xlabel("mean episode return")
    ax.legend(fontsize="small", loc="lower right")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def close(fig: Any) -> None:
    plt.close(fig)
