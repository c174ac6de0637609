"""Apple iBeacon: manufacturer data of Apple (0x004C) with type 0x02, length 0x15: a proximity
UUID, major, minor and the measured power (RSSI at 1 m, dBm)."""

from __future__ import annotations

import uuid

from gateway.decoders.ble.advert import Advert, manufacturer_data, unpack_ints
from gateway.errors import DecodeError
from gateway.models import Value

COMPANY_ID = 0x004C
PREFIX = b"\x02\x15"
LENGTH = 23


def decode_ibeacon(advert: Advert) -> dict[str, Value]:
    data = manufacturer_data(advert, COMPANY_ID, "iBeacon")
    if len(data) != LENGTH or not data.startswith(PREFIX):
        raise DecodeError("Apple manufacturer data is not an iBeacon frame")
    major, minor, power = unpack_ints(">HHb", data, 18)
    return {
        "uuid": str(uuid.UUID(bytes=data[2:18])),
        "major": major,
        "minor": minor,
        "tx_power": power,
    }
