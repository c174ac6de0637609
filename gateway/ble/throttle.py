"""Unchanged values are not republished more often than `republish_after`.

A sensor's value is due when it differs from the last one published or when `republish_after`
has passed since; `sticky` sensors (RSSI, which jitters on every advert) are due only by time.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from gateway.models import Value


class Throttle:
    def __init__(self, interval: float, sticky: Collection[str] = ()) -> None:
        self.interval = interval
        self.sticky = frozenset(sticky)
        self._last: dict[str, tuple[Value, float]] = {}

    def due(self, values: Mapping[str, Value], now: float) -> dict[str, Value]:
        """The values to publish now (and remember them as published)."""
        out: dict[str, Value] = {}
        for name, value in values.items():
            last = self._last.get(name)
            changed = last is None or (name not in self.sticky and last[0] != value)
            if changed or last is None or now - last[1] >= self.interval:
                out[name] = value
                self._last[name] = (value, now)
        return out
