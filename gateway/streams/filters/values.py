"""Value transforms: multiply, offset, calibrate_linear, filter_out, clamp, round; one sample
in, the same sample or a changed one out (or none)."""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_UP, Context, Decimal

from gateway.models import Value
from gateway.streams.filters.base import (
    Real,
    Sample,
    Untimed,
    finite,
    number_or_verdict,
    same_value,
)


class Multiply(Untimed):
    """Scale numbers (unit conversion, a sensor's gain)."""

    __slots__ = ("factor",)
    name = "multiply"

    def __init__(self, factor: Real) -> None:
        self.factor = factor

    def feed(self, sample: Sample, now: float) -> list[Sample]:
        x = number_or_verdict(sample)
        if isinstance(x, list):
            return x
        try:
            return finite(x * self.factor, sample.ts)
        except OverflowError:  # an int too large for a float factor
            return []


class Offset(Untimed):
    """Shift numbers (a sensor's zero error)."""

    __slots__ = ("amount",)
    name = "offset"

    def __init__(self, amount: Real) -> None:
        self.amount = amount

    def feed(self, sample: Sample, now: float) -> list[Sample]:
        x = number_or_verdict(sample)
        if isinstance(x, list):
            return x
        try:
            return finite(x + self.amount, sample.ts)
        except OverflowError:
            return []


class CalibrateLinear(Untimed):
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
        x = number_or_verdict(sample)
        if isinstance(x, list):
            return x
        slope, bias = self._lines[bisect.bisect_right(self._bounds, x)]
        try:
            return finite(slope * x + bias, sample.ts)
        except OverflowError:
            return []


class FilterOut(Untimed):
    """Drop samples equal to one of `values` (any type, null included)."""

    __slots__ = ("values",)
    name = "filter_out"

    def __init__(self, values: Iterable[Value | None]) -> None:
        self.values = tuple(values)

    def feed(self, sample: Sample, now: float) -> list[Sample]:
        if any(same_value(sample.value, v) for v in self.values):
            return []
        return [sample]


class Clamp(Untimed):
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
        x = number_or_verdict(sample)
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


class Round(Untimed):
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
        x = number_or_verdict(sample)
        if isinstance(x, list):
            return x
        if isinstance(x, int):
            return [sample]
        return finite(self.rounded(x) + 0.0, sample.ts)  # + 0.0: -0.4 rounds to 0.0, not -0.0

    def rounded(self, x: float) -> float:
        """Halves away from zero on the decimal digits a user sees (repr: the shortest decimal
        that reads back as x). Python's round() rounds the binary value, halves to even: the
        same result unless x is (nearly) a half, so the exact Decimal path is taken only there,
        and for values too large for the scaled float to be exact."""
        scaled = abs(x) * self._scale
        if scaled < 1e12 and abs(scaled % 1.0 - 0.5) > 1e-3:
            return round(x, self._decimals)
        return float(Decimal(repr(x)).quantize(self._quantum, context=_ROUNDING))
