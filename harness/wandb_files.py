"""Reading W&B's offline run files (``run-<id>.wandb``), which wandb no longer ships a
reader for: a resumed run checks what the killed segment's file really holds, and the
tests check the logged config and metrics themselves.

The file is a LevelDB-style log (a 7-byte ``:W&B`` header, 32 KiB blocks of chunks with a
7-byte chunk header) of protobuf ``Record`` messages.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2  # imported here: wandb is slow to import

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file")
    records, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:
            pos += left_in_block  # zero padding at a block's end
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if pos + HEADER + length > len(data):
            break  # cut off mid-write (the writing process was killed)
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            continue
        if kind == FULL:
            pending = chunk
        elif kind == FIRST:
            pending = chunk
            continue
        elif kind == MIDDLE:
            pending += chunk
            continue
        else:
            pending += chunk
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        records.append(record)
        pending = b""
    return records


def run_file(run_dir: Path) -> Path:
    files = sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"{run_dir}: no offline W&B run file")
    return files[-1]


def stored_last_step(run_dir: Path, run_id: str) -> int:
    """The last history step in the run's offline files under ``run_dir``/wandb (-1: none).
    A segment killed before W&B's writer flushed can hold far less than it was sent."""
    from google.protobuf.message import DecodeError

    last = -1
    for path in sorted(Path(run_dir).glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb")):
        try:
            records = read_records(path)
        except (OSError, ValueError, DecodeError):
            continue
        for record in records:
            if record.WhichOneof("record_type") == "history":
                last = max(last, record.history.step.num)
    return last
