"""GATT characteristic values -> sensor values: the standard formats of the Bluetooth SIG's
GATT Specification Supplement, or a struct layout.

- temperature (0x2A6E): sint16, 0.01 °C; 0x8000 means "unknown"
- humidity (0x2A6F): uint16, 0.01 %; 0xFFFF means "unknown"
- battery (0x2A19, Battery Level): uint8, %
- heart_rate (0x2A37, Heart Rate Measurement): flags, then bpm (uint8 or uint16), energy
  expended (uint16, kJ) and RR intervals (uint16, 1/1024 s; the last one is published)
- text: UTF-8; raw: the bytes as hex digits
"""

from __future__ import annotations

import struct

from gateway.config import GattValueSpec
from gateway.decoders.ble.advert import scaled, unpack_ints
from gateway.decoders.ble.structfmt import decode_layout
from gateway.errors import DecodeError
from gateway.limits import GATT_MAX_TEXT as _MAX_TEXT
from gateway.models import Value

_HR_UINT16, _HR_CONTACT_SUPPORTED, _HR_CONTACT, _HR_ENERGY, _HR_RR = 1, 4, 2, 8, 16


def decode_heart_rate(data: bytes) -> dict[str, Value]:
    if not data:
        raise DecodeError("empty heart rate measurement")
    flags, offset = data[0], 1
    fmt = "<H" if flags & _HR_UINT16 else "<B"
    (bpm,) = unpack_ints(fmt, data, offset)
    offset += 2 if flags & _HR_UINT16 else 1
    values: dict[str, Value] = {"heart_rate": bpm}
    if flags & _HR_CONTACT_SUPPORTED:
        values["sensor_contact"] = bool(flags & _HR_CONTACT)
    if flags & _HR_ENERGY:
        (energy,) = unpack_ints("<H", data, offset)
        values["energy_expended"] = energy
        offset += 2
    if flags & _HR_RR:
        rest = data[offset:]
        if len(rest) < 2 or len(rest) % 2:
            raise DecodeError("RR intervals flagged but missing or odd-sized")
        (rr,) = unpack_ints("<H", rest, len(rest) - 2)
        values["rr_interval"] = scaled(rr, 1 / 1024)
    return values


def _single(fmt: str, data: bytes, factor: float, unknown: int | None) -> Value:
    if len(data) != struct.calcsize(fmt):
        raise DecodeError(f"expected {struct.calcsize(fmt)} byte(s), got {len(data)}")
    (raw,) = unpack_ints(fmt, data)
    if raw == unknown:
        raise DecodeError("the device reports the value as unknown")
    return scaled(raw, factor)


def decode_gatt(spec: GattValueSpec, data: bytes) -> dict[str, Value]:
    """One characteristic value -> named values (the spec's `sensor` renames a single one)."""
    fmt = spec.format
    values: dict[str, Value]
    if fmt == "temperature":
        values = {"temperature": _single("<h", data, 0.01, -0x8000)}
    elif fmt == "humidity":
        values = {"humidity": _single("<H", data, 0.01, 0xFFFF)}
    elif fmt == "battery":
        battery = _single("<B", data, 1, None)
        if not isinstance(battery, int) or battery > 100:
            raise DecodeError(f"battery level {battery} is not 0..100")
        values = {"battery": battery}
    elif fmt == "heart_rate":
        values = decode_heart_rate(data)
    elif fmt == "text":
        try:
            values = {"text": data[:_MAX_TEXT].decode("utf-8").rstrip("\x00")}
        except UnicodeDecodeError as exc:
            raise DecodeError(f"not UTF-8: {exc.reason}") from exc
    elif fmt == "raw":
        values = {"raw": data[:_MAX_TEXT].hex()}
    else:
        values = decode_layout(data, fmt, spec.fields, spec.scale)
    if spec.sensor is not None and len(values) == 1:
        values = {spec.sensor: next(iter(values.values()))}
    elif spec.sensor is not None:
        values = {f"{spec.sensor}_{k}": v for k, v in values.items()}
    return values
