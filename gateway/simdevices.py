"""The devices `gateway simulate serial` plays: what they send, and how the meter answers.

Line devices are functions (rng, n) -> bytes for their n-th report; `Meter` answers poll frames.
Everything here is pure (apart from the random walks' state), so tests can check that what the
simulator sends is what the gateway's framers and decoders expect.
"""

from __future__ import annotations

import json
import math
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.framing.checksums import checksum, xor8
from gateway.framing.packet import LengthField, PacketFramer

LineProfile = Callable[[random.Random, int], bytes]


@dataclass(slots=True)
class _Walk:
    """A bounded random walk: sensor values that drift like real ones."""

    value: float
    step: float
    low: float
    high: float

    def next(self, rng: random.Random) -> float:
        self.value = min(self.high, max(self.low, self.value + rng.uniform(-self.step, self.step)))
        return self.value


@dataclass(slots=True)
class KvSensor:
    """A temperature/humidity sensor: `temp=21.03,hum=40.2,seq=7`."""

    temp: _Walk = field(default_factory=lambda: _Walk(21.0, 0.1, 5.0, 35.0))
    hum: _Walk = field(default_factory=lambda: _Walk(40.0, 0.3, 10.0, 90.0))

    def __call__(self, rng: random.Random, n: int) -> bytes:
        t, h = self.temp.next(rng), self.hum.next(rng)
        return f"temp={t:.2f},hum={h:.1f},seq={n}\n".encode()


def json_sensor(rng: random.Random, n: int) -> bytes:
    """A particulate sensor: `{"pm25": 12.3, "pm10": 20.1, "seq": 7}`."""
    values = {"pm25": round(rng.uniform(2, 30), 1), "pm10": round(rng.uniform(5, 50), 1)}
    return (json.dumps({**values, "seq": n}) + "\n").encode()


def nmea_sentence(body: str) -> bytes:
    """`GPGGA,...` -> `$GPGGA,...*hh\\r\\n` with its checksum."""
    return f"${body}*{xor8(body.encode('ascii')):02X}\r\n".encode("ascii")


def _nmea_coordinate(value: float, degree_digits: int, hemispheres: str) -> str:
    degrees, minutes = divmod(abs(value) * 60, 60)
    return f"{int(degrees):0{degree_digits}d}{minutes:07.4f},{hemispheres[value < 0]}"


@dataclass(slots=True)
class GpsReceiver:
    """A GPS receiver walking around Munich: GGA, RMC and a GSV (which the gateway ignores)
    once per fix. Position moves at ~1.4 m/s on a slowly turning course."""

    lat: float = 48.1173
    lon: float = 11.5167
    course: float = 84.0  # degrees
    alt: _Walk = field(default_factory=lambda: _Walk(545.4, 0.3, 500.0, 600.0))

    def __call__(self, rng: random.Random, n: int) -> bytes:
        self.course = (self.course + rng.uniform(-5, 5)) % 360
        speed = 1.4 + rng.uniform(-0.2, 0.2)  # m/s
        self.lat += speed * math.cos(math.radians(self.course)) / 111_320
        self.lon += (
            speed
            * math.sin(math.radians(self.course))
            / (111_320 * math.cos(math.radians(self.lat)))
        )
        now = time.gmtime()
        hms, date = time.strftime("%H%M%S.00", now), time.strftime("%d%m%y", now)
        lat, lon = _nmea_coordinate(self.lat, 2, "NS"), _nmea_coordinate(self.lon, 3, "EW")
        satellites = 7 + n % 3
        return b"".join(
            [
                nmea_sentence(
                    f"GPGGA,{hms},{lat},{lon},1,{satellites:02d},0.9,{self.alt.next(rng):.1f},M,"
                    "46.9,M,,"
                ),
                nmea_sentence(
                    f"GPRMC,{hms},A,{lat},{lon},{speed / 0.514444:05.1f},{self.course:05.1f},"
                    f"{date},003.1,W"
                ),
                nmea_sentence("GPGSV,1,1,01,07,79,048,42"),
            ]
        )


# -- the binary meter ---------------------------------------------------------------------------

#: The meter's frames: 0xAA, a length byte, the payload, CRC-16/MODBUS (little-endian) over the
#: length byte and the payload.
METER_FRAMING = {"type": "binary", "start": "aa", "length_size": 1, "checksum": "crc16_modbus"}
METER_READ = 0x01  # command byte of the poll; the answer's first payload byte is 0x81
METER_FORMAT = ">BHHIh"  # 0x81, voltage (0.1 V), current (0.01 A), energy (Wh), power (W)
#: The `decoder:` of a device entry that reads the meter (tests and benches configure it so).
METER_DECODER = {
    "type": "struct",
    "format": METER_FORMAT,
    "fields": [
        None,
        {"name": "voltage", "scale": 0.1, "unit": "V"},
        {"name": "current", "scale": 0.01, "unit": "A"},
        {"name": "energy", "unit": "Wh"},
        {"name": "power", "unit": "W"},
    ],
}
_CRC = checksum("crc16_modbus")


def meter_frame(payload: bytes) -> bytes:
    body = bytes([len(payload)]) + payload
    return b"\xaa" + body + _CRC.encode(body)


METER_QUERY = meter_frame(bytes([METER_READ]))  # aa 01 01 c1 e0


@dataclass(slots=True)
class Meter:
    """An energy meter that answers each read request with one binary frame.

    `miss_every` N > 0 leaves every N-th request unanswered, as a busy or flaky meter does."""

    miss_every: int = 0
    requests: int = 0
    energy: float = 12_345.0  # Wh
    voltage: _Walk = field(default_factory=lambda: _Walk(230.0, 0.5, 215.0, 245.0))
    current: _Walk = field(default_factory=lambda: _Walk(4.0, 0.2, 0.0, 16.0))
    _framer: PacketFramer = field(
        default_factory=lambda: PacketFramer(b"\xaa", length=LengthField(1), checksum=_CRC)
    )

    def reading(self, rng: random.Random) -> bytes:
        volts, amps = self.voltage.next(rng), self.current.next(rng)
        self.energy += volts * amps / 3600  # one second's worth
        payload = struct.pack(
            METER_FORMAT,
            0x80 | METER_READ,
            round(volts * 10),
            round(amps * 100),
            int(self.energy),
            round(volts * amps),
        )
        return meter_frame(payload)

    def receive(self, data: bytes, rng: random.Random) -> list[bytes]:
        """The frames to send back for what the gateway wrote."""
        answers = []
        for request in self._framer.feed(data):
            if request != bytes([METER_READ]):
                continue  # a command this meter does not know: real meters stay silent
            self.requests += 1
            if self.miss_every and self.requests % self.miss_every == 0:
                continue
            answers.append(self.reading(rng))
        return answers


def line_profiles() -> dict[str, LineProfile]:
    """Fresh devices (each with its own random-walk state)."""
    return {"kv": KvSensor(), "json": json_sensor, "nmea": GpsReceiver()}


PROFILES = ("kv", "json", "nmea", "meter")
