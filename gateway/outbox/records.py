"""What the outbox holds: one record per accepted reading, opaque to the outbox but for its id,
device, time and size."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

RECORD_OVERHEAD = 48  # bytes per row beyond topic and payload, for the max_bytes accounting


@dataclass(slots=True)
class Record:
    id: int  # the outbox's order: ascending in acceptance order, never reused
    device: str
    seq: int  # the device's sequence number, in the payload too
    topic: str
    payload: bytes
    qos: int
    ts: float  # when the reading was taken (epoch seconds)
    size: int  # topic + payload + RECORD_OVERHEAD


def ranges(ids: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted ids -> inclusive (first, last) runs, so contiguous ids delete in one statement."""
    runs: list[tuple[int, int]] = []
    for i in sorted(ids):
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs
