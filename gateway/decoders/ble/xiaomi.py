"""Xiaomi LYWSD03MMC (and similar) thermometers running the custom firmware by pvvx or atc1441:
service data 0x181A (Environmental Sensing) in one of two layouts.

- `pvvx` (15 bytes, little endian): MAC (reversed), temperature x0.01 °C (int16), humidity
  x0.01 % (uint16), battery mV (uint16), battery % (uint8), measurement counter, flags.
- `atc` (13 bytes, big endian): MAC, temperature x0.1 °C (int16), humidity % (uint8), battery %
  (uint8), battery mV (uint16), frame counter.

Counters and flags are transport details and are not published.
"""

from __future__ import annotations

from gateway.decoders.ble.advert import Advert, scaled, service_data, unpack_ints
from gateway.errors import DecodeError
from gateway.models import Value

UUID16 = 0x181A
PVVX_LEN, ATC_LEN = 15, 13


def _env_data(advert: Advert, length: int, what: str) -> bytes:
    data = service_data(advert, UUID16, what)
    if len(data) != length:
        raise DecodeError(f"{what} data is {length} bytes, got {len(data)}")
    return data


def decode_pvvx(advert: Advert) -> dict[str, Value]:
    data = _env_data(advert, PVVX_LEN, "pvvx")
    temp, hum, mv, battery = unpack_ints("<hHHB", data, 6)
    if battery > 100 or hum > 10_000:
        raise DecodeError("pvvx values out of range")
    return {
        "temperature": scaled(temp, 0.01),
        "humidity": scaled(hum, 0.01),
        "battery": battery,
        "voltage": scaled(mv, 0.001),
    }


def decode_atc(advert: Advert) -> dict[str, Value]:
    data = _env_data(advert, ATC_LEN, "atc")
    temp, hum, battery, mv = unpack_ints(">hBBH", data, 6)
    if battery > 100 or hum > 100:
        raise DecodeError("atc values out of range")
    return {
        "temperature": scaled(temp, 0.1),
        "humidity": hum,
        "battery": battery,
        "voltage": scaled(mv, 0.001),
    }
