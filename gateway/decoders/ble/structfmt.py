"""The generic decoder: a Python `struct` layout with field names, applied to the manufacturer
data of one company or the service data of one service (adverts), or to a characteristic's
value (GATT)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from gateway.config import AdvertStructSpec
from gateway.decoders.ble.advert import Advert, scaled, unpack
from gateway.errors import DecodeError
from gateway.models import Value


def decode_layout(
    data: bytes,
    fmt: str,
    fields: Sequence[str],
    scale: Mapping[str, float],
    offset: int = 0,
) -> dict[str, Value]:
    values: dict[str, Value] = {}
    for name, raw in zip(fields, unpack(fmt, data, offset), strict=True):
        if name == "_":
            continue
        if isinstance(raw, bytes):  # `s` / `p` formats
            raise DecodeError(f"field {name}: byte strings are not sensor values")
        if isinstance(raw, float) and not math.isfinite(raw):
            raise DecodeError(f"field {name} is not a finite number")
        values[name] = scaled(raw, scale.get(name, 1))
    if not values:
        raise DecodeError("the layout names no fields")
    return values


def decode_struct(advert: Advert, spec: AdvertStructSpec) -> dict[str, Value]:
    if spec.manufacturer_id is not None:
        data = advert.manufacturer_data.get(spec.manufacturer_id)
        where = f"manufacturer data of company 0x{spec.manufacturer_id:04X}"
    else:
        assert spec.service_uuid is not None  # the config model guarantees one source
        data = advert.service_data.get(spec.service_uuid)
        where = f"service data of {spec.service_uuid}"
    if data is None:
        raise DecodeError(f"no {where}")
    return decode_layout(bytes(data), spec.format, spec.fields, spec.scale, spec.offset)
