"""vecbench bench's repeated measurements."""

from __future__ import annotations

import pytest

import harness.bench as bench
from harness.config import load_config
from harness.errors import ConfigError


def test_a_figure_is_the_median_of_its_repeats_with_min_and_max(monkeypatch) -> None:
    measured = iter([3.0e6, 1.0e6, 2.0e6, 9.0e6, 7.0e6, 8.0e6, 5.0e6, 6.0e6])
    monkeypatch.setattr(bench, "env_steps_per_second", lambda cfg, steps: next(measured))
    config = load_config(overrides=["tracking.wandb=disabled", "experiment.device=cpu"])
    rows = bench.run_bench(config, [16, 64], ("env",), steps=5, repeats=3)
    assert [
        (r["steps_per_second"], r["steps_per_second_min"], r["steps_per_second_max"]) for r in rows
    ] == [
        (2.0e6, 1.0e6, 3.0e6),
        (8.0e6, 7.0e6, 9.0e6),
    ]
    assert [r["repeats"] for r in rows] == [3, 3]
    assert "steps/s (median of 3, min-max)" in bench.format_table(rows)
    even = bench.run_bench(config, [16], ("env",), steps=5, repeats=2)  # 5e6 and 6e6
    assert even[0]["steps_per_second"] == pytest.approx(5.5e6)


def test_real_repeats_bracket_their_median_and_zero_is_refused() -> None:
    config = load_config(overrides=["tracking.wandb=disabled", "experiment.device=cpu"])
    (row,) = bench.run_bench(config, [16], ("env",), steps=5, repeats=3)
    assert row["steps_per_second_min"] <= row["steps_per_second"] <= row["steps_per_second_max"]
    with pytest.raises(ConfigError, match="--repeats must be > 0"):
        bench.run_bench(config, [16], ("env",), steps=5, repeats=0)
