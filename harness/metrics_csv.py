"""Reading metrics.csv back, checked: a crash can cut its last row short, and a file copied,
synced or edited by hand can be damaged anywhere; neither may pass for data.

A last line without its newline is a row cut off mid-write: it is dropped and the drop is
reported (a repair). Any other damage (a row with the wrong number of cells, a cell that
is not a number) raises `RunDirError` naming the line and column.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import RunDirError, shown


@dataclass(frozen=True)
class MetricRows:
    columns: list[str]
    rows: list[list[str]]  # cells as written; "" where a column had no value yet
    text: str  # the checked lines, header first
    repaired: str | None  # what was dropped to read the file, None when it was whole

    def frame(self) -> Any:
        """The rows as a pandas DataFrame, typed as pandas reads a CSV file."""
        import pandas as pd

        return pd.read_csv(io.StringIO(self.text))


def read_metric_rows(path: Path) -> MetricRows:
    """metrics.csv's header and rows; see the module docstring for what counts as damage."""
    try:
        with path.open(encoding="utf-8", newline="") as f:  # keep "\r\n" to see a cut line
            text = f.read()
    except UnicodeDecodeError as err:
        raise RunDirError(f"{path}: damaged, not UTF-8 text (offset {err.start})") from None
    except FileNotFoundError:
        raise RunDirError(f"{path}: no metrics yet") from None
    lines = text.splitlines(keepends=True)
    repaired = None
    if lines and not lines[-1].endswith("\n"):
        repaired = f"dropped line {len(lines)} of metrics.csv, a row cut off mid-write"
        lines.pop()
    parsed = list(csv.reader(lines))
    if not parsed or not any(parsed[0]):
        raise RunDirError(f"{path}: damaged, no header row")
    columns, rows = parsed[0], parsed[1:]
    for number, row in enumerate(rows, start=2):
        if len(row) != len(columns):
            raise RunDirError(
                f"{path}: damaged at line {number}: {len(row)} cells for {len(columns)} columns"
            )
        for column, cell in zip(columns, row, strict=True):
            try:
                _number(cell)
            except ValueError:
                raise RunDirError(
                    f"{path}: damaged at line {number}: {column} is {shown(cell)}, not a number"
                ) from None
    return MetricRows(columns, rows, "".join(lines), repaired)


def _number(cell: str) -> float | int:
    if cell == "":
        return math.nan
    try:
        return int(cell)
    except ValueError:
        return float(cell)  # also "nan" and "inf", which the writer writes for them
