"""One root model per filter, registered with what it builds, and ESPHome's shorthands.

Each filter is a root model whose root is the value under its key (`MedianSpec.root` is the
`WindowOptions`), so a validation error inside an item is located exactly where the user wrote
it: `filters.0.median.window_size`, not `filters.0.median.median.window_size` (pydantic adds the
union's tag, here the filter name, to the path, and the tag then stands for the key).

Shorthands follow ESPHome: `heartbeat: 300` for `{period: 300}`, `timeout: 600` for
`{timeout: 600}`, `delta: 0.5` / `delta: 5%` for `{min_value: ...}`, `calibrate_linear: [...]`
for `{datapoints: [...]}`, `filter_out: 85` for `[85]`, and `median:` / `median: {}` for the
defaults. `or`, whose items are any filter, is with the union in `union`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    TypeAdapter,
    ValidationError,
)

from gateway.config.filters.options import (
    TIMEOUT_LAST,
    CalibrateLinearOptions,
    ClampOptions,
    DeltaOptions,
    EmaOptions,
    HeartbeatOptions,
    QuantileOptions,
    SlidingAverageOptions,
    TimeoutOptions,
    WindowOptions,
)
from gateway.config.filters.registry import Spec, register_filter
from gateway.config.filters.scalars import (
    Datapoint,
    Duration,
    Number,
    Scalar,
    Threshold,
    check_scalar,
    filter_error,
    parse_threshold,
)
from gateway.streams import filters as running
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
    Quantile,
    Round,
    SkipInitial,
    SlidingWindowMovingAverage,
    Throttle,
    ThrottleAverage,
    Timeout,
)


def _none_to_defaults(value: Any) -> Any:
    # `- median:` (null) and `- median: {}` both mean ESPHome's defaults.
    return {} if value is None else value


def _listed(value: Any) -> Any:
    # `filter_out: 85` is `filter_out: [85]`; the scalar is checked here so that its error
    # points at `filter_out`, not at an item 0 the user did not write.
    return value if isinstance(value, list) else [check_scalar(value)]


def _datapoints_shorthand(value: Any) -> Any:
    # `calibrate_linear: [...]` is `{datapoints: [...]}`; the points are checked by the model,
    # so that an error names the point (`calibrate_linear.datapoints.1`).
    return {"datapoints": value} if isinstance(value, list) else value


def _threshold(value: float | str) -> running.Threshold:
    amount, relative = parse_threshold(value)
    return running.Threshold(amount, relative)


def _shorthand(field: str, scalar: Any, model: type[BaseModel]) -> BeforeValidator:
    """ESPHome's `maybe_simple_value`: a scalar stands for `{field: scalar}`. The scalar is
    checked here so that its error points at the filter's own key (`filters.0.heartbeat`)
    rather than at a field the user did not write."""
    adapter: TypeAdapter[Any] = TypeAdapter(scalar)

    def expand(value: Any) -> Any:
        if value is None or isinstance(value, Mapping | BaseModel):
            return value
        try:
            return {field: adapter.validate_python(value)}
        except ValidationError as exc:
            raise filter_error(exc.errors()[0]["type"], exc.errors()[0]["msg"]) from None

    return BeforeValidator(expand, json_schema_input_type=scalar | model)


@register_filter
class MultiplySpec(Spec):
    """Multiply each number by a factor."""

    key: ClassVar[str] = "multiply"
    root: Number = Field(description="The factor.")

    def build(self) -> Filter:
        return Multiply(self.root)


@register_filter
class OffsetSpec(Spec):
    """Add a constant to each number."""

    key: ClassVar[str] = "offset"
    root: Number = Field(description="What to add (negative to subtract).")

    def build(self) -> Filter:
        return Offset(self.root)


@register_filter
class CalibrateLinearSpec(Spec):
    """Map measured numbers to true ones through datapoints (least squares line, or exact
    piecewise segments)."""

    key: ClassVar[str] = "calibrate_linear"
    root: Annotated[
        CalibrateLinearOptions,
        BeforeValidator(
            _datapoints_shorthand,
            json_schema_input_type=list[Datapoint] | CalibrateLinearOptions,
        ),
    ]

    def build(self) -> Filter:
        if self.root.method == "exact":
            return CalibrateLinear.exact(self.root.datapoints)
        return CalibrateLinear.least_squares(self.root.datapoints)


@register_filter
class FilterOutSpec(Spec):
    """Drop readings equal to one of these values (any type: numbers, strings, true/false,
    null). Numbers compare exactly: put `round` first for a sensor with noise."""

    key: ClassVar[str] = "filter_out"
    root: Annotated[
        list[Scalar],
        Field(min_length=1, description="A value or a list of values to drop."),
        BeforeValidator(_listed, json_schema_input_type=bool | float | str | None | list[Scalar]),
    ]

    def build(self) -> Filter:
        return FilterOut(self.root)


@register_filter
class ClampSpec(Spec):
    """Limit numbers to [min_value, max_value]: replaced by the bound, or dropped."""

    key: ClassVar[str] = "clamp"
    root: ClampOptions

    def build(self) -> Filter:
        o = self.root
        return Clamp(o.min_value, o.max_value, ignore_out_of_range=o.ignore_out_of_range)


# The window filters' options; `median:` alone (null) or `{}` means ESPHome's defaults.
_WindowRoot = Annotated[
    WindowOptions, BeforeValidator(_none_to_defaults, json_schema_input_type=WindowOptions | None)
]
_QuantileRoot = Annotated[
    QuantileOptions,
    BeforeValidator(_none_to_defaults, json_schema_input_type=QuantileOptions | None),
]
_SlidingAverageRoot = Annotated[
    SlidingAverageOptions,
    BeforeValidator(_none_to_defaults, json_schema_input_type=SlidingAverageOptions | None),
]
_EmaRoot = Annotated[
    EmaOptions, BeforeValidator(_none_to_defaults, json_schema_input_type=EmaOptions | None)
]


@register_filter
class MedianSpec(Spec):
    """The median of the last window_size numbers (the mean of the two middle ones for an even
    count)."""

    key: ClassVar[str] = "median"
    root: _WindowRoot

    def build(self) -> Filter:
        return Median(self.root.window_size, self.root.send_every, self.root.send_first_at)


@register_filter
class MinSpec(Spec):
    """The smallest of the last window_size numbers."""

    key: ClassVar[str] = "min"
    root: _WindowRoot

    def build(self) -> Filter:
        return Min(self.root.window_size, self.root.send_every, self.root.send_first_at)


@register_filter
class MaxSpec(Spec):
    """The largest of the last window_size numbers."""

    key: ClassVar[str] = "max"
    root: _WindowRoot

    def build(self) -> Filter:
        return Max(self.root.window_size, self.root.send_every, self.root.send_first_at)


@register_filter
class QuantileSpec(Spec):
    """A quantile of the last window_size numbers (a value from the window)."""

    key: ClassVar[str] = "quantile"
    root: _QuantileRoot

    def build(self) -> Filter:
        o = self.root
        return Quantile(o.window_size, o.send_every, o.send_first_at, o.quantile)


@register_filter
class SlidingWindowMovingAverageSpec(Spec):
    """The mean of the last window_size numbers."""

    key: ClassVar[str] = "sliding_window_moving_average"
    root: _SlidingAverageRoot

    def build(self) -> Filter:
        o = self.root
        return SlidingWindowMovingAverage(o.window_size, o.send_every, o.send_first_at)


@register_filter
class ExponentialMovingAverageSpec(Spec):
    """An exponentially weighted mean of all numbers so far."""

    key: ClassVar[str] = "exponential_moving_average"
    root: _EmaRoot

    def build(self) -> Filter:
        o = self.root
        return ExponentialMovingAverage(o.alpha, o.send_every, o.send_first_at)


@register_filter
class ThrottleAverageSpec(Spec):
    """Publish the mean of the numbers of each period, at the end of the period (nothing for a
    period without values)."""

    key: ClassVar[str] = "throttle_average"
    root: Duration = Field(description="The period (seconds, or '1min').")

    def build(self) -> Filter:
        return ThrottleAverage(self.root)


@register_filter
class RoundSpec(Spec):
    """Round numbers to this many decimals (halves away from zero)."""

    key: ClassVar[str] = "round"
    root: int = Field(ge=0, le=15, strict=True, description="Decimals (0..15).")

    def build(self) -> Filter:
        return Round(self.root)


@register_filter
class DeltaSpec(Spec):
    """Publish a value only when it changed enough since the last published one; values that
    are not numbers pass when they differ from it."""

    key: ClassVar[str] = "delta"
    root: Annotated[DeltaOptions, _shorthand("min_value", Threshold, DeltaOptions)]

    def build(self) -> Filter:
        high = self.root.max_value
        return Delta(_threshold(self.root.min_value), None if high is None else _threshold(high))


@register_filter
class ThrottleSpec(Spec):
    """Publish at most one value per period (the first; later ones in the period are dropped)."""

    key: ClassVar[str] = "throttle"
    root: Duration = Field(description="The period (seconds, or '10s').")

    def build(self) -> Filter:
        return Throttle(self.root)


@register_filter
class HeartbeatSpec(Spec):
    """Republish the last value every period, whether it changed or not."""

    key: ClassVar[str] = "heartbeat"
    root: Annotated[HeartbeatOptions, _shorthand("period", Duration, HeartbeatOptions)]

    def build(self) -> Filter:
        return Heartbeat(self.root.period, optimistic=self.root.optimistic)


@register_filter
class TimeoutSpec(Spec):
    """Pass values on; after a silence of `timeout` publish null (or `value`) once."""

    key: ClassVar[str] = "timeout"
    root: Annotated[TimeoutOptions, _shorthand("timeout", Duration, TimeoutOptions)]

    def build(self) -> Filter:
        if self.root.value == TIMEOUT_LAST:
            return Timeout(self.root.timeout, last=True)
        return Timeout(self.root.timeout, self.root.value)


@register_filter
class SkipInitialSpec(Spec):
    """Drop the first values (a sensor's settling readings after start)."""

    key: ClassVar[str] = "skip_initial"
    root: int = Field(ge=1, strict=True, description="How many values to drop.")

    def build(self) -> Filter:
        return SkipInitial(self.root)


@register_filter
class DebounceSpec(Spec):
    """Publish a value only once no newer one came for a period (the last of a burst)."""

    key: ClassVar[str] = "debounce"
    root: Duration = Field(description="The quiet period (seconds, or '500ms').")

    def build(self) -> Filter:
        return Debounce(self.root)
