"""The timers: heartbeat, timeout, debounce emit on `tick` as well as (or instead of) on `feed`."""

from __future__ import annotations

import math

from gateway.models import Value
from gateway.streams.filters.base import Sample


class Heartbeat:
    """Re-emit the last sample every `period`, changed or not; the beat starts one period after
    the first sample. Optimistic: also pass each sample at once (else samples only leave on the
    beat)."""

    __slots__ = ("_due", "_last", "optimistic", "period")
    name = "heartbeat"
    timed = True

    def __init__(self, period: float, *, optimistic: bool = False) -> None:
        if period <= 0:
            raise ValueError("period must be > 0")
        self.period = period
        self.optimistic = optimistic
        self._last: Sample | None = None
        self._due: float | None = None

    def feed(self, sample: Sample, now: float) -> list[Sample]:
        self._last = sample
        if self._due is None:
            self._due = now + self.period
        return [sample] if self.optimistic else []

    def deadline(self) -> float | None:
        return self._due

    def tick(self, now: float, wall: float) -> list[Sample]:
        if self._due is None or self._last is None or now < self._due:
            return []
        # One beat however late the tick: a stalled loop must not emit a burst.
        beats = math.floor((now - self._due) / self.period) + 1
        self._due += beats * self.period
        return [self._last]


class Timeout:
    """Pass samples on; after `period` without one, emit `value` (or, with `last`, the last
    value) once, at `wall`, until the next sample re-arms it."""

    __slots__ = ("_due", "_last", "last", "period", "value")
    name = "timeout"
    timed = True

    def __init__(self, period: float, value: Value | None = None, *, last: bool = False) -> None:
        if period <= 0:
            raise ValueError("period must be > 0")
        self.period = period
        self.value = value
        self.last = last
        self._due: float | None = None
        self._last: Value | None = None

    def feed(self, sample: Sample, now: float) -> list[Sample]:
        self._due = now + self.period
        self._last = sample.value
        return [sample]

    def deadline(self) -> float | None:
        return self._due

    def tick(self, now: float, wall: float) -> list[Sample]:
        if self._due is None or now < self._due:
            return []
        self._due = None
        return [Sample(self._last if self.last else self.value, wall)]


class Debounce:
    """Emit a sample only once `period` passed without a newer one (the last of a burst, with
    its own ts)."""

    __slots__ = ("_due", "_pending", "period")
    name = "debounce"
    timed = True

    def __init__(self, period: float) -> None:
        if period <= 0:
            raise ValueError("period must be > 0")
        self.period = period
        self._pending: Sample | None = None
        self._due: float | None = None

    def feed(self, sample: Sample, now: float) -> list[Sample]:
        self._pending = sample
        self._due = now + self.period
        return []

    def deadline(self) -> float | None:
        return self._due

    def tick(self, now: float, wall: float) -> list[Sample]:
        if self._due is None or self._pending is None or now < self._due:
            return []
        pending, self._pending, self._due = self._pending, None, None
        return [pending]
