"""What every framer shares: error counts by reason, taken by the link after each feed."""

from __future__ import annotations

from collections import Counter
from typing import Protocol

_NONE: dict[str, int] = {}


class Framer(Protocol):
    """Pure, incremental: `feed` takes whatever the port delivered (any chunking) and returns the
    complete frames; it never raises on any input and holds a bounded number of bytes."""

    errors: Counter[str]

    def feed(self, data: bytes) -> list[bytes]: ...

    def reset(self) -> int:
        """Forget an unfinished frame (before a poll's query, say); returns the bytes dropped."""
        ...

    def take_errors(self) -> dict[str, int]:
        """Errors counted since the last call, by reason (cheap when there were none)."""
        ...


class ErrorCounts:
    """`errors` holds the totals by reason (`oversized`, `resync`, `checksum`, `length`);
    `take_errors()` hands out what is new since the last call, for the link's metrics."""

    def __init__(self) -> None:
        self.errors: Counter[str] = Counter()
        self._new: dict[str, int] = {}

    def _count(self, reason: str, n: int = 1) -> None:
        self.errors[reason] += n
        self._new[reason] = self._new.get(reason, 0) + n

    def take_errors(self) -> dict[str, int]:
        if not self._new:
            return _NONE
        new, self._new = self._new, {}
        return new
