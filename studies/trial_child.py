"""One trial in its own process (clean CUDA context; a crash fails only this trial).

Reads a JSON job on stdin, trains each seed with `harness.runner.train`, and writes one JSON
event per line to stdout: ``log`` for every metrics row, ``seed`` when a seed finishes.
Everything else it prints goes to stderr. SIGTERM (pruning) stops training cleanly.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

from harness.config import config_from_dict
from harness.evaluate import evaluate
from harness.runner import train


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _emit(out: TextIO, event: dict[str, Any]) -> None:
    out.write(json.dumps(event, default=_number) + "\n")
    out.flush()


def _number(value: Any) -> Any:
    return float(value)


def seed_metrics(
    result: Any, rows: list[dict[str, Any]], threshold: float | None
) -> dict[str, float]:
    """Every objective metric for one finished seed."""
    reached = [r for r in rows if threshold is not None and r["episode_return"] >= threshold]
    return {
        "final_return": result.final_return,
        "best_return": result.best_return,
        "env_steps_per_second": result.env_steps_per_second,
        "wall_time_s": result.wall_time_s,
        "steps_to_threshold": float(reached[0]["env_steps"]) if reached else math.inf,
        "time_to_threshold": float(reached[0]["wall_time_s"]) if reached else math.inf,
    }


def run_job(job: dict[str, Any], out: TextIO) -> None:
    for index, (seed, config_data) in enumerate(zip(job["seeds"], job["configs"], strict=True)):
        config = config_from_dict(config_data, f"trial {job['trial']} seed {seed}")
        rows: list[dict[str, Any]] = []

        def on_log(row: Any, index: int = index, rows: list = rows) -> None:
            rows.append(dict(row))
            _emit(out, {"event": "log", "seed_index": index, "row": dict(row)})

        run_dir = Path(job["trial_dir"]) / f"seed-{seed}"
        result = train(config, run_dir=run_dir, on_log=on_log, context=job["context"])
        metrics = seed_metrics(result, rows, job.get("threshold"))
        if job.get("evaluation"):
            ev = job["evaluation"]
            metrics["eval_return"] = evaluate(
                run_dir, episodes=ev["episodes"], overrides=list(ev["set"])
            ).mean_return
        _emit(
            out,
            {
                "event": "seed",
                "seed_index": index,
                "seed": seed,
                "run_dir": str(run_dir),
                "metrics": metrics,
            },
        )


def main() -> int:
    signal.signal(signal.SIGTERM, _stop)
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr  # nothing but events on the event stream
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    job = json.loads(sys.stdin.read())
    try:
        run_job(job, out)
    except KeyboardInterrupt:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
