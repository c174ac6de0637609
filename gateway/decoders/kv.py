"""`kv`: `temp=21.5,hum=40` (pairs separated by commas, semicolons or spaces)."""

from __future__ import annotations

import re

from gateway.decoders.values import parse_number
from gateway.errors import DecodeError
from gateway.models import Value

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_SEP = re.compile(r"[,;\s]+")
_WORD = re.compile(r"^[A-Za-z0-9_.:+-]{1,64}$")


def parse_scalar(text: str) -> Value:
    """Numbers become int or float, true/false become bools, plain words stay strings."""
    if (number := parse_number(text)) is not None:
        return number
    lowered = text.lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    if _WORD.match(text):
        return text
    raise DecodeError(f"value {text!r} is neither a number nor a plain word")


def decode_kv(frame: bytes) -> dict[str, Value]:
    try:
        text = frame.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise DecodeError(f"not UTF-8 text: {exc.reason}") from exc
    fields: dict[str, Value] = {}
    for pair in _SEP.split(text):
        if not pair:
            continue
        key, sep, raw = pair.partition("=")
        if not sep or not _KEY.match(key) or not raw:
            raise DecodeError(f"not a key=value pair: {pair[:40]!r}")
        fields[key] = parse_scalar(raw)
    if not fields:
        raise DecodeError("no key=value pairs")
    return fields
