"""Pure Modbus data handling: which read requests cover a device's registers, and how
registers become values and values registers.

The conversion is our own (struct over the register bytes) rather than pymodbus's
`convert_from_registers`: that one has no byte order within a register (only word order), its
signature changed twice in the 3.x series, and a pure function here is tested without pymodbus
and also scales values back for writes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from gateway.config.modbus import MAX_READ_BITS, MAX_READ_REGISTERS, RegisterSpec
from gateway.errors import DecodeError
from gateway.models import Value

_FORMATS = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "float32": "f",
    "float64": "d",
}


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read: `count` registers (or bits) from `address`, answering for `registers`."""

    function: str
    address: int
    count: int
    registers: tuple[RegisterSpec, ...]

    @property
    def end(self) -> int:
        return self.address + self.count


def plan_reads(
    registers: Iterable[RegisterSpec],
    *,
    max_registers: int = MAX_READ_REGISTERS,
    max_bits: int = MAX_READ_BITS,
    alone: frozenset[str] = frozenset(),
) -> list[ReadRequest]:
    """The fewest requests that read every register: adjacent (or overlapping) ones of one
    function in one request, up to the protocol's limit per request. Registers named in
    `alone` get a request of their own (their block drew an exception answer: a gap in the
    slave's map must not cost its neighbours their values)."""
    by_function: dict[str, list[RegisterSpec]] = {}
    for reg in registers:
        by_function.setdefault(reg.function, []).append(reg)
    plan: list[ReadRequest] = []
    for function, regs in by_function.items():
        limit = max_bits if function in ("coil", "discrete") else max_registers
        current: ReadRequest | None = None
        for reg in sorted(regs, key=lambda r: (r.address, r.words)):
            end = reg.address + reg.words
            if (
                current is not None
                and reg.name not in alone
                and not any(r.name in alone for r in current.registers)
                and reg.address <= current.end
                and max(end, current.end) - current.address <= limit
            ):
                count = max(end, current.end) - current.address
                current = ReadRequest(function, current.address, count, (*current.registers, reg))
                plan[-1] = current
            else:
                current = ReadRequest(function, reg.address, reg.words, (reg,))
                plan.append(current)
    return plan


def _to_bytes(words: Sequence[int], reg: RegisterSpec) -> bytes:
    ordered = words if reg.word_order == "big" else list(reversed(words))
    return b"".join(w.to_bytes(2, reg.byte_order) for w in ordered)


def _to_words(data: bytes, reg: RegisterSpec) -> list[int]:
    words = [int.from_bytes(data[i : i + 2], reg.byte_order) for i in range(0, len(data), 2)]
    return words if reg.word_order == "big" else list(reversed(words))


def _scaled(raw: int | float, reg: RegisterSpec) -> Value:
    if reg.scale == 1 and reg.offset == 0:
        return raw
    # Decimal on the decimal text of scale and offset: 2301 × 0.1 is 230.1, not 230.10000000000002.
    value = float(Decimal(raw) * Decimal(repr(reg.scale)) + Decimal(repr(reg.offset)))
    if not math.isfinite(value):  # 1e308 × 10 overflows the double: JSON has no inf
        raise DecodeError(f"{reg.name}: {raw!r} scaled is not a finite number")
    return value


def decode(reg: RegisterSpec, data: Sequence[int] | Sequence[bool]) -> dict[str, Value]:
    """The values of one register entry from its words (or its bit), by sensor name."""
    kind = reg.kind
    if kind == "bool":
        return {reg.name: bool(data[0])}
    words = [int(w) for w in data]
    if kind == "bits":
        return {
            f"{reg.name}_{i}": bool(words[i // 16] >> (i % 16) & 1) for i in range(16 * len(words))
        }
    raw = _to_bytes(words, reg)
    if kind == "string":
        try:
            return {reg.name: raw.rstrip(b"\x00").decode(reg.encoding)}
        except UnicodeDecodeError as exc:
            raise DecodeError(f"{reg.name}: not {reg.encoding} text") from exc
    (value,) = struct.unpack(">" + _FORMATS[kind], raw)
    if isinstance(value, float) and not math.isfinite(value):
        raise DecodeError(f"{reg.name}: not a finite number ({value})")
    scaled = _scaled(value, reg)
    if reg.options is not None:
        # The label; a value without one is published as it is (the device knows more modes
        # than the config: visible, not lost). 1.0 finds the label of 1 (equal hashes).
        options: dict[float, str] = reg.options  # type: ignore[assignment]
        label = options.get(scaled) if isinstance(scaled, int | float) else None
        return {reg.name: scaled if label is None else label}
    return {reg.name: scaled}


_TRUE = {"1", "true", "on", "yes"}
_FALSE = {"0", "false", "off", "no"}


def parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"{text!r} is not on or off (1/0, true/false, on/off)")


def encode(reg: RegisterSpec, text: str) -> list[int] | bool:
    """A command's payload as what to write: a coil's state, or the register words (the value
    scaled back: raw = (value - offset) / scale, rounded for integer types)."""
    kind = reg.kind
    if kind == "bool":
        return parse_bool(text)
    if reg.options is not None:
        text = _option_value(reg, reg.options, text)
    if kind == "bits":
        raise ValueError(f"{reg.name} is read as bits: configure the register as uint16 to write")
    if kind == "string":
        try:
            data = text.encode(reg.encoding)
        except UnicodeEncodeError:
            raise ValueError(f"{reg.name} holds {reg.encoding} text only") from None
        if len(data) > 2 * reg.words:
            raise ValueError(f"{reg.name} holds at most {2 * reg.words} bytes")
        return _to_words(data.ljust(2 * reg.words, b"\x00"), reg)
    try:
        number = Decimal(text.strip())
        raw = (number - Decimal(repr(reg.offset))) / Decimal(repr(reg.scale))
    except (InvalidOperation, ArithmeticError):
        raise ValueError(f"{text.strip()[:40]!r} is not a number") from None
    if not raw.is_finite():
        raise ValueError(f"{text.strip()[:40]!r} is not a finite number")
    value = _float_raw(raw, kind) if kind.startswith("float") else _int_raw(raw, kind)
    if value is None:
        raise ValueError(f"{text.strip()[:40]} is out of range for {reg.name} ({kind})")
    return _to_words(struct.pack(">" + _FORMATS[kind], value), reg)


def _option_value(reg: RegisterSpec, options: dict[int, str], text: str) -> str:
    """A label as its value; a value that has a label as it is; anything else is refused (a
    register with options holds one of them)."""
    for value, label in options.items():
        if text == label:
            return str(value)
    try:
        if Decimal(text.strip()) in options:
            return text.strip()
    except (InvalidOperation, ArithmeticError, TypeError):  # TypeError: sNaN has no hash
        pass
    raise ValueError(
        f"{text.strip()[:40]!r} is not an option of {reg.name} ({', '.join(options.values())})"
    )


def _int_raw(raw: Decimal, kind: str) -> int | None:
    """`raw` rounded half-even, or None outside the type's range. The range is checked on the
    Decimal first: rounding anything over 28 digits raises InvalidOperation, and int() of a
    `1e999999` would build a million-digit integer."""
    bits = 8 * struct.calcsize(_FORMATS[kind])
    low, high = (
        (0, 2**bits - 1) if kind.startswith("u") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    )
    if not Decimal(low) - 1 < raw < Decimal(high) + 1:
        return None
    rounded = int(raw.to_integral_value(ROUND_HALF_EVEN))
    return rounded if low <= rounded <= high else None


def _float_raw(raw: Decimal, kind: str) -> float | None:
    """`raw` as the register's float, or None when it does not fit: float() turns what is
    over float64's range into inf, and struct refuses what is over float32's."""
    value = float(raw)
    if not math.isfinite(value):
        return None
    try:
        struct.pack(">" + _FORMATS[kind], value)
    except OverflowError:
        return None
    return value
