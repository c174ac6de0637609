"""Passing and dropping: delta, throttle and skip_initial let a sample through as it is, or
drop it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gateway.models import Value
from gateway.streams.filters.base import Real, Sample, Untimed, is_number, same_value


@dataclass(frozen=True, slots=True)
class Threshold:
    """A change threshold: `amount` itself, or (relative) that fraction of the reference."""

    amount: float
    relative: bool = False

    def of(self, reference: Real) -> float:
        return abs(self.amount * reference) if self.relative else self.amount


_ANY_CHANGE = Threshold(0.0)


class Delta(Untimed):
    """Pass a number when it differs from the last passed value by more than `minimum` (and by
    no more than `maximum`): ESPHome's `delta > min && delta <= max`, strict below. A first
    value always passes; values that are not numbers pass when they differ from the last."""

    __slots__ = ("_last", "_passed", "maximum", "minimum")
    name = "delta"

    def __init__(self, minimum: Threshold = _ANY_CHANGE, maximum: Threshold | None = None) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self._passed = False
        self._last: Value | None = None

    def feed(self, sample: Sample, now: float) -> list[Sample]:
        value, last = sample.value, self._last
        if isinstance(value, float) and not math.isfinite(value):
            return []
        if self._passed and is_number(value) and is_number(last):
            change = abs(value - last)
            high = math.inf if self.maximum is None else self.maximum.of(last)
            if not self.minimum.of(last) < change <= high:
                return []
        elif self._passed and same_value(value, last):
            return []
        self._passed, self._last = True, value
        return [sample]


class Throttle(Untimed):
    """At most one value per `period`: a value passes when `period` has elapsed since the last
    one that passed (ESPHome: `now - last_input_ >= min_time_between_inputs_`)."""

    __slots__ = ("_last", "period")
    name = "throttle"

    def __init__(self, period: float) -> None:
        self.period = period
        self._last: float | None = None

    def feed(self, sample: Sample, now: float) -> list[Sample]:
        if self._last is not None and now - self._last < self.period:
            return []
        self._last = now
        return [sample]


class SkipInitial(Untimed):
    """Drop the first `count` samples of any kind (a sensor's settling readings)."""

    __slots__ = ("_left",)
    name = "skip_initial"

    def __init__(self, count: int) -> None:
        self._left = count

    def feed(self, sample: Sample, now: float) -> list[Sample]:
        if self._left > 0:
            self._left -= 1
            return []
        return [sample]
