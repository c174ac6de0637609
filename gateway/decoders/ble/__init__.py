"""Bluetooth LE advertisement decoders: pure functions from an `Advert` to sensor values.

Sensor names follow Home Assistant's device classes (`temperature`, `humidity`, `pressure`,
`battery`, `voltage`, `signal_strength`, ...); `UNITS` gives each its unit. Every decoder raises
DecodeError, and nothing else, for an advertisement that is not for it or is malformed. The
parsers (`BUILTIN`, `make_advert_parser`) return a `Decoded`: values, and for BTHome also events
and what identifies the packet (its id, the encryption counter).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.config import BleAdvertDevice
from gateway.decoders.ble.advert import (
    Advert,
    AdvertDecoder,
    AdvertParser,
    Decoded,
    parse_ad_structures,
    plain,
    uuid16,
)
from gateway.decoders.ble.bthome import parse_bthome
from gateway.decoders.ble.ibeacon import decode_ibeacon
from gateway.decoders.ble.ruuvi import decode_ruuvi
from gateway.decoders.ble.structfmt import decode_struct
from gateway.decoders.ble.xiaomi import decode_atc, decode_pvvx
from gateway.errors import DecodeError

if TYPE_CHECKING:
    from gateway.decoders.ble.parsers import AutoParser

#: Parsers that need no per-device settings, in the order `detect` tries them.
BUILTIN: dict[str, AdvertParser] = {
    "bthome": parse_bthome,
    "pvvx": plain(decode_pvvx),
    "atc": plain(decode_atc),
    "ruuvi": plain(decode_ruuvi),
    "ibeacon": plain(decode_ibeacon),
}

UNITS: dict[str, str] = {
    "temperature": "°C",
    "dew_point": "°C",
    "humidity": "%",
    "moisture": "%",
    "battery": "%",
    "pressure": "hPa",
    "illuminance": "lx",
    "voltage": "V",
    "current": "A",
    "power": "W",
    "energy": "kWh",
    "signal_strength": "dBm",
    "tx_power": "dBm",
    "carbon_dioxide": "ppm",
    "pm25": "µg/m³",
    "pm10": "µg/m³",
    "volatile_organic_compounds": "µg/m³",
    "mass": "kg",
    "distance": "mm",
    "duration": "s",
    "speed": "m/s",
    "acceleration_x": "g",
    "acceleration_y": "g",
    "acceleration_z": "g",
    "heart_rate": "bpm",
    "energy_expended": "kJ",
    "rr_interval": "s",
    "rotation": "°",
    "volume": "L",
    "water": "L",
    "gas": "m³",
}


def unit_of(sensor: str) -> str | None:
    """`temperature_2` has the unit of `temperature`."""
    base, _, suffix = sensor.rpartition("_")
    return UNITS.get(sensor) or (UNITS.get(base) if suffix.isdigit() else None)


#: Built-in parsers that `decoder: auto` tries before the libraries (they decode these formats
#: exactly and at a fraction of the cost, see docs/ble.md), and the one it tries after them.
AUTO_FIRST = ("bthome", "pvvx", "atc", "ruuvi")
AUTO_LAST = ("ibeacon",)


def make_advert_parser(
    device: BleAdvertDevice, on_fault: Callable[[str], None] | None = None
) -> AdvertParser:
    """The device's parser. A library's (decoder `govee`, `xiaomi`, ..., and `auto`) keeps
    state for its device, so each link gets its own; they import their library here.
    `on_fault(parser)`: a library raised on an advertisement (contained, to be counted)."""
    key = None if device.bindkey is None else bytes.fromhex(device.bindkey.get_secret_value())
    if device.decoder == "struct":
        assert device.struct is not None  # the config model guarantees it
        return plain(functools.partial(decode_struct, spec=device.struct))
    if device.decoder == "auto":
        return auto_parser(key, on_fault)
    if device.decoder not in BUILTIN:
        from gateway.decoders.ble.parsers import LibraryParser  # noqa: PLC0415 - the extra's

        return LibraryParser(device.decoder, key, on_fault)
    if device.decoder == "bthome" and key is not None:
        return functools.partial(parse_bthome, bindkey=key)
    return BUILTIN[device.decoder]


def auto_parser(
    bindkey: bytes | None = None, on_fault: Callable[[str], None] | None = None
) -> AutoParser:
    from gateway.decoders.ble.parsers import AutoParser  # noqa: PLC0415 - the extra's

    first = [(n, BUILTIN[n]) for n in AUTO_FIRST]
    if bindkey is not None:
        first[0] = ("bthome", functools.partial(parse_bthome, bindkey=bindkey))
    return AutoParser(first, [(n, BUILTIN[n]) for n in AUTO_LAST], bindkey, on_fault)


def detect(advert: Advert) -> tuple[str, Decoded] | None:
    """The first built-in parser that reads this advertisement, and what it reads."""
    for name, decode in BUILTIN.items():
        try:
            return name, decode(advert)
        except DecodeError:
            continue
    return None


__all__ = [
    "BUILTIN",
    "UNITS",
    "Advert",
    "AdvertDecoder",
    "AdvertParser",
    "DecodeError",
    "Decoded",
    "auto_parser",
    "detect",
    "make_advert_parser",
    "parse_ad_structures",
    "unit_of",
    "uuid16",
]
