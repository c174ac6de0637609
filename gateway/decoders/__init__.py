"""Decoders: pure functions from one frame (bytes) to named values.

`make_decoder(device)` returns the decoder a device's config asks for: `kv`, `json`, `nmea` by
name, `csv`, `regex` and `struct` built from their options. Decoders raise DecodeError (and
nothing else) for a frame they cannot read; the link counts it and skips the frame. A decoder may
return no values for a frame that carries none (an NMEA sentence type we do not read).
`sensor_specs` merges the units a decoder knows (NMEA's, a struct field's) under the device's
`sensors:`, and `to_readings` applies them (unit, type) and builds Readings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from gateway.config import (
    CsvDecoder,
    RegexDecoder,
    SensorSpec,
    SerialDevice,
    StructDecoder,
)
from gateway.decoders import nmea
from gateway.decoders.binary import StructPayloadDecoder
from gateway.decoders.csvline import CsvLineDecoder
from gateway.decoders.jsonobj import decode_json
from gateway.decoders.kv import decode_kv
from gateway.decoders.nmea import decode_nmea
from gateway.decoders.regex import RegexGroupDecoder
from gateway.decoders.values import fits_float
from gateway.errors import DecodeError
from gateway.models import Reading, Value

Decoder = Callable[[bytes], dict[str, Value]]

#: The decoders that take no options, by the name a config gives them.
DECODERS: dict[str, Decoder] = {"kv": decode_kv, "json": decode_json, "nmea": decode_nmea}


def make_decoder(device: SerialDevice) -> Decoder:
    spec = device.decoder
    match spec:
        case CsvDecoder():
            return CsvLineDecoder(spec, device.encoding)
        case RegexDecoder():
            return RegexGroupDecoder(spec, device.encoding)
        case StructDecoder():
            return StructPayloadDecoder(spec)
    return DECODERS[spec]


def sensor_specs(device: SerialDevice) -> dict[str, SensorSpec]:
    """The device's `sensors:`, plus the units its decoder knows for sensors not listed there
    (or listed without a unit)."""
    known: dict[str, str] = {}
    if device.decoder == "nmea":
        known = nmea.UNITS
    elif isinstance(device.decoder, StructDecoder):
        known = {f.name: f.unit for f in device.decoder.field_specs() if f and f.unit}
    specs = dict(device.sensors)
    for name, unit in known.items():
        spec = specs.get(name)
        if spec is None:
            specs[name] = SensorSpec(unit=unit)
        elif spec.unit is None:
            specs[name] = spec.model_copy(update={"unit": unit})
    return specs


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
                if type(raw) is int:  # (str() of one over 4300 digits would raise ValueError)
                    fits_float(raw, name)
                try:
                    value = _COERCE[spec.type](raw)
                except (TypeError, ValueError, OverflowError) as exc:  # int("1e400") overflows
                    raise DecodeError(f"{name}={raw!r:.40} is not a {spec.type}") from exc
                if isinstance(value, float) and not math.isfinite(value):  # float("nan")
                    raise DecodeError(f"{name}={raw!r:.40} is not a finite number")
        readings.append(Reading(device, name, value, unit, ts))
    return readings


__all__ = ["DECODERS", "DecodeError", "Decoder", "make_decoder", "sensor_specs", "to_readings"]
