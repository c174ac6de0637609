"""Topic and payload conventions: pure functions, one place."""

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


class _Stored(Protocol):
    """What a batch is made of: outbox records (topic and payload of one reading each)."""

    @property
    def device(self) -> str: ...
    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...


def sensor_of(prefix: str, device: str, topic: str) -> str:
    """The sensor of a reading topic `<prefix>/<device>/<sensor>` (records stored before a
    change of the prefix: the last level)."""
    head = f"{prefix}/{device}/"
    return topic[len(head) :] if topic.startswith(head) else topic.rsplit("/", 1)[-1]


def batch_payload(prefix: str, records: Sequence[_Stored]) -> bytes:
    """`[{"sensor": "t", "value": 21.5, "unit": "°C", "ts": ..., "seq": 7}, ...]`: each element
    is exactly the payload the reading would have had alone, with its sensor first (spliced
    into the stored JSON object, not parsed and dumped again)."""
    items = []
    for record in records:
        if record.topic == f"{prefix}/{record.device}":  # a device-mode object: no sensor
            items.append(record.payload)
            continue
        sensor = _SENSORS.get(record.topic)
        if sensor is None:
            name = json.dumps(sensor_of(prefix, record.device, record.topic), ensure_ascii=False)
            sensor = f'{{"sensor": {name}, '.encode()
            if len(_SENSORS) < 10_000:  # topics come from config and decoders: a bounded set
                _SENSORS[record.topic] = sensor
        items.append(sensor + record.payload[1:])
    return b"[" + b", ".join(items) + b"]"


_SENSORS: dict[str, bytes] = {}

#: A device-mode object: the device's latest value of every sensor, and the frame's time.
DeviceState = tuple[Mapping[str, Value | None], float]

RESERVED_KEYS = frozenset({"ts", "seq"})  # device-mode keys that are not sensors


def device_payload(state: DeviceState, seq: int | None = None) -> bytes:
    """`{"temp": 21.5, "hum": 40, "ts": 1764074400.123, "seq": 42}` (`payload: device`)."""
    values, ts = state
    body: dict[str, object] = {k: v for k, v in values.items() if k not in RESERVED_KEYS}
    body["ts"] = round(ts, 3)
    if seq is not None:
        body["seq"] = seq
    # allow_nan=False: a ValueError (counted by the encoder) rather than invalid JSON (NaN).
    return json.dumps(body, ensure_ascii=False, allow_nan=False).encode()


def reading_payload(reading: Reading, seq: int | None = None) -> bytes:
    """`{"value": 21.5, "unit": "°C", "ts": 1764074400.123, "seq": 42}`.

    `ts` is in epoch seconds (ms precision), the moment the frame was read, so a reading
    replayed after an outage still says when it was taken. `seq` counts per device and survives
    restarts: at-least-once delivery can repeat a reading, and consumers drop repeats by it.

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
        return _json_payload(reading, seq)
    unit = _unit_json(reading.unit)
    ts = repr(round(reading.ts, 3))
    if seq is None:
        return f'{{"value": {text}, "unit": {unit}, "ts": {ts}}}'.encode()
    return f'{{"value": {text}, "unit": {unit}, "ts": {ts}, "seq": {seq}}}'.encode()


_UNITS: dict[str | None, str] = {None: "null"}


def _unit_json(unit: str | None) -> str:
    text = _UNITS.get(unit)
    if text is None:
        text = json.dumps(unit, ensure_ascii=False)
        if len(_UNITS) < 1000:  # units come from config and decoders: a handful
            _UNITS[unit] = text
    return text


def _json_payload(reading: Reading, seq: int | None) -> bytes:
    body: dict[str, object] = {
        "value": reading.value,
        "unit": reading.unit,
        "ts": round(reading.ts, 3),
    }
    if seq is not None:
        body["seq"] = seq
    return json.dumps(body, ensure_ascii=False, allow_nan=False).encode()
