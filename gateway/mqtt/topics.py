"""Topic and payload conventions: pure functions, one place."""

from __future__ import annotations

import json

from gateway.models import Reading


def reading_topic(prefix: str, reading: Reading) -> str:
    return f"{prefix}/{reading.device}/{reading.sensor}"


def status_topic(prefix: str, gateway_id: str) -> str:
    return f"{prefix}/{gateway_id}/status"


def availability_topic(prefix: str, device: str) -> str:
    return f"{prefix}/{device}/availability"


def reading_payload(reading: Reading, seq: int | None = None) -> bytes:
    """`{"value": 21.5, "unit": "°C", "ts": 1764074400.123, "seq": 42}`.

    `ts` is in epoch seconds (ms precision), the moment the frame was read, so a reading
    replayed after an outage still says when it was taken. `seq` counts per device and survives
    restarts: at-least-once delivery can repeat a reading, and consumers drop repeats by it."""
    body: dict[str, object] = {
        "value": reading.value,
        "unit": reading.unit,
        "ts": round(reading.ts, 3),
    }
    if seq is not None:
        body["seq"] = seq
    return json.dumps(body, ensure_ascii=False).encode()
