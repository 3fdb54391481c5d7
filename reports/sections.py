"""The report's sections: each turns collected tables into text, tables and figures."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reports import figures, stats
from reports.collect import Collection


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[tuple[str, str, pd.DataFrame]] = field(default_factory=list)  # name, caption
    figures: list[tuple[str, str, Any]] = field(default_factory=list)  # name, caption, Figure
    summary: list[str] = field(default_factory=list)  # its answer, for the report's top
    # name, caption, run directory: a clip of that run's greedy policy, recorded when written
    animations: list[tuple[str, str, Path]] = field(default_factory=list)


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def build_sections(c: Collection, threshold: float | None, reps: int) -> list[Section]:
    """The summary first (what each section found), then the sections, then metadata and
    what happened to the inputs."""
    from reports.aggregate_section import aggregates
    from reports.study_section import study_section

    sections = []
    for maker in (throughput, learning, aggregates):
        section = maker(c, threshold, reps)
        if section is not None:
            sections.append(section)
    sections.extend(study_section(study) for study in c.studies)
    lines = [line for s in sections for line in s.summary]
    sections = [*([Section("Summary", lines)] if lines else []), *sections, metadata(c)]
    if c.duplicate_seeds:
        text = ["Runs that repeat another run's configuration and seed, left out of every table:"]
        sections.append(Section("Duplicate seeds", text + [f"- {d}" for d in c.duplicate_seeds]))
    if c.repaired:
        sections.append(Section("Repaired inputs", [f"- {r}" for r in c.repaired]))
    if c.problems:
        sections.append(Section("Skipped inputs", [f"- {p}" for p in c.problems]))
    return sections


def metadata(c: Collection) -> Section:
    runs, bench = c.runs, c.bench
    rows = []
    for frame, kind in ((runs, "runs"), (bench, "bench")):
        if frame.empty:
            continue
        cols = [k for k in ("device_name", "driver", "torch", "cuda", "git_commit") if k in frame]
        for values, part in frame.groupby(cols, dropna=False):
            rows.append({"source": kind, **dict(zip(cols, values, strict=True)), "rows": len(part)})
    section = Section("Metadata")
    section.text.append(
        f"Generated {datetime.now(UTC).isoformat(timespec='seconds')} by vecbench "
        f"{_version()} from {len(runs)} run(s), {len(c.studies)} study(ies) and "
        f"{len(bench)} benchmark figure(s)."
    )
    if rows:
        section.tables.append(
            ("hardware", "Hardware and software the results come from", pd.DataFrame(rows))
        )
    if not runs.empty:
        configs = (
            runs.groupby(["label", "config_key"])
            .agg(
                task=("task", "first"),
                seeds=("seed", lambda s: ", ".join(map(str, sorted(s)))),
                config_hashes=("config_hash", lambda s: ", ".join(sorted(set(map(str, s))))),
            )
            .reset_index()
        )
        section.tables.append(
            ("configurations", "Configurations, their seeds and config hashes", configs)
        )
    return section


# Spread of repeated benchmark measurements, where the bench rows have it.
SPREAD = ("steps_per_second_min", "steps_per_second_max", "repeats")


def throughput(c: Collection, threshold: float | None, reps: int) -> Section | None:
    parts = []
    if not c.bench.empty:
        cols = [
            "mode",
            "num_envs",
            "steps_per_second",
            *SPREAD,
            "gpu_memory_peak_mb",
            "device_name",
        ]
        varied = {
            k for k in ("task", "algo", "actor_hidden") if k in c.bench and c.bench[k].nunique() > 1
        }
        labels = [_bench_label(r, varied) for r in c.bench.to_dict("records")]
        bench = c.bench.assign(mode=labels)
        launch = bench[c.bench["mode"] == "launch"]
        bench = bench[c.bench["mode"] != "launch"]
        parts.append(bench[[k for k in cols if k in bench]])
    if not c.runs.empty:
        # Training throughput of runs, per study (or loose runs) that varied num_envs.
        runs = c.runs.assign(group=c.runs["study"].fillna("runs"))
        for group, part in runs.groupby("group"):
            if part["num_envs"].nunique() < 2:
                continue
            by_n = (
                part.groupby("num_envs")
                .agg(
                    steps_per_second=("env_steps_per_second", "mean"),
                    gpu_memory_peak_mb=("gpu_memory_peak_mb", "max"),
                    device_name=("device_name", "first"),
                )
                .reset_index()
            )
            parts.append(by_n.assign(mode=f"train ({group})"))
    if not parts:
        return None
    table = pd.concat(parts, ignore_index=True)
    table = table[table["num_envs"].notna()]
    table = (
        table.groupby(["mode", "num_envs"], sort=False)
        .agg(
            steps_per_second=("steps_per_second", "mean"),
            **{k: (k, "min" if k.endswith("min") else "max") for k in SPREAD if k in table},
            gpu_memory_peak_mb=("gpu_memory_peak_mb", "max"),
            device_name=("device_name", "first"),
        )
        .reset_index()
    )
    # each mode's rows together, by num_envs (parts may measure their sizes in any order)
    order = table.groupby("mode", sort=False).ngroup()
    table = table.assign(_order=order).sort_values(["_order", "num_envs"], kind="stable")
    table = table.drop(columns="_order").reset_index(drop=True)
    section = Section("Throughput scaling")
    counts = table["repeats"].dropna().unique() if "repeats" in table else []
    if len(counts) and max(counts) > 1:
        each = (
            f"the median of {int(counts[0])} measurements"
            if len(counts) == 1
            else "the median of its row's `repeats` measurements"
        )
        section.text.append(
            f"Each benchmark figure is {each} (vecbench bench --repeats); the bars and the "
            "_min/_max columns span the lowest to the highest. The knees use the medians."
        )
    section.text.append(
        "Env steps per second against the number of parallel envs: env stepping alone, env "
        "plus policy inference, and end-to-end training (benchmarks: over steady iterations "
        "after the set-up ones; runs: after a burn-in iteration). The dotted "
        "lines continue each curve's first point with ideal linear scaling."
    )
    section.tables.append(("throughput", "Steps per second by mode and num_envs", table))
    peak = table.loc[table["steps_per_second"].idxmax()]
    section.summary.append(
        f"Peak throughput: {_fmt(peak['steps_per_second'])} env steps/s ({peak['mode']}) at "
        f"{int(peak['num_envs'])} envs on {peak['device_name']}."
    )
    knees = saturation_knees(table)
    if not knees.empty:
        section.text.append(
            "Knee: the first num_envs after which four times the envs bring less than twice "
            "the throughput (scaling exponent below 0.5), per mode."
        )
        section.tables.append(("throughput_knee", "Where scaling flattens", knees))
        found = knees.dropna(subset=["knee_num_envs"])
        section.summary.append(
            "Scaling flattens (knee) at "
            + "; ".join(f"{int(r.knee_num_envs)} envs for {r.mode}" for r in found.itertuples())
            + "."
            if len(found)
            else "Scaling does not flatten within the measured num_envs."
        )
    if not c.bench.empty and not launch.empty:
        keep = ["mode", "num_envs", "threshold", "launch_s", "launch_s_min", "launch_s_max",
                "train_s", "env_steps", "device_name"]  # fmt: skip
        keep = [k for k in keep if k in launch]
        section.text.append(
            "Launch: a fresh `vecbench train` process timed from its start to its exit at the "
            "first logged mean return >= threshold (imports, CUDA start-up and training); "
            "with repeats, the median launch and its range (rows without a range give the "
            "launch of the repeat with the median training rate)."
        )
        section.tables.append(("launch", "Launch to threshold", launch[keep]))
    section.figures.append(
        (
            "throughput_scaling",
            "Throughput against num_envs (log-log)",
            figures.throughput_scaling(table),
        )
    )
    return section


def _bench_label(row: dict[str, Any], varied: set[str] | None = None) -> str:
    """The mode, with how it ran when not plain eager float32 (graph, fused env kernel,
    compile, PPO's fused kernels, bf16), and the task, algorithm and policy size when the
    benchmark covers several. Beside a fused env, compile is the policy's or the
    algorithm's (none when PPO's kernels are fused)."""
    extras = []
    if row.get("cuda_graph") is True:
        extras.append("update graph" if row.get("graph_scope") == "update" else "graph")
    stepping = row.get("env_stepping")  # absent (or NaN) in rows older than fused kernels
    stepping = stepping if isinstance(stepping, str) else None
    algo = row.get("algo_stepping")  # absent (or NaN) in rows older than fused PPO
    if stepping == "fused":
        extras.append("fused")
        if row.get("compile") is True and row["mode"] != "env" and algo != "fused":
            extras.append("compile")
    elif stepping == "compiled" or (stepping is None and row.get("compile") is True):
        extras.append("compile")
    if algo == "fused":
        extras.append("fused ppo")
    if row.get("policy_precision") == "bfloat16" and row["mode"] != "env":
        extras.append("bf16")
    varied = varied or set()
    hidden = row.get("actor_hidden")  # "" in off-policy rows older than their `hidden`
    if "actor_hidden" in varied and row["mode"] != "env" and isinstance(hidden, str) and hidden:
        extras.append(f"mlp {hidden}")
    label = f"{row['mode']} ({'+'.join(extras)})" if extras else str(row["mode"])
    if "algo" in varied and row["mode"] != "env" and isinstance(row.get("algo"), str):
        label = f"{row['algo']} {label}"
    return f"{row['task']} {label}" if "task" in varied else label


def saturation_knees(table: pd.DataFrame) -> pd.DataFrame:
    """Per mode: the scaling exponent between neighbouring num_envs and the knee."""
    rows = []
    for mode, part in table.groupby("mode", sort=False):
        part = part.sort_values("num_envs")
        n = part["num_envs"].to_numpy(dtype=float)
        rate = part["steps_per_second"].to_numpy(dtype=float)
        if len(n) < 2:
            continue
        exponent = np.log(rate[1:] / rate[:-1]) / np.log(n[1:] / n[:-1])
        flat = np.flatnonzero(exponent < 0.5)
        rows.append(
            {
                "mode": mode,
                "knee_num_envs": int(n[flat[0]]) if flat.size else None,
                "peak_steps_per_second": float(np.nanmax(rate)),
                "exponents": " ".join(f"{e:.2f}" for e in exponent),
            }
        )
    out = pd.DataFrame(rows)
    if not out.empty:
        out["knee_num_envs"] = out["knee_num_envs"].astype("Int64")
    return out


def learning(c: Collection, threshold: float | None, reps: int) -> Section | None:
    if c.runs.empty or c.curves.empty:
        return None
    groups = _top_groups(c.runs, 8)
    section = Section("Learning")
    section.text.append(
        "Mean episode return of each configuration across its seeds, with a 95 % confidence "
        "band (percentile bootstrap over seeds)"
        + (
            f"; the best {len(groups)} configurations by final return are shown."
            if c.runs["label"].nunique() > 8
            else "."
        )
        + stats.coverage_note(
            int(c.runs[c.runs["label"].isin(groups)].groupby("label").size().min())
        )
    )
    section.figures.append(
        (
            "return_vs_steps",
            "Return against env steps",
            figures.learning_curves(c.curves, "env_steps", groups),
        )
    )
    section.figures.append(
        (
            "return_vs_time",
            "Return against wall-clock time",
            figures.learning_curves(c.curves, "wall_time_s", groups),
        )
    )
    finals = (
        c.runs.groupby("label")
        .agg(
            task=("task", "first"),
            seeds=("seed", "count"),
            final_return_mean=("final_return", "mean"),
            final_return_std=("final_return", "std"),
            best_return_mean=("best_return", "mean"),
            env_steps_per_second=("env_steps_per_second", "mean"),
        )
        .reset_index()
        .sort_values("final_return_mean", ascending=False)
    )
    section.tables.append(("final_returns", "Final and best mean return per configuration", finals))
    for i, label in enumerate(groups):  # the configurations of the curves, best first
        runs = c.runs[c.runs["label"] == label].dropna(subset=["final_return"])
        if runs.empty:
            continue
        best = runs.loc[runs["final_return"].idxmax()]
        section.animations.append(
            (
                f"policy_{i}",
                f"{label}: the greedy policy of its best seed (seed {int(best['seed'])}, "
                f"final return {best['final_return']:.4g})",
                Path(best["run_id"]),
            )
        )
    phases = _phase_table(c.curves)
    if phases is not None:
        section.tables.append(
            (
                "iteration_time",
                "Where an iteration's time goes: collection (env steps and policy calls) and "
                "update, mean ms per iteration (eager runs; a CUDA graph replays both at once)",
                phases,
            )
        )
    top = finals.iloc[0]
    section.summary.append(
        f"Highest final return: {top['label']}, mean {_fmt(top['final_return_mean'])} over "
        f"{int(top['seeds'])} seed(s)."
    )
    if threshold is not None:
        reached = _time_to_threshold(c, threshold)
        section.tables.append(
            (
                "time_to_threshold",
                f"Env steps and seconds until the mean return first reached "
                f"{threshold:g} (median over the seeds that reached it)",
                reached,
            )
        )
        first = reached.dropna(subset=["wall_time_s"])
        section.summary.append(
            f"Fastest to a return of {threshold:g}: {first.iloc[0]['label']}, median "
            f"{_fmt(first.iloc[0]['wall_time_s'])} s and {_fmt(first.iloc[0]['env_steps'])} env "
            f"steps ({first.iloc[0]['seeds_reaching']} seeds reached it)."
            if len(first)
            else f"No configuration reached a return of {threshold:g}."
        )
    return section


def _phase_table(curves: pd.DataFrame) -> pd.DataFrame | None:
    if "collection_s" not in curves or curves["collection_s"].isna().all():
        return None
    timed = curves.dropna(subset=["collection_s", "update_s"])
    table = (
        timed.groupby("label")
        .agg(collection_ms=("collection_s", "mean"), update_ms=("update_s", "mean"))
        .mul(1e3)
        .reset_index()
    )
    table["collection_share"] = table["collection_ms"] / (
        table["collection_ms"] + table["update_ms"]
    )
    return table


def _top_groups(runs: pd.DataFrame, n: int) -> list[str]:
    order = runs.groupby("label")["final_return"].mean().sort_values(ascending=False)
    return list(order.index[:n])


def _time_to_threshold(c: Collection, threshold: float) -> pd.DataFrame:
    rows = []
    for label, part in c.curves.groupby("label"):
        steps, seconds, runs = [], [], 0
        for _, run in part.groupby("run_id"):
            runs += 1
            hit = run[run["episode_return"] >= threshold]
            if len(hit):
                steps.append(hit["env_steps"].iloc[0])
                seconds.append(hit["wall_time_s"].iloc[0])
        rows.append(
            {
                "label": label,
                "seeds_reaching": f"{len(steps)}/{runs}",
                "env_steps": float(np.median(steps)) if steps else math.nan,
                "wall_time_s": float(np.median(seconds)) if seconds else math.nan,
            }
        )
    return pd.DataFrame(rows).sort_values("wall_time_s")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vecbench")
    except PackageNotFoundError:
        return "unknown"
