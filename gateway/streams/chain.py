"""A sensor's filters linked in order, as ESPHome's `Filter::output` feeds the next filter.

`Chain.feed` runs one sample through the filters; `Chain.tick` runs the timed filters that are
due and sends what they emit through the filters after them. Both return a `Result`: the
samples that leave the chain and, for a metric per filter, the name of the filter at which each
stopped sample stopped. `build_chain` makes a chain from the config models
(`gateway.config.filters`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import assert_never

from pydantic import BaseModel

from gateway.config.filters import (
    TIMEOUT_LAST,
    CalibrateLinearSpec,
    ClampSpec,
    DebounceSpec,
    DeltaSpec,
    ExponentialMovingAverageSpec,
    FilterOutSpec,
    FilterSpec,
    HeartbeatSpec,
    MaxSpec,
    MedianSpec,
    MinSpec,
    MultiplySpec,
    OffsetSpec,
    OrSpec,
    QuantileSpec,
    RoundSpec,
    SkipInitialSpec,
    SlidingWindowMovingAverageSpec,
    ThrottleAverageSpec,
    ThrottleSpec,
    TimeoutSpec,
    parse_threshold,
)
from gateway.streams.filters import (
    CalibrateLinear,
    Clamp,
    Debounce,
    Delta,
    ExponentialMovingAverage,
    Filter,
    FilterOut,
    Heartbeat,
    Max,
    Median,
    Min,
    Multiply,
    Offset,
    Or,
    Quantile,
    Round,
    Sample,
    SkipInitial,
    SlidingWindowMovingAverage,
    Threshold,
    Throttle,
    ThrottleAverage,
    Timeout,
)


@dataclass(slots=True)
class Result:
    samples: list[Sample]  # what leaves the chain
    dropped_by: list[str]  # one filter name per sample that stopped (dropped or absorbed)


class Chain:
    def __init__(self, filters: Sequence[Filter]) -> None:
        self.filters = tuple(filters)
        self.timed = any(f.timed for f in self.filters)  # an `or` is timed if a branch is

    def feed(self, sample: Sample, now: float) -> Result:
        result = Result([], [])
        self._run(0, [sample], now, result)
        return result

    def deadline(self) -> float | None:
        """The earliest deadline of its filters (monotonic seconds), or None."""
        due = [d for f in self.filters if (d := f.deadline()) is not None]
        return min(due, default=None)

    def tick(self, now: float, wall: float) -> Result:
        """Run each filter whose deadline has come, in order; what it emits goes through the
        filters after it (which may become due in turn, and are checked after it)."""
        result = Result([], [])
        for i, f in enumerate(self.filters):
            due = f.deadline()
            if due is not None and due <= now and (out := f.tick(now, wall)):
                self._run(i + 1, out, now, result)
        return result

    def _run(self, start: int, samples: list[Sample], now: float, result: Result) -> None:
        for f in self.filters[start:] if start else self.filters:
            if len(samples) == 1:  # the common case: one value in, at most one out
                out = f.feed(samples[0], now)
                if not out:
                    result.dropped_by.append(f.name)
                    return
                samples = out
                continue
            passed: list[Sample] = []
            for sample in samples:
                out = f.feed(sample, now)
                if not out:
                    result.dropped_by.append(f.name)
                passed.extend(out)
            samples = passed
            if not samples:
                return
        result.samples.extend(samples)


def build_chain(specs: Sequence[FilterSpec]) -> Chain:
    """A chain with fresh state from the config's filters."""
    return Chain([build_filter(spec) for spec in specs])


# The match is the table of filters, one case each (hence the waived branch and return
# counts); mypy checks that it is complete.
def build_filter(spec: FilterSpec) -> Filter:  # noqa: PLR0911, PLR0912
    """One filter, with fresh state, from its config model."""
    match spec:
        case MultiplySpec(root=factor):
            return Multiply(factor)
        case OffsetSpec(root=amount):
            return Offset(amount)
        case CalibrateLinearSpec(root=options):
            if options.method == "exact":
                return CalibrateLinear.exact(options.datapoints)
            return CalibrateLinear.least_squares(options.datapoints)
        case FilterOutSpec(root=values):
            return FilterOut(values)
        case ClampSpec(root=o):
            return Clamp(o.min_value, o.max_value, ignore_out_of_range=o.ignore_out_of_range)
        case (
            MedianSpec(root=o) | MinSpec(root=o) | MaxSpec(root=o)
        ) | SlidingWindowMovingAverageSpec(root=o):
            return _WINDOWS[type(spec)](o.window_size, o.send_every, o.send_first_at)
        case QuantileSpec(root=o):
            return Quantile(o.window_size, o.send_every, o.send_first_at, o.quantile)
        case ExponentialMovingAverageSpec(root=o):
            return ExponentialMovingAverage(o.alpha, o.send_every, o.send_first_at)
        case ThrottleAverageSpec(root=period):
            return ThrottleAverage(period)
        case RoundSpec(root=decimals):
            return Round(decimals)
        case DeltaSpec(root=o):
            high = None if o.max_value is None else _threshold(o.max_value)
            return Delta(_threshold(o.min_value), high)
        case ThrottleSpec(root=period):
            return Throttle(period)
        case HeartbeatSpec(root=o):
            return Heartbeat(o.period, optimistic=o.optimistic)
        case TimeoutSpec(root=o):
            if o.value == TIMEOUT_LAST:
                return Timeout(o.timeout, last=True)
            return Timeout(o.timeout, o.value)
        case SkipInitialSpec(root=count):
            return SkipInitial(count)
        case DebounceSpec(root=period):
            return Debounce(period)
        case OrSpec(root=branches):
            return Or([build_filter(branch) for branch in branches])
        case _:
            assert_never(spec)


_WINDOWS: dict[type[BaseModel], Callable[[int, int, int], Filter]] = {
    MedianSpec: Median,
    MinSpec: Min,
    MaxSpec: Max,
    SlidingWindowMovingAverageSpec: SlidingWindowMovingAverage,
}


def _threshold(value: float | str) -> Threshold:
    amount, relative = parse_threshold(value)
    return Threshold(amount, relative)
