"""Topic and payload conventions, pure functions in one place: the encode stage.

A reading's message is made in two steps, both here: at put time its fields (`reading_fields`,
`device_fields`: the JSON members of its payload but `seq`), which the outbox stores with the
sensor and the seq; at take time its payload (`render`, or `render_batch` for a batched
device's array), so a resend is byte for byte the same message."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Protocol

from gateway.models import Reading, Value


def reading_topic(prefix: str, reading: Reading) -> str:
    return f"{prefix}/{reading.device}/{reading.sensor}"


def status_topic(prefix: str, gateway_id: str) -> str:
    return f"{prefix}/{gateway_id}/status"


def availability_topic(prefix: str, device: str) -> str:
    return f"{prefix}/{device}/availability"


def device_topic(prefix: str, device: str) -> str:
    """Where a device with `payload: device` publishes its objects."""
    return f"{prefix}/{device}"


def batch_topic(prefix: str, device: str) -> str:
    return f"{prefix}/{device}/batch"


class Message(Protocol):
    """What a message is rendered from: an outbox record (its sensor, None for a device-mode
    object; its fields, the JSON members of its payload but `seq`; and its seq)."""

    @property
    def sensor(self) -> str | None: ...
    @property
    def fields(self) -> bytes: ...
    @property
    def seq(self) -> int: ...


def render(record: Message) -> bytes:
    """A record's payload at take time: its fields and its seq (a resend renders the same
    bytes). `{"value": 21.5, "unit": "°C", "ts": 1764074400.123, "seq": 42}`."""
    return b'{%s, "seq": %d}' % (record.fields, record.seq)


def render_batch(records: Sequence[Message]) -> bytes:
    """`[{"sensor": "t", "value": 21.5, "unit": "°C", "ts": ..., "seq": 7}, ...]`: each element
    is the payload the record would have had alone, with its sensor first (a device-mode
    object has no sensor: it is its own payload)."""
    items = []
    for record in records:
        sensor = record.sensor
        if sensor is None:
            items.append(b'{%s, "seq": %d}' % (record.fields, record.seq))
        else:
            name = _SENSORS.get(sensor)
            if name is None:
                name = json.dumps(sensor, ensure_ascii=False).encode()
                if len(_SENSORS) < 10_000:  # sensors come from config and decoders: bounded
                    _SENSORS[sensor] = name
            items.append(b'{"sensor": %s, %s, "seq": %d}' % (name, record.fields, record.seq))
    return b"[" + b", ".join(items) + b"]"


_SENSORS: dict[str, bytes] = {}

#: A device-mode object: the device's latest value of every sensor, and the frame's time.
DeviceState = tuple[Mapping[str, Value | None], float]

RESERVED_KEYS = frozenset({"ts", "seq"})  # device-mode keys that are not sensors


def device_fields(state: DeviceState) -> bytes:
    """`"temp": 21.5, "hum": 40, "ts": 1764074400.123` (`payload: device`, without `seq`)."""
    values, ts = state
    body: dict[str, object] = {k: v for k, v in values.items() if k not in RESERVED_KEYS}
    body["ts"] = round(ts, 3)
    # allow_nan=False: a ValueError (counted by the encoder) rather than invalid JSON (NaN).
    return json.dumps(body, ensure_ascii=False, allow_nan=False).encode()[1:-1]


def device_payload(state: DeviceState, seq: int | None = None) -> bytes:
    """`{"temp": 21.5, "hum": 40, "ts": 1764074400.123, "seq": 42}` (`payload: device`)."""
    return _with_seq(device_fields(state), seq)


def reading_fields(reading: Reading) -> bytes:
    """`"value": 21.5, "unit": "°C", "ts": 1764074400.123`: a reading's payload but `seq`.

    `ts` is in epoch seconds (ms precision), the moment the frame was read, so a reading
    replayed after an outage still says when it was taken. `seq` (added at take time, see
    `render`) counts per device and survives restarts: at-least-once delivery can repeat a
    reading, and consumers drop repeats by it.

    Numbers and booleans are formatted directly (one f-string instead of json.dumps, which was
    the largest single cost per reading); the result is byte for byte what json.dumps gives."""
    value = reading.value
    if value is True or value is False:
        text = "true" if value else "false"
    elif type(value) is int:
        text = str(value)
    elif type(value) is float and math.isfinite(value):
        text = repr(value)  # what json.dumps writes for a float
    else:
        return _json_fields(reading)
    unit = _unit_json(reading.unit)
    return f'"value": {text}, "unit": {unit}, "ts": {round(reading.ts, 3)!r}'.encode()


def reading_payload(reading: Reading, seq: int | None = None) -> bytes:
    """`{"value": 21.5, "unit": "°C", "ts": 1764074400.123, "seq": 42}` (see reading_fields)."""
    return _with_seq(reading_fields(reading), seq)


def _with_seq(fields: bytes, seq: int | None) -> bytes:
    if seq is None:
        return b"{%s}" % fields
    return b'{%s, "seq": %d}' % (fields, seq)


_UNITS: dict[str | None, str] = {None: "null"}


def _unit_json(unit: str | None) -> str:
    text = _UNITS.get(unit)
    if text is None:
        text = json.dumps(unit, ensure_ascii=False)
        if len(_UNITS) < 1000:  # units come from config and decoders: a handful
            _UNITS[unit] = text
    return text


def _json_fields(reading: Reading) -> bytes:
    body = {"value": reading.value, "unit": reading.unit, "ts": round(reading.ts, 3)}
    return json.dumps(body, ensure_ascii=False, allow_nan=False).encode()[1:-1]
