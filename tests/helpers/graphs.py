"""Test-only switches of what a CUDA graph captures."""

from __future__ import annotations

import pytest


def graph_updates_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Graphed runs take the path of an env that steps outside torch (MJX): collection
    eager, the update alone replayed from a CUDA graph (harness.graphs.Updates)."""
    from harness import runner

    scope = runner._graph_scope
    monkeypatch.setattr(runner, "_graph_scope", lambda *args: "update" if scope(*args) else None)
