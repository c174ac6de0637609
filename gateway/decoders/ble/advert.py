"""What an advertisement decoder sees: one advertisement, as plain immutable data.

`Advert` is built by the scanner from bleak's `AdvertisementData` (and by tests from published
sample payloads); decoders never see a bleak object, so they stay pure functions.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gateway.errors import DecodeError
from gateway.models import SensorClass, Value

BASE_UUID_SUFFIX = "-0000-1000-8000-00805f9b34fb"


def uuid16(short: int) -> str:
    """0x181A -> '0000181a-0000-1000-8000-00805f9b34fb' (the form bleak reports)."""
    return f"{short:08x}{BASE_UUID_SUFFIX}"


@dataclass(frozen=True, slots=True)
class Advert:
    address: str  # upper case, `AA:BB:CC:DD:EE:FF`
    name: str | None = None
    rssi: int | None = None
    manufacturer_data: Mapping[int, bytes] = field(default_factory=dict)
    service_data: Mapping[str, bytes] = field(default_factory=dict)  # full lower-case UUIDs
    service_uuids: tuple[str, ...] = ()
    tx_power: int | None = None


#: A decoder: one advertisement -> sensor values named after Home Assistant device classes.
#: Raises DecodeError (only) when the advertisement is not for it or is malformed.
AdvertDecoder = Callable[[Advert], dict[str, Value]]


@dataclass(frozen=True, slots=True)
class Decoded:
    """All that a decoder read from one advertisement.

    `values` are measurements: a repeat of an unchanged value carries no news. `events` (a
    button press) are news each time they are sent, so the caller must drop repeated packets
    first: `packet_id` (BTHome's object 0x00) is the same in every repeat of one packet, and
    `counter` (encrypted BTHome) is authenticated and increases from packet to packet.
    """

    values: dict[str, Value]
    events: dict[str, Value] = field(default_factory=dict)
    packet_id: int | None = None
    counter: int | None = None  # None: the advertisement was not encrypted
    #: What the decoder says each value is (unit, Home Assistant classes), where it says.
    classes: Mapping[str, SensorClass] = field(default_factory=dict)


#: A parser: like an AdvertDecoder, with events and the packet's identity.
AdvertParser = Callable[[Advert], Decoded]


def plain(decode: AdvertDecoder) -> AdvertParser:
    """A decoder of values only, as a parser."""

    def parse(advert: Advert) -> Decoded:
        return Decoded(decode(advert))

    return parse


def service_data(advert: Advert, short: int, what: str) -> bytes:
    data = advert.service_data.get(uuid16(short))
    if data is None:
        raise DecodeError(f"no {what} service data (UUID 0x{short:04X})")
    return bytes(data)


def manufacturer_data(advert: Advert, company: int, what: str) -> bytes:
    data = advert.manufacturer_data.get(company)
    if data is None:
        raise DecodeError(f"no {what} manufacturer data (company 0x{company:04X})")
    return bytes(data)


def unpack(fmt: str, data: bytes, offset: int = 0) -> tuple[int | float, ...]:
    """struct.unpack_from that raises DecodeError instead of struct.error."""
    try:
        values: tuple[int | float, ...] = struct.unpack_from(fmt, data, offset)
    except struct.error as exc:
        raise DecodeError(f"{len(data)} byte(s) do not fit {fmt!r} at offset {offset}") from exc
    return values


def unpack_ints(fmt: str, data: bytes, offset: int = 0) -> tuple[int, ...]:
    """`unpack` for integer-only formats."""
    return tuple(int(v) for v in unpack(fmt, data, offset))


def scaled(raw: int | float, factor: float) -> Value:
    """Apply a factor; rounds away binary noise (0.01 * 2155 is 21.55, not 21.550000000000001)."""
    if factor == 1:
        return raw
    value = raw * factor
    if not math.isfinite(value):
        raise DecodeError(f"value {raw!r} is not a finite number")
    digits = max(0, -math.floor(math.log10(abs(factor)))) + 3 if factor else 0
    return round(value, digits)


def parse_ad_structures(data: bytes, address: str) -> Advert:
    """Raw advertising data (length, type, data; repeated) -> the decoders' Advert."""
    name, manufacturer, service, uuids = None, {}, {}, []
    i = 0
    while i < len(data):
        length = data[i]
        if length == 0:
            break
        if i + 1 + length > len(data):
            raise DecodeError(f"AD structure at byte {i} runs past the end of the data")
        kind, body = data[i + 1], data[i + 2 : i + 1 + length]
        if kind in (0x08, 0x09):
            name = body.decode("utf-8", "replace")
        elif kind == 0xFF and len(body) >= 2:
            manufacturer[int.from_bytes(body[:2], "little")] = body[2:]
        elif kind == 0x16 and len(body) >= 2:
            service[uuid16(int.from_bytes(body[:2], "little"))] = body[2:]
        elif kind in (0x02, 0x03):
            uuids += [
                uuid16(int.from_bytes(body[j : j + 2], "little"))
                for j in range(0, len(body) - 1, 2)
            ]
        i += 1 + length
    return Advert(
        address=address,
        name=name,
        manufacturer_data=manufacturer,
        service_data=service,
        service_uuids=tuple(uuids),
    )
