"""Text to a sensor value, for decoders whose fields are free text (csv columns, regex groups)."""

from __future__ import annotations

import math

from gateway.errors import DecodeError
from gateway.limits import MAX_TEXT
from gateway.models import Value


def parse_number(text: str) -> int | float | None:
    """An int or a finite float; None when the text is not a number at all. NaN and inf are
    errors: they have no JSON form."""
    if text.isdecimal() and len(text) < 19:  # the common cases first, without an exception
        return int(text)
    if "." not in text and "e" not in text and "E" not in text:  # int() accepts none of them
        try:
            return int(text)
        except ValueError:
            pass
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
