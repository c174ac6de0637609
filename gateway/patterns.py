"""Users' regular expressions (the `regex` decoder) on RE2: matching in linear time.

Python's `re` backtracks: `T=(?P<v>(\\d+)+)C` takes minutes to fail on a 30-byte line, and a
decoder runs in the port's callback, on the event loop every link shares. Nor can a match
in `re` be interrupted (it holds the GIL). RE2 (google-re2) never backtracks: its time is linear
in the line, whatever the pattern. What it gives up is what needs backtracking: backreferences
(`\\1`, `(?P=name)`) and lookaround (`(?=...)`, `(?!...)`, `(?<=...)`, `(?<!...)`); a pattern
using them is refused when the config is loaded, with that reason. Named groups `(?P<name>...)`,
classes, anchors, `(?i)` and the rest of the usual syntax are the same; `\\d`, `\\w` and `\\s`
match ASCII only, and `\\Z` is written `\\z`.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from typing import Protocol


class Match(Protocol):
    def groupdict(self) -> dict[str, str | None]: ...


class Pattern(Protocol):
    @property
    def groupindex(self) -> Mapping[str, int]: ...

    def search(self, text: str) -> Match | None: ...


_UNSUPPORTED = (
    ("invalid escape sequence: \\", "backreferences (\\1), nor Python's \\Z (write \\z)"),
    ("operator: (?P", "backreferences ((?P=name))"),
    ("(?=", "lookaround ((?=...))"),
    ("(?!", "lookaround ((?!...))"),
    ("(?<", "lookaround ((?<=...), (?<!...))"),
)


def compile_linear(pattern: str) -> Pattern:
    """The pattern compiled by RE2; ValueError saying why if RE2 cannot run it."""
    try:
        import re2  # noqa: PLC0415 - only gateways with a regex decoder load it
    except ImportError:
        # google-re2 ships prebuilt for x86_64 and aarch64 only (pyproject.toml installs it
        # there); elsewhere (32-bit ARM, musl) it must be built from source. Without it no user
        # pattern runs: Python's `re` could hold the event loop for minutes on one line.
        raise ValueError(
            f"the regex decoder needs google-re2, which has no prebuilt package for "
            f"{platform.machine()}: build it (apt install libre2-dev pybind11-dev, then pip "
            f"install google-re2), or use the csv, kv or struct decoder: see docs/serial.md"
        ) from None
    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern to stderr
    try:
        compiled: Pattern = re2.compile(pattern, options)
    except re2.error as exc:
        raise ValueError(_explain(exc)) from None
    return compiled


def _explain(exc: Exception) -> str:
    reason = exc.args[0] if exc.args else str(exc)
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    text = f"not a regular expression RE2 can run: {reason}"
    for marker, what in _UNSUPPORTED:
        if marker in reason:
            return (
                f"{text}. The gateway matches patterns with RE2, in linear time (no "
                f"backtracking), which has no {what}: see docs/serial.md"
            )
    return text
