"""`nmea`: NMEA 0183 sentences from GPS receivers; GGA and RMC, checksum required and checked.

    $GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47
      -> lat 48.1173, lon 11.516667, alt 545.4, fix_quality 1, satellites 8, hdop 0.9
    $GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A
      -> lat, lon, speed 11.523 (m/s, from 22.4 knots), course 84.4

Any talker (GP, GN, GL, GA, BD, ...). Other sentence types (GSV, GSA, VTG, ...) give no values
and are not errors: receivers send many of them. An RMC whose status is not A (valid), and the
position of a GGA without a fix, are left out rather than published as zeros.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from gateway.errors import DecodeError
from gateway.limits import MAX_SENTENCE
from gateway.models import Value

KNOT = 0.514444  # m/s

UNITS: dict[str, str] = {"lat": "°", "lon": "°", "alt": "m", "speed": "m/s", "course": "°"}


def _checked_fields(frame: bytes) -> list[str]:
    if len(frame) > MAX_SENTENCE:
        raise DecodeError(f"{len(frame)} bytes is too long for an NMEA sentence")
    try:
        text = frame.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise DecodeError("not ASCII: not an NMEA sentence") from exc
    if not text.startswith("$"):
        raise DecodeError("an NMEA sentence starts with $")
    body, star, given = text[1:].rpartition("*")
    if not star:
        raise DecodeError("no *checksum at the end of the sentence")
    try:
        expected = int(given, 16) if len(given) == 2 else -1
    except ValueError:
        expected = -1
    if expected < 0:
        raise DecodeError(f"checksum {given[:8]!r} is not two hex digits")
    actual = 0
    for char in body.encode("ascii"):
        actual ^= char
    if actual != expected:
        raise DecodeError(
            f"checksum mismatch: sentence says {expected:02X}, data gives {actual:02X}"
        )
    return body.split(",")


def _coordinate(value: str, hemisphere: str, degree_digits: int, negative: str) -> float:
    """`4807.038`,`N` (ddmm.mmm) -> 48.1173; `01131.000`,`W` (dddmm.mmm) -> -11.516667."""
    if hemisphere not in ("NS" if degree_digits == 2 else "EW"):
        raise DecodeError(f"bad hemisphere {hemisphere!r}")
    head, _, _ = value.partition(".")
    if len(head) != degree_digits + 2 or not head.isdigit():
        raise DecodeError(f"bad coordinate {value!r}")
    try:
        minutes = float(value[degree_digits:])
    except ValueError as exc:
        raise DecodeError(f"bad coordinate {value!r}") from exc
    degrees = int(value[:degree_digits])
    if not 0 <= minutes < 60 or degrees > (90 if degree_digits == 2 else 180):
        raise DecodeError(f"coordinate {value!r} out of range")
    result = round(degrees + minutes / 60, 7)
    return -result if hemisphere == negative else result


def _position(fields: list[str], at: int) -> dict[str, Value]:
    lat, ns, lon, ew = fields[at : at + 4]
    if not (lat and lon):
        return {}
    return {"lat": _coordinate(lat, ns, 2, "S"), "lon": _coordinate(lon, ew, 3, "W")}


def _number(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise DecodeError(f"{name} {text[:20]!r} is not a number") from exc
    if not math.isfinite(value):
        raise DecodeError(f"{name} is not a finite number")
    return value


def _integer(text: str, name: str) -> int:
    if not text.isdigit():
        raise DecodeError(f"{name} {text[:20]!r} is not a whole number")
    return int(text)


def _gga(fields: list[str]) -> dict[str, Value]:
    if len(fields) < 10:
        raise DecodeError(f"GGA with {len(fields)} fields, expected at least 10")
    quality = _integer(fields[6], "fix quality") if fields[6] else 0
    out: dict[str, Value] = {"fix_quality": quality}
    if fields[7]:
        out["satellites"] = _integer(fields[7], "satellites")
    if quality == 0:
        return out  # no fix: whatever position fields hold is not a position
    out.update(_position(fields, 2))
    if fields[8]:
        out["hdop"] = _number(fields[8], "hdop")
    if fields[9]:
        out["alt"] = _number(fields[9], "altitude")
    return out


def _rmc(fields: list[str]) -> dict[str, Value]:
    if len(fields) < 9:
        raise DecodeError(f"RMC with {len(fields)} fields, expected at least 9")
    if fields[2] != "A":
        return {}  # V: the receiver says the data is not valid
    out = _position(fields, 3)
    if fields[7]:
        out["speed"] = round(_number(fields[7], "speed") * KNOT, 3)
    if fields[8]:
        out["course"] = _number(fields[8], "course")
    return out


_SENTENCES: dict[str, Callable[[list[str]], dict[str, Value]]] = {"GGA": _gga, "RMC": _rmc}


def decode_nmea(frame: bytes) -> dict[str, Value]:
    fields = _checked_fields(frame)
    address = fields[0]
    if address.startswith("P"):  # proprietary sentence ($PUBX, $PMTK...): not ours to read
        return {}
    handler = _SENTENCES.get(address[2:]) if len(address) == 5 else None
    return handler(fields) if handler is not None else {}
