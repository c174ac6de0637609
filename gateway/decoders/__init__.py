"""Decoders: pure functions from one frame (bytes) to named values.

`make_decoder(device)` returns the decoder a device's config asks for. Decoders raise DecodeError
for a frame they cannot read; the link counts it and skips the frame. `to_readings` applies the
per-sensor spec (unit, type) and builds Readings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from gateway.config import SensorSpec, SerialDevice
from gateway.decoders.jsonobj import decode_json
from gateway.decoders.kv import decode_kv
from gateway.errors import DecodeError
from gateway.models import Reading, Value

Decoder = Callable[[bytes], dict[str, Value]]

DECODERS: dict[str, Decoder] = {"kv": decode_kv, "json": decode_json}


def make_decoder(device: SerialDevice) -> Decoder:
    return DECODERS[device.decoder]


_COERCE: dict[str, Callable[[Value], Value]] = {
    "float": float,
    "int": lambda v: int(float(v)) if isinstance(v, str) else int(v),
    "str": str,
    "bool": lambda v: v if isinstance(v, bool) else str(v).lower() in {"1", "true", "on", "yes"},
}


def to_readings(
    device: str, fields: Mapping[str, Value], sensors: Mapping[str, SensorSpec], ts: float
) -> list[Reading]:
    readings = []
    for name, raw in fields.items():
        spec = sensors.get(name)
        unit, value = None, raw
        if spec is not None:
            unit = spec.unit
            if spec.type is not None:
                try:
                    value = _COERCE[spec.type](raw)
                except (TypeError, ValueError, OverflowError) as exc:  # int("1e400") overflows
                    raise DecodeError(f"{name}={raw!r} is not a {spec.type}") from exc
                if isinstance(value, float) and not math.isfinite(value):  # float("nan")
                    raise DecodeError(f"{name}={raw!r} is not a finite number")
        readings.append(Reading(device, name, value, unit, ts))
    return readings


__all__ = ["DECODERS", "DecodeError", "Decoder", "make_decoder", "to_readings"]
