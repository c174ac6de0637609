"""A sensor stream's filters, with ESPHome's names and semantics: pure and synchronous.

Each filter is a small object fed one `Sample` at a time with the monotonic time `now`; it
returns what passes (`[]` when it drops or absorbs the sample). A timed filter (heartbeat,
timeout, debounce, throttle_average, or an `or` holding one) also has a `deadline()`, and its
`tick(now, wall)` emits what is due; the caller owns the clock, so tests drive a fake one.
Semantics follow ESPHome's `esphome/components/sensor/filter.cpp`; `Chain` (chain.py) links them
as ESPHome's `Filter::output` does.

One module per kind: `base` (`Sample`, the `Filter` protocol, the rules for values that the
numeric filters share), `values` (multiply, offset, calibrate_linear, filter_out, clamp,
round), `windows` (median, min, max, quantile, the moving averages, throttle_average), `gates`
(delta, throttle, skip_initial), `timed` (heartbeat, timeout, debounce), `branches` (or).
Everything is importable from `gateway.streams.filters`.

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

from gateway.streams.filters.base import Filter, Sample, is_number, same_value
from gateway.streams.filters.branches import Or
from gateway.streams.filters.gates import Delta, SkipInitial, Threshold, Throttle
from gateway.streams.filters.timed import Debounce, Heartbeat, Timeout
from gateway.streams.filters.values import (
    CalibrateLinear,
    Clamp,
    FilterOut,
    Multiply,
    Offset,
    Round,
)
from gateway.streams.filters.windows import (
    ExponentialMovingAverage,
    Max,
    Median,
    Min,
    Quantile,
    SlidingWindowMovingAverage,
    ThrottleAverage,
)

__all__ = [
    "CalibrateLinear",
    "Clamp",
    "Debounce",
    "Delta",
    "ExponentialMovingAverage",
    "Filter",
    "FilterOut",
    "Heartbeat",
    "Max",
    "Median",
    "Min",
    "Multiply",
    "Offset",
    "Or",
    "Quantile",
    "Round",
    "Sample",
    "SkipInitial",
    "SlidingWindowMovingAverage",
    "Threshold",
    "Throttle",
    "ThrottleAverage",
    "Timeout",
    "is_number",
    "same_value",
]
