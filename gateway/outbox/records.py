"""What the outbox holds: one record per accepted message, opaque to the outbox but for its id,
device, seq, time and size. A record keeps what its payload is rendered from at take time
(`gateway.mqtt.topics.render`): the sensor and the fields, not the payload."""

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
    sensor: str | None  # the reading's sensor; None: a `payload: device` object
    fields: bytes  # the payload's JSON members but `seq` (gateway.mqtt.topics)
    qos: int
    ts: float  # when the reading was taken (epoch seconds)
    size: int  # topic + fields + RECORD_OVERHEAD


def ranges(ids: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted ids -> inclusive (first, last) runs, so contiguous ids delete in one statement."""
    runs: list[tuple[int, int]] = []
    for i in sorted(ids):
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs
