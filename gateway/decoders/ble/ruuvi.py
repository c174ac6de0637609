"""RuuviTag data format 5 (RAWv2): manufacturer data of Ruuvi Innovations (0x0499), 24 bytes,
big endian (https://docs.ruuvi.com/communication/bluetooth-advertisements/data-format-5-rawv2).

Fields that carry their "not available" marker are left out. The measurement sequence number
and the MAC are transport details and are not published.
"""

from __future__ import annotations

from gateway.decoders.ble.advert import Advert, manufacturer_data, scaled, unpack_ints
from gateway.errors import DecodeError
from gateway.models import Value

COMPANY_ID = 0x0499
FORMAT_5, LENGTH = 5, 24


def decode_ruuvi(advert: Advert) -> dict[str, Value]:
    data = manufacturer_data(advert, COMPANY_ID, "Ruuvi")
    if not data or data[0] != FORMAT_5:
        raise DecodeError(f"Ruuvi data format {data[:1].hex() or 'none'} is not 5 (RAWv2)")
    if len(data) != LENGTH:
        raise DecodeError(f"Ruuvi RAWv2 is {LENGTH} bytes, got {len(data)}")
    temp, hum, pressure, ax, ay, az, power, movement = unpack_ints(">hHHhhhHB", data, 1)
    values: dict[str, Value] = {}
    if temp != -0x8000:
        values["temperature"] = scaled(temp, 0.005)
    if hum != 0xFFFF:
        values["humidity"] = scaled(hum, 0.0025)
    if pressure != 0xFFFF:
        values["pressure"] = scaled(pressure + 50_000, 0.01)  # Pa -> hPa
    for axis, raw in (("x", ax), ("y", ay), ("z", az)):
        if raw != -0x8000:
            values[f"acceleration_{axis}"] = scaled(raw, 0.001)  # mG -> g
    if power >> 5 != 0x7FF:
        values["voltage"] = scaled((power >> 5) + 1600, 0.001)
    if power & 0x1F != 0x1F:
        values["tx_power"] = -40 + 2 * (int(power) & 0x1F)
    if movement != 0xFF:
        values["movement_counter"] = movement
    if not values:
        raise DecodeError("Ruuvi advertisement without valid values")
    return values
