"""BTHome v2 (https://bthome.io/format/): service data 0xFCD2, unencrypted or AES-CCM encrypted
with a per-device 16-byte bind key.

A payload is a device-information byte, then objects `<id><data>` whose length and scaling the
object id defines. Sensor names are the Home Assistant device classes; an object that occurs
more than once gets a suffix (`temperature`, `temperature_2`). Button (0x3A) and dimmer (0x3C)
objects are events (`button: press`); the packet id (0x00) and, in encrypted advertisements,
the counter tell repeats and replays apart (the caller keeps that state: this stays a pure
function). Device information (0xF0-0xF2), text and raw objects are skipped.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from gateway.decoders.ble.advert import Advert, Decoded, scaled, service_data
from gateway.errors import DecodeError
from gateway.models import Value

UUID16 = 0xFCD2
_ENCRYPTED, _TRIGGER_BASED = 0x01, 0x04
_MIC_LEN, _COUNTER_LEN = 4, 4

# object id -> (sensor name, length in bytes, signed, factor).
_U, _S = False, True
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
    0x53: None,  # text
    0x54: None,  # raw
    0x65: 1,
    0xF0: 2,  # device type id
    0xF1: 4,  # firmware version
    0xF2: 3,  # firmware version
}
PACKET_ID, BUTTON, DIMMER = 0x00, 0x3A, 0x3C
_EVENT_LENGTHS = {PACKET_ID: 1, BUTTON: 1, DIMMER: 2}
# Event types, named as bthome-ble and Home Assistant name them; 0x00 is "no event".
BUTTON_EVENTS: dict[int, str] = {
    0x01: "press",
    0x02: "double_press",
    0x03: "triple_press",
    0x04: "long_press",
    0x05: "long_double_press",
    0x06: "long_triple_press",
    0x80: "hold_press",
}
DIMMER_EVENTS: dict[int, str] = {0x01: "rotate_left", 0x02: "rotate_right"}


def _decrypt(advert: Advert, data: bytes, key: bytes) -> tuple[bytes, int]:
    """The plaintext objects and the (now authenticated) counter."""
    if len(data) < 1 + _COUNTER_LEN + _MIC_LEN + 1:
        raise DecodeError("encrypted BTHome payload too short")
    ciphertext = data[1 : -(_COUNTER_LEN + _MIC_LEN)]
    counter, mic = data[-8:-4], data[-4:]
    mac = bytes.fromhex(advert.address.replace(":", ""))
    nonce = mac + UUID16.to_bytes(2, "little") + data[:1] + counter
    try:
        plaintext = AESCCM(key, tag_length=_MIC_LEN).decrypt(nonce, ciphertext + mic, None)
    except InvalidTag as exc:
        raise DecodeError("BTHome decryption failed (wrong bindkey?)") from exc
    return plaintext, int.from_bytes(counter, "little")


def _length(oid: int, payload: bytes, i: int) -> int:
    """Bytes after the object id at `i`: fixed by the id, or a length byte and that many."""
    if oid in _EVENT_LENGTHS:
        return _EVENT_LENGTHS[oid]
    if oid in BINARY:
        return 1
    if oid in OBJECTS:
        return OBJECTS[oid][1]
    if oid not in SKIPPED:
        raise DecodeError(f"unknown BTHome object id 0x{oid:02X}")
    length = SKIPPED[oid]
    if length is None:
        if i >= len(payload):
            raise DecodeError(f"object 0x{oid:02X} lacks its length byte")
        length = payload[i] + 1
    return length


def _walk(payload: bytes) -> Iterator[tuple[int, bytes]]:
    """(object id, its bytes) for each object of a payload."""
    i = 0
    while i < len(payload):
        oid = payload[i]
        length = _length(oid, payload, i + 1)
        raw = payload[i + 1 : i + 1 + length]
        if len(raw) < length:
            raise DecodeError(f"object 0x{oid:02X} is truncated")
        i += 1 + length
        yield oid, raw


def _measurement(oid: int, raw: bytes) -> tuple[str, Value]:
    if oid in BINARY:
        return BINARY[oid], bool(raw[0])
    name, _, signed, factor = OBJECTS[oid]
    return name, scaled(int.from_bytes(raw, "little", signed=signed), factor)


def _events(kind: str, raws: list[bytes]) -> dict[str, Value]:
    """One event per button (dimmer) object, in order: `button` alone, else `button_1`,
    `button_2`, ... as Home Assistant names them, so each physical button keeps its name.
    "No event" (0x00) and unknown event types publish nothing."""
    events: dict[str, Value] = {}
    names = BUTTON_EVENTS if kind == "button" else DIMMER_EVENTS
    for n, raw in enumerate(raws, 1):
        key = kind if len(raws) == 1 else f"{kind}_{n}"
        event = names.get(raw[0])
        if event is None:
            continue
        events[key] = event
        if kind == "dimmer":
            events[f"{key}_steps"] = raw[1]
    return events


def _objects(payload: bytes, counter: int | None) -> Decoded:
    values: dict[str, Value] = {}
    triggers: dict[int, list[bytes]] = {BUTTON: [], DIMMER: []}
    packet_id = None
    for oid, raw in _walk(payload):
        if oid == PACKET_ID:
            packet_id = raw[0]
        elif oid in triggers:
            triggers[oid].append(raw)
        elif oid not in SKIPPED:
            name, value = _measurement(oid, raw)
            key, n = name, 2
            while key in values:
                key, n = f"{name}_{n}", n + 1
            values[key] = value
    if not values and not triggers[BUTTON] and not triggers[DIMMER]:
        raise DecodeError("BTHome advertisement without sensor values or events")
    events = {**_events("button", triggers[BUTTON]), **_events("dimmer", triggers[DIMMER])}
    return Decoded(values, events, packet_id, counter)


def parse_bthome(advert: Advert, bindkey: bytes | None = None) -> Decoded:
    """Values, events (buttons, dimmers), the packet id and, when encrypted, the counter."""
    data = service_data(advert, UUID16, "BTHome")
    if not data:
        raise DecodeError("empty BTHome service data")
    info = data[0]
    if info >> 5 != 2:
        raise DecodeError(f"BTHome version {info >> 5} is not supported (only v2)")
    if not info & _ENCRYPTED:
        return _objects(data[1:], None)
    if bindkey is None:
        raise DecodeError("encrypted BTHome advertisement: set the device's bindkey")
    return _objects(*_decrypt(advert, data, bindkey))


def decode_bthome(advert: Advert, bindkey: bytes | None = None) -> dict[str, Value]:
    """Values and events in one mapping (for `gateway scan` and tests)."""
    decoded = parse_bthome(advert, bindkey)
    return {**decoded.values, **decoded.events}


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
