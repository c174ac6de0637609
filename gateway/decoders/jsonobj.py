"""`json`: one JSON object per frame; nested objects are flattened with `_` (`{"a":{"b":1}}` ->
`a_b`). Lists and nulls are skipped: they have no single sensor value."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from gateway.decoders.values import fits_float
from gateway.errors import DecodeError
from gateway.limits import JSON_MAX_DEPTH as _MAX_DEPTH
from gateway.models import Value

_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _flatten(obj: dict[str, Any], prefix: str, out: dict[str, Value], depth: int) -> None:
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if not _KEY.fullmatch(name):  # match() would accept a trailing newline ($)
            raise DecodeError(f"key {name[:40]!r} cannot be a topic level")
        if isinstance(value, dict) and depth < _MAX_DEPTH:
            _flatten(value, f"{name}_", out, depth + 1)
        elif isinstance(value, bool | str):
            out[name] = value
        elif isinstance(value, int):
            out[name] = fits_float(value, name)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise DecodeError(f"{name} is not a finite number")
            out[name] = value


def decode_json(frame: bytes) -> dict[str, Value]:
    try:
        # ValueError includes an int of over 4300 digits (Python's bound on int parsing)
        obj = json.loads(frame)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DecodeError(f"not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise DecodeError(f"expected a JSON object, got {type(obj).__name__}")
    out: dict[str, Value] = {}
    _flatten(obj, "", out, 0)
    if not out:
        raise DecodeError("no scalar values in the object")
    return out
