"""A study worker process: ``python -m studies.worker_main STUDY.yaml [--storage URL]``; the
URL may come in the environment instead (VECBENCH_STORAGE_URL), out of sight of `ps`."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from harness.errors import VecbenchError
from studies.engine import Worker
from studies.spec import load_study, with_batch_trials

STORAGE_ENV = "VECBENCH_STORAGE_URL"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("study", help="study YAML file")
    parser.add_argument("--storage", default=os.environ.get(STORAGE_ENV))
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--batch-trials", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format=f"[worker {args.index}] %(message)s", stream=sys.stderr
    )
    try:
        loaded = with_batch_trials(load_study(args.study), args.batch_trials)
        Worker(loaded, args.storage, args.index).run()
    except VecbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
