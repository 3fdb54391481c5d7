"""A trial in a process of its own (``trial_isolation: process``): a crash or a hung GPU fails
only this trial.

Reads one `TrialJob` line on stdin, trains it with `studies.trial.run_job`, and writes each
event as one line to stdout (`studies.messages`); everything else it prints goes to stderr.
SIGTERM (pruning) stops training cleanly.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any, TextIO

from studies.messages import TrialEvent, TrialJob, decode, encode
from studies.trial import run_job


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _emitter(out: TextIO):
    def emit(event: TrialEvent) -> None:
        out.write(encode(event) + "\n")
        out.flush()

    return emit


def main() -> int:
    signal.signal(signal.SIGTERM, _stop)
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr  # nothing but events on the event stream
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    job = decode(sys.stdin.read())
    assert isinstance(job, TrialJob)
    try:
        run_job(job, _emitter(out))
    except KeyboardInterrupt:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
