"""Checksums of binary frames: pure functions from bytes to an int, and their sizes on the wire.

`crc16_modbus` is CRC-16/MODBUS (poly 0x8005 reflected, init 0xFFFF): the check value of
b"123456789" is 0x4B37. On the wire Modbus sends it low byte first, so its natural byte order is
little-endian; the others are big-endian (the usual order of a 16-bit sum).

A framer hunting for a frame checks a candidate at every start marker, and candidates overlap:
a pass over each would cost bytes x frame size (a flood of false markers announcing 60 KB frames
took minutes). `Checksum.running()` keeps the running state after every byte of the framer's
buffer instead, each byte processed once, and gives the checksum of any range from two states:
a difference for the sums, and for the CRC (linear over GF(2)) the state at the range's start
carried over the range's length by precomputed tables, O(log length).
"""

from __future__ import annotations

import operator
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from itertools import accumulate
from typing import Literal, Protocol

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


class RunningChecksum(Protocol):
    """The checksum's state after each byte of a buffer: `of(start, end)` is the checksum of
    the bytes `[start:end]` without a pass over them."""

    @property
    def covered(self) -> int:
        """Bytes of the buffer taken so far."""
        ...

    def extend(self, data: Iterable[int]) -> None:
        """Take the buffer's next bytes."""
        ...

    def drop(self, n: int) -> None:
        """The buffer lost its first `n` bytes (the framer deleted them)."""
        ...

    def of(self, start: int, end: int) -> int: ...


class _States:
    """States indexed by buffer position (`states[i]`: after `i` bytes); the origin is any
    state, since a range only depends on the two states around it."""

    def __init__(self, typecode: str, origin: int) -> None:
        self._typecode = typecode
        self._origin = origin
        self.states = array(typecode, [origin])

    @property
    def covered(self) -> int:
        return len(self.states) - 1

    def drop(self, n: int) -> None:
        if n <= self.covered:
            del self.states[:n]
        else:  # bytes never taken went too: start afresh at the new front
            self.states = array(self._typecode, [self._origin])


class _RunningSum(_States):
    """Prefix sums (xor: prefix xors): a range is a difference of two. `accumulate` runs in C."""

    def __init__(self, mask: int, xor: bool) -> None:
        # Sums grow without a mask (the mask is applied to a difference): 8 bytes a state
        # hold 2**56 bytes of input; xors stay below 256.
        super().__init__("B" if xor else "Q", 0)
        self._mask = mask
        self._xor = xor

    def extend(self, data: Iterable[int]) -> None:
        op = operator.xor if self._xor else operator.add
        states = accumulate(data, op, initial=self.states[-1])
        next(states)  # the initial state is there already
        self.states.extend(states)

    def of(self, start: int, end: int) -> int:
        a, b = self.states[start], self.states[end]
        return a ^ b if self._xor else (b - a) & self._mask


class _RunningCrc16Modbus(_States):
    def __init__(self) -> None:
        super().__init__("H", 0xFFFF)

    def extend(self, data: Iterable[int]) -> None:
        crc, table, states = self.states[-1], _CRC16_MODBUS, self.states
        append = states.append
        for byte in data:
            crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
            append(crc)

    def of(self, start: int, end: int) -> int:
        # The table step is linear in the state and the byte: the state after a range from
        # state s is A^n(s) ^ (the range from state 0), A: one zero byte. Hence
        # crc(0xFFFF, range) = states[end] ^ A^n(states[start] ^ 0xFFFF).
        value, n = self.states[start] ^ 0xFFFF, end - start
        for low, high in _zero_byte_powers():
            if not n:
                break
            if n & 1:
                value = low[value & 0xFF] ^ high[value >> 8]
            n >>= 1
        if n:  # beyond the tables (2**17 bytes): one zero byte at a time
            for _ in range(n << len(_zero_byte_powers())):
                value = (value >> 8) ^ _CRC16_MODBUS[value & 0xFF]
        return self.states[end] ^ value


@cache
def _zero_byte_powers() -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
    """A^(2^j) for j < 17, A the CRC state's step over a zero byte, as two lookup tables each
    (low and high byte of the state). Built on first use: about 9,000 entries."""
    columns = [(1 << i >> 8) ^ _CRC16_MODBUS[(1 << i) & 0xFF] for i in range(16)]  # A(e_i)
    powers = []
    for _ in range(17):  # 2**16 < 65,536 + header and checksum < 2**17
        low, high = [0] * 256, [0] * 256
        for b in range(1, 256):
            bit = (b & -b).bit_length() - 1
            low[b] = low[b & (b - 1)] ^ columns[bit]
            high[b] = high[b & (b - 1)] ^ columns[bit + 8]
        powers.append((tuple(low), tuple(high)))
        columns = [low[c & 0xFF] ^ high[c >> 8] for c in columns]  # A^(2^(j+1))(e_i)
    return tuple(powers)


@dataclass(frozen=True, slots=True)
class Checksum:
    name: ChecksumName
    size: int  # bytes on the wire
    compute: Callable[[bytes], int]
    endian: Endian
    running: Callable[[], RunningChecksum]

    def encode(self, data: bytes) -> bytes:
        """The checksum of `data` as it appears on the wire."""
        return self.wire(self.compute(data))

    def wire(self, value: int) -> bytes:
        return value.to_bytes(self.size, self.endian)


_ALGORITHMS: dict[
    ChecksumName, tuple[int, Callable[[bytes], int], Endian, Callable[[], RunningChecksum]]
] = {
    "xor": (1, xor8, "big", lambda: _RunningSum(0xFF, xor=True)),
    "sum": (1, sum8, "big", lambda: _RunningSum(0xFF, xor=False)),
    "sum16": (2, sum16, "big", lambda: _RunningSum(0xFFFF, xor=False)),
    "crc16_modbus": (2, crc16_modbus, "little", _RunningCrc16Modbus),
}


def checksum(name: ChecksumName, endian: Endian | None = None) -> Checksum:
    """The named checksum; `endian` None keeps its natural byte order (see the module doc)."""
    size, compute, natural, running = _ALGORITHMS[name]
    return Checksum(name, size, compute, endian or natural, running)
