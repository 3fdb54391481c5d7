"""How the standalone benchmarks (study, multi-GPU) leave their figures: JSON and CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_result(out: Path, stem: str, result: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """OUT/STEM.json (``result``, the machine and the rows) and OUT/STEM.csv (the rows);
    returns the rows as a printable table."""
    import pandas as pd

    from harness.files import strict_json

    (out / f"{stem}.json").write_text(strict_json(result))
    table = pd.DataFrame(rows)
    table.to_csv(out / f"{stem}.csv", index=False)
    return table.to_string(index=False)
