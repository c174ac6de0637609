"""What every filter shares: `Sample`, the `Filter` protocol, and the rules for values.

Values. ESPHome's sensors carry one float; our readings are numbers, strings or bools, and null
(`None`, what `timeout` publishes). Numeric filters (multiply, offset, calibrate_linear, clamp,
round, the windows, throttle_average, delta with a number) pass anything that is not a number
on unchanged; bool is not a number here. A NaN or infinite float is dropped by them, and a
result that is not finite is dropped rather than published. Types: a filter that selects a
value (min, max, quantile, clamp, an int through round) keeps its type; int op int stays int
(multiply by 2, offset by 1: Python's arithmetic); everything computed otherwise is a float.
Timestamps: a value that passes keeps its `ts`; an aggregate carries the `ts` of the newest
input in it; heartbeat re-emits the last sample as it was; timeout emits a new sample at `wall`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, TypeGuard

from gateway.models import Value

Real = int | float


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of a sensor stream."""

    value: Value | None  # None = null (what `timeout` publishes)
    ts: float  # epoch seconds: when the value was read


class Filter(Protocol):
    name: str  # the config key, e.g. "delta", "or"
    timed: bool  # True if it ever uses deadline()/tick()

    def feed(self, sample: Sample, now: float) -> list[Sample]:
        """`now` is monotonic seconds; `[]` means dropped or absorbed."""
        ...

    def deadline(self) -> float | None:
        """The monotonic time `tick()` should run next; None: no timer pending."""
        ...

    def tick(self, now: float, wall: float) -> list[Sample]:
        """Emit what is due at `now`; `wall` (epoch seconds) is the ts of new samples."""
        ...


def is_number(value: object) -> TypeGuard[Real]:
    """int or float, but not bool (a switch is not a quantity)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def same_value(a: Value | None, b: Value | None) -> bool:
    """Equality without Python's `True == 1`: numbers compare by value (85 == 85.0), anything
    else only with its own type."""
    if is_number(a) and is_number(b):
        return a == b
    return type(a) is type(b) and a == b


def number_or_verdict(sample: Sample) -> Real | list[Sample]:
    """The finite number a numeric filter works on, or its verdict on anything else: a
    non-number passes unchanged, a NaN or infinity is dropped."""
    value = sample.value
    kind = type(value)  # the exact types first: this runs for every value of every filter
    if kind is float:
        return value if value - value == 0.0 else []  # type: ignore[operator,return-value]
    if kind is int:
        return value  # type: ignore[return-value]
    if not is_number(value):
        return [sample]
    if isinstance(value, float) and not math.isfinite(value):
        return []
    return value


def finite(value: Real, ts: float) -> list[Sample]:
    """A computed result, unless it overflowed to infinity or NaN: that is dropped."""
    if type(value) is float and value - value != 0.0:  # inf - inf and nan - nan are nan
        return []
    return [Sample(value, ts)]


class Untimed:
    """A filter without a timer."""

    __slots__ = ()
    timed = False

    def deadline(self) -> float | None:
        return None

    def tick(self, now: float, wall: float) -> list[Sample]:
        return []
