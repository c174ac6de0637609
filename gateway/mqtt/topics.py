"""Topic and payload conventions: pure functions, one place."""

from __future__ import annotations

import json

from gateway.models import Reading


def reading_topic(prefix: str, reading: Reading) -> str:
    return f"{prefix}/{reading.device}/{reading.sensor}"


def status_topic(prefix: str, gateway_id: str) -> str:
    return f"{prefix}/{gateway_id}/status"


def reading_payload(reading: Reading) -> bytes:
    """`{"value": 21.5, "unit": "°C", "ts": 1764074400.123}`; ts in epoch seconds (ms precision),
    the moment the frame was read, so a reading published late still says when it was taken."""
    return json.dumps(
        {"value": reading.value, "unit": reading.unit, "ts": round(reading.ts, 3)},
        ensure_ascii=False,
    ).encode()
