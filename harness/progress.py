"""What training prints while it runs: a line per log interval, ending with the time elapsed
and an ETA."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from harness.phases import phase_text


def run_line(row: Mapping[str, Any], total_iterations: int, total_env_steps: int) -> str:
    """A run's line per log interval."""
    return (
        f"iter {row['iteration']:>5}/{total_iterations} | {row['env_steps']:>11,} steps | "
        f"{row['interval_env_steps_per_second']:>11,.0f} steps/s | "
        f"return {row['episode_return']:8.1f} | length {row['episode_length']:7.1f}"
        + "".join(
            f" | {label} {row[key]:{spec}}" for key, label, spec in _PROGRESS_EXTRAS if key in row
        )
        + phase_text(row)
        + " | "
        + elapsed_and_eta(
            row["wall_time_s"],
            (total_env_steps - row["env_steps"]) / row["interval_env_steps_per_second"],
        )
    )


def elapsed_and_eta(elapsed_s: float, remaining_s: float) -> str:
    """ "1 min 05 s elapsed, eta 40 s" (eta "?" while no rate is known)."""
    eta = duration(remaining_s) if math.isfinite(remaining_s) else "?"
    return f"{duration(elapsed_s)} elapsed, eta {eta}"


def duration(seconds: float) -> str:
    """Seconds as people read them: 42 s, 3 min 05 s, 1 h 02 min."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


# Algorithm statistics shown on the progress line when the algorithm logs them.
_PROGRESS_EXTRAS = (
    ("eval_return", "greedy return", ".1f"),
    ("approx_kl", "kl", ".4f"),
    ("lr", "lr", ".1e"),
    ("critic_loss", "critic loss", ".3g"),
    ("alpha", "alpha", ".3g"),
)


def batch_line(
    rows: list[dict[str, float]], active: list[bool], total: int, total_steps: int
) -> str:
    """A batch's line per log interval: its members' returns, and steps/s in all."""
    returns = sorted(r["episode_return"] for r in rows if not math.isnan(r["episode_return"]))
    first = rows[0]
    spread = (
        f"return min {returns[0]:.1f} median {returns[len(returns) // 2]:.1f} max {returns[-1]:.1f}"
        if returns
        else "no episode finished yet"
    )
    return (
        f"iter {first['iteration']:>5}/{total} | {first['env_steps']:>11,} steps each | "
        f"{first['interval_env_steps_per_second'] * len(rows):>11,.0f} steps/s in all | "
        f"{sum(active)}/{len(active)} members training | {spread} | "
        + elapsed_and_eta(
            first["wall_time_s"],
            (total_steps - first["env_steps"]) / first["interval_env_steps_per_second"],
        )
    )
