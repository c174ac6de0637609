"""Text to a sensor value, for decoders whose fields are free text (csv columns, regex groups)."""

from __future__ import annotations

import math
import sys

from gateway.errors import DecodeError
from gateway.limits import MAX_TEXT
from gateway.models import Value

_FLOAT_MAX = sys.float_info.max


def fits_float(number: int, name: str) -> int:
    """`number` if a float can hold it. Python's ints have no bound, but a consumer's JSON
    parser, Prometheus and our own sparkline read numbers as doubles: a 400-digit int would
    raise OverflowError at each of them."""
    if -_FLOAT_MAX <= number <= _FLOAT_MAX:  # int/float comparison: exact, never overflows
        return number
    # (Not str(number) in the message: over 4300 digits, that raises ValueError.)
    raise DecodeError(f"{name}: a number of {number.bit_length()} bits does not fit a float")


def parse_number(text: str) -> int | float | None:
    """An int or a finite float; None when the text is not a number at all. NaN and inf are
    errors: they have no JSON form; so are ints beyond a float's range."""
    if text.isdecimal() and len(text) < 19:  # the common cases first, without an exception
        return int(text)
    if "." not in text and "e" not in text and "E" not in text:  # int() accepts none of them
        try:
            whole = int(text)
        except ValueError:  # not an int, or over int()'s 4300 digits: float() says inf
            pass
        else:
            return fits_float(whole, f"value {text[:20]!r}...")
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number):
        raise DecodeError(f"value {text[:40]!r} is not a finite number")
    return number


def parse_value(text: str) -> Value | None:
    """Numbers become int or float, true/false bools, anything else stays a string; empty text
    is None (no value: the sensor is skipped for this frame)."""
    text = text.strip()
    if not text:
        return None
    if (number := parse_number(text)) is not None:
        return number
    lowered = text.lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    if len(text) > MAX_TEXT:
        raise DecodeError(f"value of {len(text)} characters is too long for a sensor value")
    return text


def decode_text(frame: bytes, encoding: str) -> str:
    try:
        return frame.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DecodeError(f"not {encoding} text: {exc.reason}") from exc
