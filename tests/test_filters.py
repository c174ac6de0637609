"""The sensor stream's filters (ESPHome's semantics), their chain and their config models.

Every filter is driven on a fake clock: `now` is passed explicitly, and timed filters are ticked
at their own deadlines, as the device's stream link would.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from gateway.config.filters import FILTERS, FilterSpec, OrSpec
from gateway.config.filters.specs import HeartbeatSpec, MedianSpec, TimeoutSpec
from gateway.models import Value
from gateway.streams.chain import Chain, build_chain
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

FAST = settings(max_examples=60, deadline=None)
SPECS: TypeAdapter[list[Any]] = TypeAdapter(list[FilterSpec])


def values_out(f: Filter, values: Sequence[Value | None]) -> list[Value | None]:
    """Feed `values` one a second; the values that pass."""
    return [s.value for i, v in enumerate(values) for s in f.feed(Sample(v, 1000.0 + i), i)]


def run_clock(
    f: Filter, inputs: Sequence[tuple[float, Value | None]], until: float
) -> list[tuple[float, Sample]]:
    """Feed (time, value) inputs in order, ticking `f` at each deadline that comes first (a
    deadline equal to an input's time ticks before it), then until `until`. Returns (time,
    sample) for everything emitted. The wall clock is the monotonic one + 1e6."""
    emitted: list[tuple[float, Sample]] = []

    def tick_until(t: float) -> None:
        while (due := f.deadline()) is not None and due <= t:
            emitted.extend((due, s) for s in f.tick(due, due + 1e6))

    for t, value in inputs:
        tick_until(t)
        emitted.extend((t, s) for s in f.feed(Sample(value, t + 1e6), t))
    tick_until(until)
    return emitted


def times_from(gaps: Sequence[float]) -> list[float]:
    out, t = [], 0.0
    for gap in gaps:
        t += gap
        out.append(t)
    return out


# --- value transforms ----------------------------------------------------------------------


def test_multiply_keeps_ints_integral_and_passes_non_numbers() -> None:
    assert values_out(Multiply(2), [3, 1.5, "on", True, None]) == [6, 3.0, "on", True, None]
    assert isinstance(values_out(Multiply(2), [3])[0], int)
    assert isinstance(values_out(Multiply(1.0), [3])[0], float)


def test_multiply_drops_what_is_not_finite() -> None:
    assert values_out(Multiply(10), [math.nan, math.inf, 1e308]) == []
    assert values_out(Multiply(0.5), [10**400]) == []  # too large for a float


def test_offset() -> None:
    assert values_out(Offset(-0.4), [20.0, "x"]) == [pytest.approx(19.6), "x"]
    assert values_out(Offset(1), [20]) == [21]


def test_calibrate_linear_least_squares_is_the_regression_line() -> None:
    points = [(0.0, 0.5), (10.0, 10.1), (20.0, 21.0), (30.0, 29.2)]
    slope, intercept = statistics.linear_regression([x for x, _ in points], [y for _, y in points])
    f = CalibrateLinear.least_squares(points)
    assert values_out(f, [15.0, -5, None]) == [
        pytest.approx(slope * 15 + intercept),
        pytest.approx(slope * -5 + intercept),
        None,
    ]


def test_calibrate_linear_least_squares_with_constant_to_values() -> None:
    # ESPHome's r * sy / sx divides by zero here; the line is simply flat.
    f = CalibrateLinear.least_squares([(0.0, 5.0), (10.0, 5.0)])
    assert values_out(f, [3.0]) == [5.0]


def test_calibrate_linear_exact_is_piecewise_and_extends_its_ends() -> None:
    f = CalibrateLinear.exact([(0.0, 0.0), (10.0, 20.0), (20.0, 30.0)])
    assert values_out(f, [5.0, 10.0, 15.0, -5.0, 30.0]) == [10.0, 20.0, 25.0, -10.0, 40.0]


def test_calibrate_linear_exact_refuses_unsorted_points() -> None:
    with pytest.raises(ValueError, match="ascending"):
        CalibrateLinear.exact([(1.0, 0.0), (0.0, 1.0)])


def test_filter_out_compares_by_type() -> None:
    assert values_out(FilterOut([85.0]), [85, 85.0, 85.1, "85"]) == [85.1, "85"]
    assert values_out(FilterOut([True]), [1, True, False]) == [1, False]
    assert values_out(FilterOut([None, "err"]), [None, "err", "ok", 0]) == ["ok", 0]


def test_clamp_replaces_or_drops() -> None:
    assert values_out(Clamp(-40, 125), [-50.5, 20.0, 130, "x"]) == [-40, 20.0, 125, "x"]
    assert values_out(Clamp(-40, 125, ignore_out_of_range=True), [-50.5, 20.0, 130]) == [20.0]
    assert values_out(Clamp(max_value=1.0), [-1e9, 2]) == [-1e9, 1.0]


def test_round_halves_away_from_zero_on_the_decimal_digits() -> None:
    assert values_out(Round(2), [2.675, -2.675, 1.005]) == [2.68, -2.68, 1.01]
    assert values_out(Round(0), [2.5, -2.5, 0.49]) == [3.0, -3.0, 0.0]
    assert str(values_out(Round(0), [-0.4])[0]) == "0.0"  # not "-0.0"
    assert values_out(Round(1), [21, 1e300, "x"]) == [21, 1e300, "x"]
    assert isinstance(values_out(Round(1), [21])[0], int)


# --- windows -------------------------------------------------------------------------------


def test_median_sends_first_at_then_every() -> None:
    f = Median(window_size=3, send_every=3, send_first_at=1)
    out = [s for i in range(1, 8) for s in f.feed(Sample(float(i), 100.0 + i), i)]
    # after value 1 (window [1]), 4 ([2, 3, 4]) and 7 ([5, 6, 7]), with the newest input's ts
    assert out == [Sample(1.0, 101.0), Sample(3.0, 104.0), Sample(6.0, 107.0)]


def test_median_of_an_even_window_is_the_mean_of_the_middle_two() -> None:
    assert values_out(Median(4, 4, 4), [1, 2, 10, 3]) == [2.5]


def test_min_max_quantile_select_a_value_of_the_window() -> None:
    values = [3, 1, 4, 1, 5]
    assert values_out(Min(5, 5, 5), values) == [1]
    assert values_out(Max(5, 5, 5), values) == [5]
    assert values_out(Quantile(5, 5, 5, quantile=0.5), values) == [3]
    assert values_out(Quantile(5, 5, 5, quantile=0.0), values) == [1]
    assert values_out(Quantile(5, 5, 5, quantile=1.0), values) == [5]


def test_window_defaults_are_esphome_s() -> None:
    median_filter, average_filter = Median(), SlidingWindowMovingAverage()
    median = [s for i in range(10) for s in median_filter.feed(Sample(float(i), i), i)]
    assert [s.ts for s in median] == [0, 5]  # window 5, every 5, first at 1
    average = [s for i in range(31) for s in average_filter.feed(Sample(i, i), i)]
    assert [s.ts for s in average] == [0, 15, 30]  # window 15, every 15
    assert average[-1].value == statistics.fmean(range(16, 31))


def test_windows_pass_non_numbers_at_once_and_do_not_count_them() -> None:
    f = Median(2, 2, 2)
    assert values_out(f, [1.0, "x", None, math.nan, 3.0]) == ["x", None, 2.0]


def test_exponential_moving_average() -> None:
    assert values_out(ExponentialMovingAverage(0.5, 1, 1), [0, 2, 4]) == [0.0, 1.0, 2.5]
    assert values_out(ExponentialMovingAverage(0.5, 2, 1), [0, 2, 4]) == [0.0, 2.5]


def test_throttle_average_emits_the_mean_of_each_period() -> None:
    f = ThrottleAverage(10)
    assert f.deadline() is None
    assert f.feed(Sample(1, 100.0), 0) == []
    assert f.feed(Sample(3, 103.0), 3) == []
    assert f.feed(Sample("x", 104.0), 4) == [Sample("x", 104.0)]
    assert f.deadline() == 10
    assert f.tick(10, 110.0) == [Sample(2.0, 103.0)]  # the newest input's ts
    assert f.deadline() is None  # a period without values emits nothing
    f.feed(Sample(5, 125.0), 25)
    assert f.deadline() == 30  # periods keep their phase
    assert f.tick(31, 131.0) == [Sample(5.0, 125.0)]


# --- passing and dropping ------------------------------------------------------------------


def test_delta_is_strictly_more_than_the_threshold_from_the_last_published() -> None:
    f = Delta(Threshold(0.5))
    assert values_out(f, [10.0, 10.5, 10.6, 10.2, 10.0]) == [10.0, 10.6, 10.0]


def test_delta_percentage_is_of_the_last_published_value() -> None:
    f = Delta(Threshold(0.1, relative=True))
    assert values_out(f, [100.0, 110.0, 110.1, 120.0, 121.2]) == [100.0, 110.1, 121.2]


def test_delta_zero_publishes_every_change() -> None:
    assert values_out(Delta(), [1, 1, 1.0, 2, 2]) == [1, 2]


def test_delta_max_value_drops_outliers() -> None:
    f = Delta(Threshold(0.0), Threshold(5.0))
    assert values_out(f, [10.0, 20.0, 12.0, 12.0, 17.0]) == [10.0, 12.0, 17.0]


def test_delta_on_non_numbers_passes_changes() -> None:
    f = Delta(Threshold(0.5))
    seq: list[Value | None] = ["on", "on", "off", True, True, 1, None, None, 20.0, 20.1]
    assert values_out(f, seq) == ["on", "off", True, 1, None, 20.0]


def test_throttle_passes_one_value_per_period() -> None:
    f = Throttle(10)
    passed = [t for t in (0, 5, 10, 19, 20.5) if f.feed(Sample(t, t), t)]
    assert passed == [0, 10, 20.5]


def test_skip_initial() -> None:
    assert values_out(SkipInitial(2), [1, 2, 3, None]) == [3, None]


# --- timers --------------------------------------------------------------------------------


def test_heartbeat_republishes_the_last_sample_on_its_beat() -> None:
    f = Heartbeat(60)
    assert f.deadline() is None  # nothing to beat with yet
    first = Sample(20.0, 1000.0)
    assert f.feed(first, 0) == []  # not optimistic: values leave on the beat
    assert f.deadline() == 60
    assert f.tick(60, 2000.0) == [first]  # unchanged, with its own ts
    assert f.tick(60, 2000.0) == []
    later = Sample(21.0, 1070.0)
    assert f.feed(later, 70) == []
    assert f.deadline() == 120
    assert f.tick(500, 2500.0) == [later]  # one beat, however late
    assert f.deadline() == 540


def test_heartbeat_optimistic_also_passes_values() -> None:
    f = Heartbeat(60, optimistic=True)
    assert f.feed(Sample(1, 1.0), 0) == [Sample(1, 1.0)]
    assert f.tick(60, 61.0) == [Sample(1, 1.0)]


def test_timeout_publishes_null_once_after_silence() -> None:
    f = Timeout(600)
    assert f.feed(Sample(1.0, 1000.0), 0) == [Sample(1.0, 1000.0)]
    f.feed(Sample(2.0, 1500.0), 500)
    assert f.deadline() == 1100
    assert f.tick(1100, 2100.0) == [Sample(None, 2100.0)]
    assert f.deadline() is None


def test_timeout_value_or_last() -> None:
    fixed = Timeout(10, 0)
    fixed.feed(Sample(5, 1.0), 0)
    assert fixed.tick(10, 11.0) == [Sample(0, 11.0)]
    last = Timeout(10, last=True)
    last.feed(Sample(5, 1.0), 0)
    assert last.tick(10, 11.0) == [Sample(5, 11.0)]


def test_debounce_emits_the_last_of_a_burst() -> None:
    f = Debounce(1)
    assert f.feed(Sample("a", 100.0), 0) == []
    assert f.feed(Sample("b", 100.5), 0.5) == []
    assert f.deadline() == 1.5
    assert f.tick(1.5, 101.5) == [Sample("b", 100.5)]
    assert f.deadline() is None


def test_or_emits_a_value_once_when_several_branches_pass_it() -> None:
    f = Or([Delta(), Throttle(10), SkipInitial(0)])
    assert f.feed(Sample(1, 1.0), 0) == [Sample(1, 1.0)]
    assert not f.timed


def test_or_delta_heartbeat_on_change_or_every_period() -> None:
    f = Or([Delta(Threshold(0.5)), Heartbeat(300)])
    assert f.timed
    assert f.feed(Sample(20.0, 1.0), 0) == [Sample(20.0, 1.0)]
    assert f.tick(300, 301.0) == [Sample(20.0, 1.0)]
    assert f.feed(Sample(20.1, 310.0), 310) == []  # not a change
    # ESPHome's phi node would stay silent here (delta passed the last value it saw)
    assert f.tick(600, 601.0) == [Sample(20.1, 310.0)]


# --- chain ---------------------------------------------------------------------------------


def test_chain_reports_where_samples_stop() -> None:
    chain = Chain([SkipInitial(1), Multiply(2), Delta()])
    first = chain.feed(Sample(1, 1.0), 0)
    assert (first.samples, first.dropped_by) == ([], ["skip_initial"])
    assert chain.feed(Sample(1, 2.0), 1).samples == [Sample(2, 2.0)]
    assert chain.feed(Sample(1, 3.0), 2).dropped_by == ["delta"]
    assert not chain.timed


def test_chain_tick_sends_timer_output_through_the_filters_after_it() -> None:
    chain = Chain([Heartbeat(10), Multiply(2), Debounce(1)])
    assert chain.timed
    assert chain.feed(Sample(3, 1.0), 0).dropped_by == ["heartbeat"]
    assert chain.deadline() == 10
    beat = chain.tick(10, 11.0)
    assert (beat.samples, beat.dropped_by) == ([], ["debounce"])  # absorbed by the debounce
    assert chain.deadline() == 11
    assert chain.tick(11, 12.0).samples == [Sample(6, 1.0)]
    assert chain.deadline() == 20
    assert chain.tick(5, 6.0).samples == []  # nothing due


def test_chain_timed_sees_into_or() -> None:
    assert build_chain(SPECS.validate_python([{"or": [{"delta": 0}, {"heartbeat": 5}]}])).timed
    assert not build_chain(SPECS.validate_python([{"or": [{"delta": 0}]}])).timed


# --- properties ----------------------------------------------------------------------------

reals = st.floats(-1e6, 1e6, allow_nan=False)
gaps = st.floats(0.0, 50.0, allow_nan=False)


def delta_reference(values: Sequence[float], limit: Callable[[float], float]) -> list[float]:
    out: list[float] = []
    for v in values:
        if not out or abs(v - out[-1]) > limit(out[-1]):
            out.append(v)
    return out


@FAST
@given(threshold=st.floats(0, 100), values=st.lists(reals, max_size=40))
def test_delta_absolute_property(threshold: float, values: list[float]) -> None:
    out = values_out(Delta(Threshold(threshold)), values)
    assert out == delta_reference(values, lambda _: threshold)
    floats = [float(v) for v in out if isinstance(v, float)]
    assert all(abs(b - a) > threshold for a, b in itertools.pairwise(floats))


@FAST
@given(percent=st.floats(0, 1), values=st.lists(reals, max_size=40))
def test_delta_percentage_property(percent: float, values: list[float]) -> None:
    out = values_out(Delta(Threshold(percent, relative=True)), values)
    assert out == delta_reference(values, lambda last: abs(percent * last))
    floats = [float(v) for v in out if isinstance(v, float)]
    assert all(abs(b - a) > abs(percent * a) for a, b in itertools.pairwise(floats))


@FAST
@given(period=st.floats(0.1, 30), steps=st.lists(gaps, max_size=40))
def test_throttle_property(period: float, steps: list[float]) -> None:
    times = times_from(steps)
    f = Throttle(period)
    passed = [t for t in times if f.feed(Sample(t, t), t)]
    assert all(b - a >= period for a, b in itertools.pairwise(passed))
    # and it drops only what is within a period of the last value it passed
    last = -math.inf
    for t in times:
        if t in passed:
            last = t
        else:
            assert t - last < period


def window_reference(
    values: Sequence[float],
    window: int,
    every: int,
    first: int,
    aggregate: Callable[[list[float]], float],
) -> list[float]:
    return [
        aggregate(list(values[max(0, i - window) : i]))
        for i in range(1, len(values) + 1)
        if i == first or (i > first and (i - first) % every == 0)
    ]


def quantile_reference(q: float) -> Callable[[list[float]], float]:
    def pick(window: list[float]) -> float:
        ordered = sorted(window)
        return ordered[max(math.ceil(len(ordered) * q) - 1, 0)]

    return pick


window_shapes = st.integers(1, 8).flatmap(
    lambda every: st.tuples(st.integers(1, 8), st.just(every), st.integers(1, every))
)


@FAST
@given(
    shape=window_shapes,
    values=st.lists(st.floats(-1e3, 1e3, allow_nan=False), max_size=40),
    q=st.floats(0, 1),
)
def test_window_filters_match_a_reference(
    shape: tuple[int, int, int], values: list[float], q: float
) -> None:
    window, every, first = shape
    cases: list[tuple[Filter, Callable[[list[float]], float]]] = [
        (Median(window, every, first), statistics.median),
        (Min(window, every, first), min),
        (Max(window, every, first), max),
        (Quantile(window, every, first, q), quantile_reference(q)),
        (SlidingWindowMovingAverage(window, every, first), statistics.fmean),
    ]
    for f, aggregate in cases:
        expected = window_reference(values, window, every, first, aggregate)
        assert values_out(f, values) == pytest.approx(expected, rel=1e-9, abs=1e-9), f.name


@FAST
@given(
    alpha=st.floats(0.01, 1),
    every=st.integers(1, 5),
    values=st.lists(st.floats(-1e3, 1e3, allow_nan=False), max_size=40),
)
def test_exponential_moving_average_matches_a_reference(
    alpha: float, every: int, values: list[float]
) -> None:
    averages: list[float] = []
    for v in values:
        averages.append(v if not averages else alpha * v + (1 - alpha) * averages[-1])
    expected = [a for i, a in enumerate(averages, 1) if i == 1 or (i - 1) % every == 0]
    out = values_out(ExponentialMovingAverage(alpha, every, 1), values)
    assert out == pytest.approx(expected)


@FAST
@given(
    threshold=st.floats(0, 5),
    period=st.floats(1, 100),
    events=st.lists(st.tuples(gaps, st.floats(-20, 20, allow_nan=False)), max_size=30),
)
def test_or_delta_heartbeat_publishes_changes_and_beats(
    threshold: float, period: float, events: list[tuple[float, float]]
) -> None:
    times = times_from([gap for gap, _ in events])
    inputs = list(zip(times, [v for _, v in events], strict=True))
    until = (times[-1] if times else 0.0) + 3 * period
    f = Or([Delta(Threshold(threshold)), Heartbeat(period)])
    emitted = run_clock(f, inputs, until)
    published_at = [t for t, _ in emitted]

    reference: float | None = None  # delta's own last passed value
    for t, v in inputs:
        if reference is None or abs(v - reference) > threshold:
            reference = v
            assert (t, Sample(v, t + 1e6)) in emitted  # published when it came
    if inputs:
        assert published_at[0] == inputs[0][0]
        beats = [*published_at, until]
        assert all(b - a <= period + 1e-9 for a, b in itertools.pairwise(beats))
    else:
        assert emitted == []


@FAST
@given(period=st.floats(1, 50), steps=st.lists(st.floats(0.5, 100), min_size=1, max_size=30))
def test_timeout_property(period: float, steps: list[float]) -> None:
    times = times_from(steps)
    until = times[-1] + 2 * period
    emitted = run_clock(Timeout(period), [(t, 1.0) for t in times], until)
    nulls = [(t, s) for t, s in emitted if s.value is None]
    # one null after each silence of a period or more, at its end, stamped with the wall clock
    nexts = [*times[1:], math.inf]
    expected = [t + period for t, nxt in zip(times, nexts, strict=True) if t + period <= nxt]
    assert [t for t, _ in nulls] == expected
    assert all(s.ts == t + 1e6 for t, s in nulls)
    assert [s.value for _, s in emitted if s.value is not None] == [1.0] * len(times)


@FAST
@given(period=st.floats(0.5, 20), steps=st.lists(st.floats(0.1, 40), min_size=1, max_size=30))
def test_debounce_property(period: float, steps: list[float]) -> None:
    times = times_from(steps)
    inputs = [(t, float(i)) for i, t in enumerate(times)]
    emitted = run_clock(Debounce(period), inputs, times[-1] + period)
    settled = [
        (t + period, Sample(v, t + 1e6))
        for (t, v), nxt in zip(inputs, [*times[1:], math.inf], strict=True)
        if t + period <= nxt  # the filter's own arithmetic: its deadline is t + period
    ]
    assert emitted == settled


@FAST
@given(count=st.integers(1, 10), values=st.lists(st.integers(), max_size=20))
def test_skip_initial_property(count: int, values: list[int]) -> None:
    assert values_out(SkipInitial(count), values) == values[count:]


# --- config --------------------------------------------------------------------------------

CONTRACT = """
filters:
  - multiply: 1.0
  - offset: -0.4
  - calibrate_linear: ["0.0 -> 0.0", "100.0 -> 98.6"]
  - calibrate_linear: {method: exact, datapoints: ["0 -> 0", {from: 10, to: 12}, "20 -> 25"]}
  - filter_out: 85.0
  - filter_out: [85, "err", null, true]
  - clamp: {min_value: -40, max_value: 125, ignore_out_of_range: true}
  - median: {window_size: 5, send_every: 5}
  - median: {}
  - median:
  - min: {send_first_at: 2}
  - max: {window_size: 3, send_every: 1}
  - quantile: {quantile: 0.9}
  - sliding_window_moving_average: {window_size: 10, send_every: 1}
  - exponential_moving_average: {alpha: 0.1, send_every: 1}
  - throttle_average: 60
  - round: 1
  - delta: 0.2
  - delta: 5%
  - delta: {min_value: 0.1, max_value: 10%}
  - throttle: 10
  - heartbeat: 300
  - heartbeat: {period: 5min, optimistic: true}
  - timeout: 600
  - timeout: {timeout: 600, value: 0}
  - timeout: {timeout: 1h, value: last}
  - skip_initial: 2
  - debounce: 1
  - or: [{delta: 0.5}, {heartbeat: 300}]
"""


def test_the_contract_shapes_parse_and_build() -> None:
    items = yaml.safe_load(CONTRACT)["filters"]
    specs = SPECS.validate_python(items)
    assert [type(s).key for s in specs] == [next(iter(item)) for item in items]
    chain = build_chain(specs)
    assert chain.timed
    assert [f.name for f in chain.filters] == [s.key for s in specs]


def test_defaults_and_shorthands_are_esphome_s() -> None:
    median, heartbeat, timeout, ored = SPECS.validate_python(
        [{"median": None}, {"heartbeat": "5min"}, {"timeout": 600}, {"or": [{"delta": 0.5}]}]
    )
    assert isinstance(median, MedianSpec)
    assert (median.root.window_size, median.root.send_every, median.root.send_first_at) == (5, 5, 1)
    assert isinstance(heartbeat, HeartbeatSpec)
    assert (heartbeat.root.period, heartbeat.root.optimistic) == (300.0, False)
    assert isinstance(timeout, TimeoutSpec)
    assert (timeout.root.timeout, timeout.root.value) == (600.0, None)
    assert isinstance(ored, OrSpec)
    defaults = SPECS.validate_python(
        [{"sliding_window_moving_average": {}}, {"exponential_moving_average": {}}]
    )
    assert defaults[0].root.window_size == defaults[0].root.send_every == 15
    assert (defaults[1].root.alpha, defaults[1].root.send_every) == (0.1, 15)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(10, 10.0), (0.5, 0.5), ("500ms", 0.5), ("10s", 10.0), ("5min", 300.0), ("1h", 3600.0),
     ("1.5 min", 90.0), ("2d", 172800.0)],
)  # fmt: skip
def test_durations(text: float | str, seconds: float) -> None:
    (spec,) = SPECS.validate_python([{"throttle": text}])
    assert spec.root == seconds


def test_dump_round_trips_and_instances_revalidate() -> None:
    specs = SPECS.validate_python(yaml.safe_load(CONTRACT)["filters"])
    assert SPECS.validate_python(SPECS.dump_python(specs)) == specs
    assert SPECS.validate_json(SPECS.dump_json(specs)) == specs
    assert SPECS.validate_python(specs) == specs
    nested = SPECS.validate_python([{"or": [{"or": [{"multiply": 2}]}]}])
    assert SPECS.dump_python(nested) == [{"or": [{"or": [{"multiply": 2}]}]}]


def test_the_union_covers_every_name_and_the_schema_documents_them() -> None:
    # The union is the registry: the schema's members are the registered filters, in order.
    schema = SPECS.json_schema()
    members = [m["$ref"].rpartition("/")[2] for m in schema["items"]["oneOf"]]
    assert tuple(schema["$defs"][m]["title"] for m in members) == FILTERS.names()
    titles = {d.get("title") for d in schema["$defs"].values()}
    assert set(FILTERS.names()) <= titles
    assert "seconds" in schema["$defs"]["HeartbeatOptions"]["properties"]["period"]["description"]


def error_of(items: list[Any]) -> tuple[str, str]:
    with pytest.raises(ValidationError) as info:
        SPECS.validate_python(items)
    errors = info.value.errors()
    assert len(errors) == 1, errors
    return ".".join(str(p) for p in errors[0]["loc"]), errors[0]["msg"]


@pytest.mark.parametrize(
    ("item", "loc", "message"),
    [
        ({"mutliply": 2}, "0", "unknown filter 'mutliply' (did you mean 'multiply'?); known: "
         "calibrate_linear, clamp, debounce"),
        ({"lambda": "return x;"}, "0", "ESPHome's filter 'lambda' is not available"),
        ({"multiply": 2, "offset": 1}, "0", "one filter per list item"),
        ("median", "0", "a filter is a one-key mapping"),
        ({"or": [{"mutliply": 2}]}, "0.or.0", "unknown filter 'mutliply'"),
        ({"or": []}, "0.or", "at least 1 item"),
        ({"or": [{"median": {"window": 3}}]}, "0.or.0.median.window", "Extra inputs"),
        ({"multiply": True}, "0.multiply", "expected a number"),
        ({"offset": float("nan")}, "0.offset", "finite"),
        ({"median": {"window_size": 0}}, "0.median.window_size", ">= 1"),
        ({"min": {"send_every": 0}}, "0.min.send_every", ">= 1"),
        ({"max": {"send_every": 2, "send_first_at": 3}}, "0.max.send_first_at", "at most"),
        ({"quantile": {"quantile": 1.5}}, "0.quantile.quantile", "<= 1"),
        ({"exponential_moving_average": {"alpha": 0}}, "0.exponential_moving_average.alpha",
         "> 0"),
        ({"exponential_moving_average": {"alpha": 1.5}}, "0.exponential_moving_average.alpha",
         "<= 1"),
        ({"clamp": {"min_value": 5, "max_value": 1}}, "0.clamp.max_value", "below min_value"),
        ({"clamp": {"ignore_out_of_range": True}}, "0.clamp", "set min_value, max_value"),
        ({"calibrate_linear": ["0 -> 0", "10 => 12"]}, "0.calibrate_linear.datapoints.1",
         "'10 => 12' is not a datapoint"),
        ({"calibrate_linear": ["0 -> 0"]}, "0.calibrate_linear.datapoints", "at least 2"),
        ({"calibrate_linear": ["1 -> 0", "1 -> 5"]}, "0.calibrate_linear.datapoints",
         "all the same"),
        ({"calibrate_linear": {"method": "exact", "datapoints": ["2 -> 0", "1 -> 5"]}},
         "0.calibrate_linear.datapoints", "ascending"),
        ({"heartbeat": 0}, "0.heartbeat", "> 0"),
        ({"heartbeat": {"period": "5m"}}, "0.heartbeat.period", "unknown unit 'm'"),
        ({"throttle": "10"}, "0.throttle", "has no unit"),
        ({"throttle": True}, "0.throttle", "expected a duration"),
        ({"timeout": -1}, "0.timeout", "> 0"),
        ({"timeout": {"timeout": 60, "value": [0]}}, "0.timeout.value", "expected a number"),
        ({"throttle_average": "1 fortnight"}, "0.throttle_average", "unknown unit 'fortnight'"),
        ({"throttle_average": "soon"}, "0.throttle_average", "'soon' is not a duration"),
        ({"debounce": 0}, "0.debounce", "> 0"),
        ({"delta": -1}, "0.delta", "cannot be negative"),
        ({"delta": "150%"}, "0.delta", "0%..100%"),
        ({"delta": {}}, "0.delta", "set min_value, max_value"),
        ({"delta": {"min_value": 2, "max_value": 1}}, "0.delta.max_value", "nothing would pass"),
        ({"filter_out": {"a": 1}}, "0.filter_out", "expected a number, a string"),
        ({"filter_out": []}, "0.filter_out", "at least 1 item"),
        ({"round": 1.5}, "0.round", "valid integer"),
        ({"round": 16}, "0.round", "<= 15"),
        ({"skip_initial": 0}, "0.skip_initial", ">= 1"),
    ],
)  # fmt: skip
def test_config_errors_are_single_and_located(item: Any, loc: str, message: str) -> None:
    got_loc, got_message = error_of([item])
    assert got_loc == loc
    assert message in got_message.replace("greater than or equal to ", ">= ").replace(
        "less than or equal to ", "<= "
    ).replace("greater than ", "> ")


@settings(max_examples=500, deadline=None)
@given(
    x=st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15)
    | st.integers(-(10**6), 10**6).map(lambda n: n / 1000 + 0.0005),  # exact halves at 3 places
    decimals=st.integers(0, 6),
)
def test_round_fast_path_agrees_with_decimal_rounding(x: float, decimals: int) -> None:
    """Round takes Python's round() away from halves; it must give what the Decimal rounding
    of the shown digits (halves away from zero) gives, everywhere."""
    exact = float(Decimal(repr(x)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP))
    assert Round(decimals).rounded(x) == exact
