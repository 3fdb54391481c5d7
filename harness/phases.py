"""Where an eager iteration's time goes: collection (env steps and policy calls) against the
update, as rsl_rl and rl_games report it.

On CUDA the marks are events on the stream, read once per log interval after the row's one
sync, so timing adds no host sync to the hot loop; on CPU they are clock readings. A
captured iteration records its marks from inside the CUDA graph (external events, which
every replay records again), so a graphed run's row has the split of the interval's last
iteration.
"""

from __future__ import annotations

import math
import time

import torch

PHASES = ("collection", "update")


class PhaseTimer:
    """Marks ``start``, ``collected`` and ``updated`` each iteration; `read` gives the mean
    seconds per iteration of each phase since the last read."""

    def __init__(self, device: torch.device, enabled: bool = True) -> None:
        self.cuda = device.type == "cuda"
        self.enabled = enabled
        self.marks: list[list[object]] = []  # per iteration: start, collected, updated
        self.captured: list[torch.cuda.Event] = []  # the marks inside a CUDA graph
        self.replays = 0  # replays of that graph counted by the last read

    def mark(self, index: int) -> None:
        if not self.enabled:
            return
        if self.cuda and torch.cuda.is_current_stream_capturing():
            if index == 0:
                self.captured = []
            try:
                event = torch.cuda.Event(enable_timing=True, external=True)
            except TypeError:  # a torch without external events: graphed rows have no split
                return
            event.record()
            self.captured.append(event)
            return
        if self.cuda:
            point: object = torch.cuda.Event(enable_timing=True)
            point.record()  # type: ignore[attr-defined]
        else:
            point = time.perf_counter()
        if index == 0:
            self.marks.append([point])
        else:
            self.marks[-1].append(point)

    def read(self, replays: int = 0) -> dict[str, float]:
        """{collection_s, update_s}: mean seconds per iteration over the iterations marked
        since the last read; or, once ``replays`` (a count of graph replays) has grown since
        the last read, those of the last replay. Empty if none. On CUDA, call after the GPU
        work is done."""
        done = [m for m in self.marks if len(m) == 3]
        self.marks = []
        if replays > self.replays and len(self.captured) == 3:
            self.replays = replays
            done = [list(self.captured)]
        if not done:
            return {}
        sums = [0.0, 0.0]
        for marks in done:
            for phase in range(2):
                sums[phase] += self._seconds(marks[phase], marks[phase + 1])
        return {f"{name}_s": total / len(done) for name, total in zip(PHASES, sums, strict=True)}

    def _seconds(self, begin: object, end: object) -> float:
        if self.cuda:
            return begin.elapsed_time(end) / 1000.0  # type: ignore[attr-defined]
        return float(end) - float(begin)  # type: ignore[arg-type]


def phase_text(row: dict[str, float]) -> str:
    """ " | collection 12.3 ms + update 4.5 ms" when the row has the split."""
    if not all(math.isfinite(row.get(f"{p}_s", math.nan)) for p in PHASES):
        return ""
    return (
        f" | collection {row['collection_s'] * 1e3:.3g} ms + update {row['update_s'] * 1e3:.3g} ms"
    )
