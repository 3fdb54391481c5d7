"""TensorBoard event files of a run (``tracking.tensorboard: true``), beside metrics.csv.

Every metrics row becomes scalars (tag: the column, step: env steps) in
``<run dir>/tensorboard/``; the config is the run's hyperparameters (TensorBoard's HParams
tab, with the final return and throughput as its metrics) and a text. A resumed run purges
what was written after its checkpoint, so every step holds one value, as in metrics.csv.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from harness.config import RunConfig, to_dict
from harness.errors import ConfigError

DIRECTORY = "tensorboard"
# summary.json entries shown as the HParams tab's metrics.
HPARAM_METRICS = ("final_return", "best_return", "env_steps_per_second", "wall_time_s")


def summary_writer() -> type:
    """torch's SummaryWriter, or a ConfigError that says what to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ConfigError(
            "tracking.tensorboard needs the tensorboard package: pip install tensorboard "
            f"(or pip install -e '.[tensorboard]') ({err})"
        ) from None
    return SummaryWriter


class TensorBoardWriter:
    def __init__(self, config: RunConfig, run_dir: Path, start_step: int) -> None:
        self.config = config
        self.writer = summary_writer()(
            log_dir=str(Path(run_dir) / DIRECTORY),
            purge_step=start_step if start_step > 0 else None,  # resumed: drop the repeats
        )
        if start_step == 0:
            text = yaml.safe_dump(to_dict(config), sort_keys=False)
            self.writer.add_text("config", "```yaml\n" + text + "```", 0)

    def log(self, row: Mapping[str, float], step: int) -> None:
        for key, value in row.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()  # a crash keeps every logged row, as metrics.csv does

    def finish(self, summary: Mapping[str, Any]) -> None:
        metrics = {
            f"hparams/{key}": float(summary[key])
            for key in HPARAM_METRICS
            if isinstance(summary.get(key), int | float) and math.isfinite(summary[key])
        }
        # Into this run's own directory: TensorBoard would otherwise start another run.
        self.writer.add_hparams(hparams(self.config), metrics, run_name=".")
        self.writer.close()


def hparams(config: RunConfig) -> dict[str, bool | int | float | str]:
    """The config flattened to ``section.key`` entries of the types HParams takes."""
    out: dict[str, bool | int | float | str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        elif isinstance(value, bool | int | float | str):
            out[prefix] = value
        else:  # None, lists: as text
            out[prefix] = "null" if value is None else str(value)

    walk("", to_dict(config))
    return out
