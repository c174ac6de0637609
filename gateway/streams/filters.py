"""A sensor stream's filters, with ESPHome's names and semantics: pure and synchronous.

Each filter is a small object fed one `Sample` at a time with the monotonic time `now`; it
returns what passes (`[]` when it drops or absorbs the sample). A timed filter (heartbeat,
timeout, debounce, throttle_average, or an `or` holding one) also has a `deadline()`, and its
`tick(now, wall)` emits what is due; the caller owns the clock, so tests drive a fake one.
Semantics follow ESPHome's `esphome/components/sensor/filter.cpp`; `Chain` (chain.py) links them
as ESPHome's `Filter::output` does.

Values. ESPHome's sensors carry one float; our readings are numbers, strings or bools, and null
(`None`, what `timeout` publishes). Numeric filters (multiply, offset, calibrate_linear, clamp,
round, the windows, throttle_average, delta with a number) pass anything that is not a number
on unchanged; bool is not a number here. A NaN or infinite float is dropped by them, and a
result that is not finite is dropped rather than published. Types: a filter that selects a
value (min, max, quantile, clamp, an int through round) keeps its type; int op int stays int
(multiply by 2, offset by 1: Python's arithmetic); everything computed otherwise is a float.
Timestamps: a value that passes keeps its `ts`; an aggregate carries the `ts` of the newest
input in it; heartbeat re-emits the last sample as it was; timeout emits a new sample at `wall`.

Where we deviate from ESPHome, and why:
- null is not NaN. ESPHome pushes NaN into a window (it counts towards send_every and is skipped
  in the result) and throttle_average publishes NaN for a period of only NaNs. Here null passes
  the numeric filters at once: it means "the sensor is gone", which no window should delay.
- delta compares non-numbers (and null) for equality: they pass when they differ from the last
  published value. A number after null or a string passes as a first value would.
- Timers start with the first value. ESPHome's heartbeat and throttle_average run on an interval
  from boot; a pure filter has no boot, so its beat is anchored at the first sample it sees
  (heartbeat: first beat one period later; throttle_average: periods counted from there).
- `or` emits at most one sample per value fed (ESPHome's phi node: the first branch to pass
  wins), but a branch's timer output always leaves: ESPHome lets a branch's timer through only
  if no branch has passed since the last input (`if (!this->or_parent_->has_value_)` in
  `OrFilter::PhiNode::new_value`), so after a delta passed a value, a heartbeat beside it stays
  silent until the next input, and a sensor that went quiet is never republished.
- filter_out compares exactly (ESPHome rounds both sides to the sensor's accuracy_decimals,
  which we do not have): put `round` before it for a noisy sensor.
- round rounds the shortest decimal form of the float, halves away from zero (C's roundf is
  away from zero too, but on the binary value: 2.675 -> 2.68 here, 2.67 there).
- quantile 0 is the window's minimum (ESPHome's `ceilf(n * q) - 1` underflows there).
- least squares is the ordinary fit `k = Sxy / Sxx` (ESPHome's `r * sy / sx` is the same line,
  but divides by zero when all `to` values are equal).
"""

from __future__ import annotations

import bisect
import itertools
import math
import statistics
from abc import abstractmethod
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal
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


def _number_or_verdict(sample: Sample) -> Real | list[Sample]:
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


def _finite(value: Real, ts: float) -> list[Sample]:
    """A computed result, unless it overflowed to infinity or NaN: that is dropped."""
    if type(value) is float and value - value != 0.0:  # inf - inf and nan - nan are nan
        return []
    return [Sample(value, ts)]


class _Untimed:
    """A filter without a timer."""

    __slots__ = ()
    timed = False

    def deadline(self) -> float | None:
        return None

    def tick(self, now: float, wall: float) -> list[Sample]:
        return []


# --- value transforms ----------------------------------------------------------------------


class Multiply(_Untimed):
    """Scale numbers (unit conversion, a sensor's gain)."""

    __slots__ = ("factor",)
    name = "multiply"

    def __init__(self, factor: Real) -> None:
        self.factor = factor

    def feed(self, sample: Sample, now: float) -> list[Sample]:
        x = _number_or_verdict(sample)
        if isinstance(x, list):
            return x
        try:
            return _finite(x * self.factor, sample.ts)
        except OverflowError:  # an int too large for a float factor
            return []


class Offset(_Untimed):
    """Shift numbers (a sensor's zero error)."""

    __slots__ = ("amount",)
    name = "offset"

    def __init__(self, amount: Real) -> None:
        self.amount = amount

    def feed(self, sample: Sample, now: float) -> list[Sample]:
        x = _number_or_verdict(sample)
        if isinstance(x, list):
            return x
        try:
            return _finite(x + self.amount, sample.ts)
        except OverflowError:
            return []


class CalibrateLinear(_Untimed):
    """`to = slope * from + bias` on one of several segments: segment i applies below
    `bounds[i]`, the last one above all bounds (ESPHome's `calibrate_linear_compute`)."""

    __slots__ = ("_bounds", "_lines")
    name = "calibrate_linear"

    def __init__(self, lines: Sequence[tuple[float, float]], bounds: Sequence[float] = ()) -> None:
        if len(lines) != len(bounds) + 1 or list(bounds) != sorted(bounds):
            raise ValueError("calibrate_linear needs one more line than ascending bounds")
        self._lines = tuple(lines)
        self._bounds = tuple(bounds)

    @classmethod
    def least_squares(cls, points: Sequence[tuple[float, float]]) -> CalibrateLinear:
        """The one line that best fits the points (ESPHome's default method)."""
        n = len(points)
        mean_x = math.fsum(x for x, _ in points) / n
        mean_y = math.fsum(y for _, y in points) / n
        sxx = math.fsum((x - mean_x) ** 2 for x, _ in points)
        if sxx == 0:
            raise ValueError("least squares needs at least two different `from` values")
        sxy = math.fsum((x - mean_x) * (y - mean_y) for x, y in points)
        slope = sxy / sxx
        return cls([(slope, mean_y - slope * mean_x)])

    @classmethod
    def exact(cls, points: Sequence[tuple[float, float]]) -> CalibrateLinear:
        """Segments through neighbouring points (ascending `from`); the first and last extend
        beyond the points (ESPHome's `map_linear`)."""
        if len(points) < 2 or any(a[0] >= b[0] for a, b in itertools.pairwise(points)):
            raise ValueError("exact needs two or more points in ascending, distinct `from` order")
        lines = []
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            slope = (y1 - y0) / (x1 - x0)
            lines.append((slope, y0 - slope * x0))
        return cls(lines, [x for x, _ in points[1:-1]])

    def feed(self, sample: Sample, now: float) -> list[Sample]:
        x = _number_or_verdict(sample)
        if isinstance(x, list):
            return x
        slope, bias = self._lines[bisect.bisect_right(self._bounds, x)]
        try:
            return _finite(slope * x + bias, sample.ts)
        except OverflowError:
            return []


class FilterOut(_Untimed):
    """Drop samples equal to one of `values` (any type, null included)."""

    __slots__ = ("values",)
    name = "filter_out"

    def __init__(self, values: Iterable[Value | None]) -> None:
        self.values = tuple(values)

    def feed(self, sample: Sample, now: float) -> list[Sample]:
        if any(same_value(sample.value, v) for v in self.values):
            return []
        return [sample]


class Clamp(_Untimed):
    """Numbers outside [min_value, max_value] become the bound, or are dropped."""

    __slots__ = ("ignore_out_of_range", "max_value", "min_value")
    name = "clamp"

    def __init__(
        self,
        min_value: Real | None = None,
        max_value: Real | None = None,
        *,
        ignore_out_of_range: bool = False,
    ) -> None:
        self.min_value = min_value
        self.max_value = max_value
        self.ignore_out_of_range = ignore_out_of_range

    def feed(self, sample: Sample, now: float) -> list[Sample]:
        x = _number_or_verdict(sample)
        if isinstance(x, list):
            return x
        for bound, outside in (
            (self.min_value, self.min_value is not None and x < self.min_value),
            (self.max_value, self.max_value is not None and x > self.max_value),
        ):
            if outside and bound is not None:
                return [] if self.ignore_out_of_range else [Sample(bound, sample.ts)]
        return [sample]


# Enough digits for any float with up to 15 decimals (1.8e308 has 309 integer digits).
_ROUNDING = Context(prec=340, rounding=ROUND_HALF_UP)


class Round(_Untimed):
    """Round floats to `decimals` places, halves away from zero; ints are already round."""

    __slots__ = ("_decimals", "_quantum", "_scale")
    name = "round"

    def __init__(self, decimals: int) -> None:
        if not 0 <= decimals <= 15:
            raise ValueError("round takes 0..15 decimals")
        self._decimals = decimals
        self._scale = 10.0**decimals
        self._quantum = Decimal(1).scaleb(-decimals)

    def feed(self, sample: Sample, now: float) -> list[Sample]:
        x = _number_or_verdict(sample)
        if isinstance(x, list):
            return x
        if isinstance(x, int):
            return [sample]
        return _finite(self.rounded(x) + 0.0, sample.ts)  # + 0.0: -0.4 rounds to 0.0, not -0.0

    def rounded(self, x: float) -> float:
        """Halves away from zero on the decimal digits a user sees (repr: the shortest decimal
        that reads back as x). Python's round() rounds the binary value, halves to even: the
        same result unless x is (nearly) a half, so the exact Decimal path is taken only there,
        and for values too large for the scaled float to be exact."""
        scaled = abs(x) * self._scale
        if scaled < 1e12 and abs(scaled % 1.0 - 0.5) > 1e-3:
            return round(x, self._decimals)
        return float(Decimal(repr(x)).quantize(self._quantum, context=_ROUNDING))


# --- windows -------------------------------------------------------------------------------


def _mean(values: Sequence[Real]) -> float:
    try:
        return math.fsum(values) / len(values)
    except OverflowError:  # the sum of huge values overflows; their mean does not
        return math.fsum(v / len(values) for v in values)


class _SendEvery:
    """ESPHome's send counter: the first result after `send_first_at` values, then one every
    `send_every` values (`send_at_(send_every - send_first_at)`, `++send_at_ >= send_every_`)."""

    __slots__ = ("_send_at", "_send_every")

    def __init__(self, send_every: int, send_first_at: int) -> None:
        if not 1 <= send_first_at <= send_every:
            raise ValueError("need 1 <= send_first_at <= send_every")
        self._send_every = send_every
        self._send_at = send_every - send_first_at

    def due(self) -> bool:
        self._send_at += 1
        if self._send_at < self._send_every:
            return False
        self._send_at = 0
        return True


class _Window(_Untimed):
    """The last `window_size` numbers; a result every `send_every` numbers."""

    __slots__ = ("_counter", "_values")

    def __init__(self, window_size: int = 5, send_every: int = 5, send_first_at: int = 1) -> None:
        if window_size < 1:
            raise ValueError("window_size must be >= 1")
        self._values: deque[Real] = deque(maxlen=window_size)
        self._counter = _SendEvery(send_every, send_first_at)

    def feed(self, sample: Sample, now: float) -> list[Sample]:
        x = _number_or_verdict(sample)
        if isinstance(x, list):
            return x
        self._values.append(x)
        if not self._counter.due():
            return []
        return _finite(self._result(self._values), sample.ts)

    @abstractmethod
    def _result(self, values: Sequence[Real]) -> Real: ...


class Median(_Window):
    """The middle value, or the mean of the two middle ones (always a float)."""

    __slots__ = ()
    name = "median"

    def _result(self, values: Sequence[Real]) -> Real:
        return float(statistics.median(values))


class Min(_Window):
    """The smallest number of the window (keeps its type)."""

    __slots__ = ()
    name = "min"

    def _result(self, values: Sequence[Real]) -> Real:
        return min(values)


class Max(_Window):
    """The largest number of the window (keeps its type)."""

    __slots__ = ()
    name = "max"

    def _result(self, values: Sequence[Real]) -> Real:
        return max(values)


class Quantile(_Window):
    """The value at position `ceil(n * quantile)` of the sorted window (ESPHome's choice: a
    value of the window, no interpolation)."""

    __slots__ = ("quantile",)
    name = "quantile"

    def __init__(
        self,
        window_size: int = 5,
        send_every: int = 5,
        send_first_at: int = 1,
        quantile: float = 0.9,
    ) -> None:
        super().__init__(window_size, send_every, send_first_at)
        if not 0.0 <= quantile <= 1.0:
            raise ValueError("quantile must be in [0, 1]")
        self.quantile = quantile

    def _result(self, values: Sequence[Real]) -> Real:
        ordered = sorted(values)
        return ordered[max(math.ceil(len(ordered) * self.quantile) - 1, 0)]


class SlidingWindowMovingAverage(_Window):
    """The mean of the window (ESPHome's defaults for it: 15, 15, 1)."""

    __slots__ = ()
    name = "sliding_window_moving_average"

    def __init__(self, window_size: int = 15, send_every: int = 15, send_first_at: int = 1) -> None:
        super().__init__(window_size, send_every, send_first_at)

    def _result(self, values: Sequence[Real]) -> Real:
        return _mean(values)


class ExponentialMovingAverage(_Untimed):
    """`avg = alpha * x + (1 - alpha) * avg`, starting at the first number."""

    __slots__ = ("_average", "_counter", "alpha")
    name = "exponential_moving_average"

    def __init__(self, alpha: float = 0.1, send_every: int = 15, send_first_at: int = 1) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")
        self.alpha = alpha
        self._average: float | None = None
        self._counter = _SendEvery(send_every, send_first_at)

    def feed(self, sample: Sample, now: float) -> list[Sample]:
        x = _number_or_verdict(sample)
        if isinstance(x, list):
            return x
        if self._average is None:
            self._average = float(x)
        else:
            self._average = self.alpha * x + (1.0 - self.alpha) * self._average
        if not self._counter.due():
            return []
        return _finite(self._average, sample.ts)


class ThrottleAverage:
    """The mean of the numbers of each period, emitted at the period's end; a period without
    numbers emits nothing. Periods are counted from the first number."""

    __slots__ = ("_anchor", "_count", "_due", "_newest", "_sum", "period")
    name = "throttle_average"
    timed = True

    def __init__(self, period: float) -> None:
        if period <= 0:
            raise ValueError("period must be > 0")
        self.period = period
        self._anchor: float | None = None
        self._due: float | None = None  # the end of the current period, while it has numbers
        self._sum: Real = 0
        self._count = 0
        self._newest = 0.0

    def feed(self, sample: Sample, now: float) -> list[Sample]:
        x = _number_or_verdict(sample)
        if isinstance(x, list):
            return x
        if self._anchor is None:
            self._anchor = now
        if self._due is None:
            periods = math.floor((now - self._anchor) / self.period) + 1
            self._due = self._anchor + periods * self.period
        self._sum += x
        self._count += 1
        self._newest = sample.ts
        return []

    def deadline(self) -> float | None:
        return self._due

    def tick(self, now: float, wall: float) -> list[Sample]:
        if self._due is None or now < self._due or self._count == 0:
            return []
        mean = self._sum / self._count
        self._sum, self._count, self._due = 0, 0, None
        return _finite(mean, self._newest)


# --- passing and dropping ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Threshold:
    """A change threshold: `amount` itself, or (relative) that fraction of the reference."""

    amount: float
    relative: bool = False

    def of(self, reference: Real) -> float:
        return abs(self.amount * reference) if self.relative else self.amount


_ANY_CHANGE = Threshold(0.0)


class Delta(_Untimed):
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


class Throttle(_Untimed):
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


class SkipInitial(_Untimed):
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


# --- timers --------------------------------------------------------------------------------


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


class Or:
    """Pass a sample when any branch passes it. Every branch sees every sample; per sample fed,
    the first output of the first branch that has one leaves (ESPHome's phi node). On `tick`,
    the outputs of the due branches leave, a sample emitted by several branches once."""

    __slots__ = ("branches", "timed")
    name = "or"

    def __init__(self, branches: Sequence[Filter]) -> None:
        if not branches:
            raise ValueError("or needs at least one filter")
        self.branches = tuple(branches)
        self.timed = any(branch.timed for branch in self.branches)

    def feed(self, sample: Sample, now: float) -> list[Sample]:
        passed: list[Sample] = []
        for branch in self.branches:
            out = branch.feed(sample, now)
            if out and not passed:
                passed = out[:1]
        return passed

    def deadline(self) -> float | None:
        due = [d for branch in self.branches if (d := branch.deadline()) is not None]
        return min(due, default=None)

    def tick(self, now: float, wall: float) -> list[Sample]:
        emitted: list[Sample] = []
        for branch in self.branches:
            due = branch.deadline()
            if due is None or due > now:
                continue
            for sample in branch.tick(now, wall):
                if not any(
                    s.ts == sample.ts and same_value(s.value, sample.value) for s in emitted
                ):
                    emitted.append(sample)
        return emitted
