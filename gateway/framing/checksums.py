"""Checksums of binary frames: pure functions from bytes to an int, and their sizes on the wire.

`crc16_modbus` is CRC-16/MODBUS (poly 0x8005 reflected, init 0xFFFF): the check value of
b"123456789" is 0x4B37. On the wire Modbus sends it low byte first, so its natural byte order is
little-endian; the others are big-endian (the usual order of a 16-bit sum).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Endian = Literal["big", "little"]
ChecksumName = Literal["xor", "sum", "sum16", "crc16_modbus"]


def xor8(data: bytes) -> int:
    value = 0
    for byte in data:
        value ^= byte
    return value


def sum8(data: bytes) -> int:
    return sum(data) & 0xFF


def sum16(data: bytes) -> int:
    return sum(data) & 0xFFFF


def _crc16_modbus_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC16_MODBUS = _crc16_modbus_table()


def crc16_modbus(data: bytes) -> int:
    crc = 0xFFFF
    table = _CRC16_MODBUS
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


@dataclass(frozen=True, slots=True)
class Checksum:
    name: ChecksumName
    size: int  # bytes on the wire
    compute: Callable[[bytes], int]
    endian: Endian

    def encode(self, data: bytes) -> bytes:
        """The checksum of `data` as it appears on the wire."""
        return self.compute(data).to_bytes(self.size, self.endian)


_ALGORITHMS: dict[ChecksumName, tuple[int, Callable[[bytes], int], Endian]] = {
    "xor": (1, xor8, "big"),
    "sum": (1, sum8, "big"),
    "sum16": (2, sum16, "big"),
    "crc16_modbus": (2, crc16_modbus, "little"),
}


def checksum(name: ChecksumName, endian: Endian | None = None) -> Checksum:
    """The named checksum; `endian` None keeps its natural byte order (see the module doc)."""
    size, compute, natural = _ALGORITHMS[name]
    return Checksum(name, size, compute, endian or natural)
