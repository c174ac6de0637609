"""Aggregates over the last values: median, min, max, quantile, the moving averages (a result
every `send_every` values, ESPHome's send counter), and throttle_average (the mean of each
period, emitted at its end)."""

from __future__ import annotations

import math
import statistics
from abc import abstractmethod
from collections import deque
from collections.abc import Sequence

from gateway.streams.filters.base import Real, Sample, Untimed, finite, number_or_verdict


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


class _Window(Untimed):
    """The last `window_size` numbers; a result every `send_every` numbers."""

    __slots__ = ("_counter", "_values")

    def __init__(self, window_size: int = 5, send_every: int = 5, send_first_at: int = 1) -> None:
        if window_size < 1:
            raise ValueError("window_size must be >= 1")
        self._values: deque[Real] = deque(maxlen=window_size)
        self._counter = _SendEvery(send_every, send_first_at)

    def feed(self, sample: Sample, now: float) -> list[Sample]:
        x = number_or_verdict(sample)
        if isinstance(x, list):
            return x
        self._values.append(x)
        if not self._counter.due():
            return []
        return finite(self._result(self._values), sample.ts)

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


class ExponentialMovingAverage(Untimed):
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
        x = number_or_verdict(sample)
        if isinstance(x, list):
            return x
        if self._average is None:
            self._average = float(x)
        else:
            self._average = self.alpha * x + (1.0 - self.alpha) * self._average
        if not self._counter.due():
            return []
        return finite(self._average, sample.ts)


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
        x = number_or_verdict(sample)
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
        return finite(mean, self._newest)
