"""StepInfo: an info dict whose values may be computed on first use."""

from __future__ import annotations

import pytest
import torch

from envs.base import StepInfo


def test_a_lazy_value_is_computed_once_on_first_use() -> None:
    calls = []

    def final_obs() -> torch.Tensor:
        calls.append(1)
        return torch.arange(3.0)

    info = StepInfo(final_obs=final_obs)
    assert "final_obs" in info and len(info) == 1 and calls == []
    assert torch.equal(info["final_obs"], torch.arange(3.0))
    assert info["final_obs"] is info.get("final_obs") and calls == [1]
    assert info.get("missing", 7) == 7 and "missing" not in info
    with pytest.raises(KeyError, match="missing"):
        info["missing"]
    info["final_metrics"] = torch.ones(3)
    assert sorted(info) == ["final_metrics", "final_obs"] and len(info) == 2


def test_iterating_computes_every_lazy_value() -> None:
    info = StepInfo(a=lambda: torch.zeros(1), b=lambda: torch.ones(1))
    assert {k: float(v) for k, v in info.items()} == {"a": 0.0, "b": 1.0}
    assert dict(info) == {"a": info["a"], "b": info["b"]}
