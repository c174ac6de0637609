"""`struct`: a binary payload unpacked with a struct format; each value scaled, named, typed."""

from __future__ import annotations

import math
import struct
from decimal import Decimal

from gateway.config import StructDecoder, StructField
from gateway.errors import DecodeError
from gateway.models import Value


def _scaled(raw: int | float, spec: StructField) -> Value:
    if spec.scale == 1 and spec.offset == 0:
        return raw
    # Decimal arithmetic on the decimal text of scale and offset: 234 * 0.1 is 23.4, not
    # 23.400000000000002 (what a user wrote as 0.1 is what they mean).
    value = float(Decimal(raw) * Decimal(repr(spec.scale)) + Decimal(repr(spec.offset)))
    if not math.isfinite(value):  # 1e308 * 10: the double overflows; JSON has no inf
        raise DecodeError(f"{spec.name}: {raw!r} scaled is not a finite number")
    return value


def _convert(raw: object, spec: StructField) -> Value:
    if isinstance(raw, bytes):  # `s` format: a fixed-size, NUL-padded string
        try:
            return raw.rstrip(b"\x00").decode("ascii")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"{spec.name}: not ASCII text") from exc
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, float) and not math.isfinite(raw):
        raise DecodeError(f"{spec.name}: not a finite number")
    if isinstance(raw, int | float):
        return _scaled(raw, spec)
    raise DecodeError(f"{spec.name}: unsupported value {type(raw).__name__}")  # pragma: no cover


class StructPayloadDecoder:
    def __init__(self, spec: StructDecoder) -> None:
        self._struct = struct.Struct(spec.format)
        self._fields = spec.field_specs()
        self._skip = spec.skip
        self._size = spec.skip + self._struct.size

    def __call__(self, frame: bytes) -> dict[str, Value]:
        if len(frame) != self._size:
            raise DecodeError(f"{len(frame)} bytes, expected {self._size}")
        values = self._struct.unpack_from(frame, self._skip)
        fields: dict[str, Value] = {}
        for spec, raw in zip(self._fields, values, strict=True):
            if spec is not None:
                fields[spec.name] = _convert(raw, spec)
        if not fields:
            raise DecodeError("no named fields")  # pragma: no cover - config requires one
        return fields
