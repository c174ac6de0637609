"""BTHome v2 (https://bthome.io/format/): service data 0xFCD2, unencrypted or AES-CCM encrypted
with a per-device 16-byte bind key.

A payload is a device-information byte, then objects `<id><data>` whose length and scaling the
object id defines. Sensor names are the Home Assistant device classes; an object that occurs
more than once gets a suffix (`temperature`, `temperature_2`). The packet id (0x00), device
information (0xF0-0xF2) and events (buttons, dimmers) are not sensor values and are skipped.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from gateway.decoders.ble.advert import Advert, scaled, service_data
from gateway.errors import DecodeError
from gateway.models import Value

UUID16 = 0xFCD2
_ENCRYPTED, _TRIGGER_BASED = 0x01, 0x04
_MIC_LEN, _COUNTER_LEN = 4, 4

# object id -> (sensor name, length in bytes, signed, factor). Booleans have factor 0.
_U, _S, _BOOL = False, True, 0.0
OBJECTS: dict[int, tuple[str, int, bool, float]] = {
    0x01: ("battery", 1, _U, 1),
    0x02: ("temperature", 2, _S, 0.01),
    0x03: ("humidity", 2, _U, 0.01),
    0x04: ("pressure", 3, _U, 0.01),
    0x05: ("illuminance", 3, _U, 0.01),
    0x06: ("mass", 2, _U, 0.01),
    0x07: ("mass_lb", 2, _U, 0.01),
    0x08: ("dew_point", 2, _S, 0.01),
    0x09: ("count", 1, _U, 1),
    0x0A: ("energy", 3, _U, 0.001),
    0x0B: ("power", 3, _U, 0.01),
    0x0C: ("voltage", 2, _U, 0.001),
    0x0D: ("pm25", 2, _U, 1),
    0x0E: ("pm10", 2, _U, 1),
    0x12: ("carbon_dioxide", 2, _U, 1),
    0x13: ("volatile_organic_compounds", 2, _U, 1),
    0x14: ("moisture", 2, _U, 0.01),
    0x2E: ("humidity", 1, _U, 1),
    0x2F: ("moisture", 1, _U, 1),
    0x3D: ("count", 2, _U, 1),
    0x3E: ("count", 4, _U, 1),
    0x3F: ("rotation", 2, _S, 0.1),
    0x40: ("distance", 2, _U, 1),
    0x41: ("distance_m", 2, _U, 0.1),
    0x42: ("duration", 3, _U, 0.001),
    0x43: ("current", 2, _U, 0.001),
    0x44: ("speed", 2, _U, 0.01),
    0x45: ("temperature", 2, _S, 0.1),
    0x46: ("uv_index", 1, _U, 0.1),
    0x47: ("volume", 2, _U, 0.1),
    0x48: ("volume_ml", 2, _U, 1),
    0x49: ("volume_flow_rate", 2, _U, 0.001),
    0x4A: ("voltage", 2, _U, 0.1),
    0x4B: ("gas", 3, _U, 0.001),
    0x4C: ("gas", 4, _U, 0.001),
    0x4D: ("energy", 4, _U, 0.001),
    0x4E: ("volume", 4, _U, 0.001),
    0x4F: ("water", 4, _U, 0.001),
    0x50: ("timestamp", 4, _U, 1),
    0x51: ("acceleration", 2, _U, 0.001),
    0x52: ("gyroscope", 2, _U, 0.001),
    0x55: ("volume_storage", 4, _U, 0.001),
    0x56: ("conductivity", 2, _U, 1),
    0x57: ("temperature", 1, _S, 1),
    0x58: ("temperature", 1, _S, 0.35),
    0x59: ("count", 1, _S, 1),
    0x5A: ("count", 2, _S, 1),
    0x5B: ("count", 4, _S, 1),
    0x5C: ("power", 4, _S, 0.01),
    0x5D: ("current", 2, _S, 0.001),
    0x5E: ("direction", 2, _U, 0.01),
    0x5F: ("precipitation", 2, _U, 0.1),
    0x60: ("channel", 1, _U, 1),
    0x61: ("rotational_speed", 2, _U, 1),
    0x62: ("speed", 4, _S, 0.000001),
    0x63: ("acceleration", 4, _S, 0.000001),
    0x64: ("light_level", 1, _U, 1),
}
# 0x0F..0x2D: binary sensors (one byte, 0 or 1).
BINARY: dict[int, str] = {
    0x0F: "generic",
    0x10: "power_state",
    0x11: "opening",
    0x15: "battery_low",
    0x16: "battery_charging",
    0x17: "carbon_monoxide",
    0x18: "cold",
    0x19: "connectivity",
    0x1A: "door",
    0x1B: "garage_door",
    0x1C: "gas_detected",
    0x1D: "heat",
    0x1E: "light",
    0x1F: "lock",
    0x20: "moisture_detected",
    0x21: "motion",
    0x22: "moving",
    0x23: "occupancy",
    0x24: "plug",
    0x25: "presence",
    0x26: "problem",
    0x27: "running",
    0x28: "safety",
    0x29: "smoke",
    0x2A: "sound",
    0x2B: "tamper",
    0x2C: "vibration",
    0x2D: "window",
}
# Objects that carry no sensor value: id -> fixed length (None: a length byte follows).
SKIPPED: dict[int, int | None] = {
    0x00: 1,
    0x3A: 1,
    0x3C: 2,
    0x53: None,
    0x54: None,
    0x65: 1,
    0xF0: 2,
    0xF1: 4,
    0xF2: 3,
}


def _decrypt(advert: Advert, data: bytes, key: bytes) -> bytes:
    if len(data) < 1 + _COUNTER_LEN + _MIC_LEN + 1:
        raise DecodeError("encrypted BTHome payload too short")
    ciphertext = data[1 : -(_COUNTER_LEN + _MIC_LEN)]
    counter, mic = data[-8:-4], data[-4:]
    mac = bytes.fromhex(advert.address.replace(":", ""))
    nonce = mac + UUID16.to_bytes(2, "little") + data[:1] + counter
    try:
        return AESCCM(key, tag_length=_MIC_LEN).decrypt(nonce, ciphertext + mic, None)
    except InvalidTag as exc:
        raise DecodeError("BTHome decryption failed (wrong bindkey?)") from exc


def _objects(payload: bytes) -> dict[str, Value]:
    values: dict[str, Value] = {}
    i = 0
    while i < len(payload):
        oid = payload[i]
        i += 1
        if oid in SKIPPED:
            length = SKIPPED[oid]
            if length is None:
                if i >= len(payload):
                    raise DecodeError(f"object 0x{oid:02X} lacks its length byte")
                length = payload[i] + 1
            i += length
            continue
        if oid in BINARY:
            name, length, signed, factor = BINARY[oid], 1, False, _BOOL
        elif oid in OBJECTS:
            name, length, signed, factor = OBJECTS[oid]
        else:
            raise DecodeError(f"unknown BTHome object id 0x{oid:02X}")
        raw = payload[i : i + length]
        if len(raw) < length:
            raise DecodeError(f"object 0x{oid:02X} is truncated")
        i += length
        number = int.from_bytes(raw, "little", signed=signed)
        value: Value = bool(number) if factor == _BOOL else scaled(number, factor)
        key, n = name, 2
        while key in values:
            key, n = f"{name}_{n}", n + 1
        values[key] = value
    if i > len(payload):
        raise DecodeError("last object is truncated")
    return values


def decode_bthome(advert: Advert, bindkey: bytes | None = None) -> dict[str, Value]:
    data = service_data(advert, UUID16, "BTHome")
    if not data:
        raise DecodeError("empty BTHome service data")
    info = data[0]
    if info >> 5 != 2:
        raise DecodeError(f"BTHome version {info >> 5} is not supported (only v2)")
    if info & _ENCRYPTED:
        if bindkey is None:
            raise DecodeError("encrypted BTHome advertisement: set the device's bindkey")
        payload = _decrypt(advert, data, bindkey)
    else:
        payload = data[1:]
    values = _objects(payload)
    if not values:
        raise DecodeError("BTHome advertisement without sensor values")
    return values


def encode_bthome(
    objects: bytes,
    *,
    mac: str | None = None,
    bindkey: bytes | None = None,
    counter: int = 0,
    trigger_based: bool = False,
) -> bytes:
    """Build BTHome v2 service data (for `gateway scan` samples, the fake BlueZ and tests)."""
    info = 0x40 | (_TRIGGER_BASED if trigger_based else 0)
    if bindkey is None:
        return bytes([info]) + objects
    if mac is None:
        raise ValueError("encryption needs the device's MAC address")
    info |= _ENCRYPTED
    count = struct.pack("<I", counter)
    nonce = bytes.fromhex(mac.replace(":", "")) + UUID16.to_bytes(2, "little") + bytes([info])
    sealed = AESCCM(bindkey, tag_length=_MIC_LEN).encrypt(nonce + count, objects, None)
    return bytes([info]) + sealed[:-_MIC_LEN] + count + sealed[-_MIC_LEN:]
