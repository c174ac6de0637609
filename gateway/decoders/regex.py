"""`regex`: the named groups of a regular expression searched in the frame are the sensors.

The pattern runs on RE2 (`gateway/patterns.py`): linear in the frame, so no line a device sends
can hold the event loop, whatever the pattern."""

from __future__ import annotations

from gateway.config import RegexDecoder
from gateway.decoders.values import decode_text, parse_value
from gateway.errors import DecodeError
from gateway.models import Value
from gateway.patterns import compile_linear


class RegexGroupDecoder:
    def __init__(self, spec: RegexDecoder, encoding: str = "utf-8") -> None:
        self._pattern = compile_linear(spec.pattern)  # checked when the config was loaded
        self._encoding = encoding

    def __call__(self, frame: bytes) -> dict[str, Value]:
        text = decode_text(frame, self._encoding)
        match = self._pattern.search(text)
        if match is None:
            raise DecodeError("the pattern does not match")
        fields: dict[str, Value] = {}
        for name, group in match.groupdict().items():
            # A group in an alternative that did not take part is None: no value this time.
            if group is not None and (value := parse_value(group)) is not None:
                fields[name] = value
        if not fields:
            raise DecodeError("the pattern matched, but no named group has a value")
        return fields
