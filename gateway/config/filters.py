"""The config of a sensor stream's filters: ESPHome's filter names and YAML shapes.

In YAML, `filters:` is a list whose items are one-key mappings (`- median: {window_size: 5}`).
Each filter is a root model whose root is the value under its key (`MedianSpec.root` is the
`WindowOptions`), so a validation error inside an item is located exactly where the user wrote
it: `filters.0.median.window_size`, not `filters.0.median.median.window_size` (pydantic adds the
union's tag, here the filter name, to the path, and the tag then stands for the key).

`FilterSpec` is the union of all of them, routed by the item's single key; a misspelt name or two
filters in one item give one error that says so, instead of one error per union member.
Shorthands follow ESPHome: `heartbeat: 300` for `{period: 300}`, `timeout: 600` for
`{timeout: 600}`, `delta: 0.5` / `delta: 5%` for `{min_value: ...}`, `calibrate_linear: [...]`
for `{datapoints: [...]}`, `filter_out: 85` for `[85]`, and `median:` / `median: {}` for the
defaults. Durations are seconds, or ESPHome's strings: "500ms", "10s", "5min", "1h".
`gateway.streams.chain.build_chain` turns a list of these into a running chain.
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetJsonSchemaHandler,
    RootModel,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError
from pydantic_core.core_schema import SerializerFunctionWrapHandler
from typing_extensions import TypedDict  # pydantic needs it for TypedDicts before 3.12

from gateway.config.base import Model
from gateway.models import Value

# ESPHome filters that compile C++ or that we did not take over: named in the error, so a user
# copying an ESPHome config learns that the name is right but the filter is not available.
_NOT_AVAILABLE = frozenset(
    {
        "lambda",
        "calibrate_polynomial",
        "round_to_multiple_of",
        "round_to_significant_digits",
        "throttle_with_priority",
        "to_ntc_resistance",
        "to_ntc_temperature",
    }
)


def _error(kind: str, message: str) -> PydanticCustomError:
    # The message goes in through the context: a literal brace in it ("{median: {}}") would
    # otherwise be read as a template placeholder.
    return PydanticCustomError(kind, "{message}", {"message": message})


# --- scalar types --------------------------------------------------------------------------

_DURATION_RE = re.compile(r"(?P<number>[0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*(?P<unit>[a-z]*)")
_DURATION_UNITS = {
    "us": 1e-6,
    "microseconds": 1e-6,
    "ms": 1e-3,
    "milliseconds": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "seconds": 1.0,
    "min": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "days": 86400.0,
}
_DURATION_HINT = "a number of seconds or a string such as '500ms', '10s', '5min', '1h'"


def parse_duration(value: Any) -> Any:
    """ESPHome's time strings ("500ms", "10s", "5min", "1h") to seconds; numbers pass on to the
    float validation. A bare number in a string ("10") is refused, as ESPHome does: whoever
    quoted it may have meant minutes."""
    if isinstance(value, bool):
        raise _error("duration", f"expected a duration ({_DURATION_HINT}), got {value!r}")
    if not isinstance(value, str):
        return value
    match = _DURATION_RE.fullmatch(value.strip().lower())
    if match is None:
        raise _error("duration", f"{value!r} is not a duration; write {_DURATION_HINT}")
    unit = match["unit"]
    if not unit:
        raise _error("duration", f"{value!r} has no unit: write {match['number']} (seconds)")
    if unit not in _DURATION_UNITS:
        raise _error("duration", f"unknown unit {unit!r} in {value!r}: use us, ms, s, min, h or d")
    return float(match["number"]) * _DURATION_UNITS[unit]


def _number(value: Any) -> Any:
    # bool is an int to Python but never a number in a config: `multiply: true` is a mistake.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _error("number", f"expected a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _error("number", f"expected a finite number, got {value!r}")
    return value


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return _number(value)
    raise _error("value", f"expected a number, a string, true/false or null, got {value!r}")


#: Seconds, > 0; also written "500ms", "10s", "5min", "1h".
Duration = Annotated[
    float,
    Field(gt=0, allow_inf_nan=False),
    BeforeValidator(parse_duration, json_schema_input_type=float | str),
]
#: An int stays an int (`multiply: 2` keeps integer readings integral); no bool, no NaN/inf.
Number = Annotated[int | float, BeforeValidator(_number, json_schema_input_type=float)]
#: A value a reading can have, or null (what `timeout` publishes by default).
Scalar = Annotated[
    bool | int | float | str | None,
    BeforeValidator(_scalar, json_schema_input_type=bool | float | str | None),
]


def parse_threshold(value: float | str) -> tuple[float, bool]:
    """A validated delta threshold -> (amount, relative): `0.5` -> (0.5, False), `"5%"` ->
    (0.05, True), relative meaning a fraction of the last published value."""
    if isinstance(value, str):
        return float(value.strip().removesuffix("%")) / 100.0, True
    return float(value), False


def _threshold(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        try:
            percent = float(text.removesuffix("%").rstrip()) if text.endswith("%") else None
        except ValueError:
            percent = None
        if percent is None or not 0.0 <= percent <= 100.0:
            raise _error(
                "threshold", f"expected a number >= 0 or a percentage 0%..100%, got {value!r}"
            )
        return text
    number = _number(value)
    if number < 0:
        raise _error("threshold", f"a change threshold cannot be negative, got {value!r}")
    return float(number)


#: A change threshold: absolute (`0.5`, >= 0) or relative to the last published value (`"5%"`).
Threshold = Annotated[float | str, BeforeValidator(_threshold, json_schema_input_type=float | str)]


DatapointFromTo = TypedDict(
    "DatapointFromTo",
    {
        "from": Annotated[float, Field(description="The measured value.")],
        "to": Annotated[float, Field(description="The true value it stands for.")],
    },
)


def _datapoint(value: Any) -> Any:
    """ "x -> y" (ESPHome's notation) or {from: x, to: y} -> (x, y); a list [x, y] is what a
    dump of the model gives back."""
    if isinstance(value, str):
        left, arrow, right = value.partition("->")
        try:
            point = (float(left), float(right)) if arrow else None
        except ValueError:
            point = None
        if point is None:
            raise _error(
                "datapoint", f"{value!r} is not a datapoint such as '0.0 -> 0.5' (from -> to)"
            )
    elif isinstance(value, Mapping):
        if set(value) != {"from", "to"}:
            raise _error("datapoint", f"a datapoint mapping has `from` and `to`, got {value!r}")
        point = (_number(value["from"]), _number(value["to"]))
    elif isinstance(value, list | tuple) and len(value) == 2:
        point = (_number(value[0]), _number(value[1]))
    else:
        raise _error("datapoint", f"expected a datapoint such as '0.0 -> 0.5', got {value!r}")
    if not all(math.isfinite(v) for v in point):
        raise _error("datapoint", f"a datapoint needs finite numbers, got {value!r}")
    return (float(point[0]), float(point[1]))


Datapoint = Annotated[
    tuple[float, float],
    BeforeValidator(_datapoint, json_schema_input_type=str | DatapointFromTo),
]


# --- option models -------------------------------------------------------------------------


def _none_to_defaults(value: Any) -> Any:
    # `- median:` (null) and `- median: {}` both mean ESPHome's defaults.
    return {} if value is None else value


def _listed(value: Any) -> Any:
    # `filter_out: 85` is `filter_out: [85]`; the scalar is checked here so that its error
    # points at `filter_out`, not at an item 0 the user did not write.
    return value if isinstance(value, list) else [_scalar(value)]


def _datapoints_shorthand(value: Any) -> Any:
    # `calibrate_linear: [...]` is `{datapoints: [...]}`; the points are checked by the model,
    # so that an error names the point (`calibrate_linear.datapoints.1`).
    return {"datapoints": value} if isinstance(value, list) else value


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
            raise _error(exc.errors()[0]["type"], exc.errors()[0]["msg"]) from None

    return BeforeValidator(expand, json_schema_input_type=scalar | model)


def _first_at_within_every(value: int, info: ValidationInfo) -> int:
    every = info.data.get("send_every")
    if every is not None and value > every:
        raise _error(
            "send_first_at",
            f"send_first_at ({value}) must be at most send_every ({every}): it only brings "
            "the first output forward",
        )
    return value


_SEND_EVERY = "Publish one result every this many values."
_SEND_FIRST_AT = (
    "Publish the first result after this many values (<= send_every), so the stream does not "
    "start silent; 1 publishes the first raw value."
)


class WindowOptions(Model):
    """A window over the last `window_size` values, a result every `send_every` values
    (ESPHome's defaults: 5, 5, 1)."""

    window_size: int = Field(5, ge=1, strict=True, description="Values the result is taken over.")
    send_every: int = Field(5, ge=1, strict=True, description=_SEND_EVERY)
    send_first_at: int = Field(1, ge=1, strict=True, description=_SEND_FIRST_AT)

    _check_first_at = field_validator("send_first_at")(_first_at_within_every)


class QuantileOptions(WindowOptions):
    quantile: float = Field(
        0.9,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="Which quantile of the window: 0.9 is the value 90% of the window lies at "
        "or below (0.5 a median without averaging the two middle values).",
    )


class SlidingAverageOptions(WindowOptions):
    """As WindowOptions, with ESPHome's defaults for averages: 15, 15, 1."""

    window_size: int = Field(15, ge=1, strict=True, description="Values averaged.")
    send_every: int = Field(15, ge=1, strict=True, description=_SEND_EVERY)


class EmaOptions(Model):
    alpha: float = Field(
        0.1,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="Weight of the newest value (0 < alpha <= 1): small is smooth and slow, 1 "
        "follows the input.",
    )
    send_every: int = Field(15, ge=1, strict=True, description=_SEND_EVERY)
    send_first_at: int = Field(1, ge=1, strict=True, description=_SEND_FIRST_AT)

    _check_first_at = field_validator("send_first_at")(_first_at_within_every)


class CalibrateLinearOptions(Model):
    method: Literal["least_squares", "exact"] = Field(
        "least_squares",
        description="least_squares: the one straight line that best fits all datapoints. "
        "exact: straight segments through each pair of neighbouring datapoints (the first and "
        "last segments extend beyond them).",
    )
    datapoints: list[Datapoint] = Field(
        min_length=2,
        description="Measured -> true value pairs, written '0.0 -> 0.5' or {from: 0.0, to: "
        "0.5}; exact needs them in ascending `from` order.",
    )

    @field_validator("datapoints")
    @classmethod
    def _fits_method(
        cls, points: list[tuple[float, float]], info: ValidationInfo
    ) -> list[tuple[float, float]]:
        xs = [x for x, _ in points]
        if info.data.get("method") == "exact":
            if any(a >= b for a, b in itertools.pairwise(xs)):
                raise _error(
                    "datapoints",
                    "with method: exact the `from` values must be ascending, without duplicates",
                )
        elif len(set(xs)) == 1:
            raise _error(
                "datapoints",
                "the `from` values are all the same: a line needs at least two different ones",
            )
        return points


class ClampOptions(Model):
    min_value: Number | None = Field(None, description="Lowest value let through.")
    max_value: Number | None = Field(None, description="Highest value let through.")
    ignore_out_of_range: bool = Field(
        False,
        description="Drop values outside [min_value, max_value] instead of replacing them "
        "with the nearest bound.",
    )

    @field_validator("max_value")
    @classmethod
    def _above_min(cls, value: float | None, info: ValidationInfo) -> float | None:
        low = info.data.get("min_value")
        if value is not None and low is not None and value < low:
            raise _error("clamp", f"max_value ({value}) is below min_value ({low})")
        return value

    @model_validator(mode="after")
    def _has_a_bound(self) -> ClampOptions:
        if self.min_value is None and self.max_value is None:
            raise _error("clamp", "set min_value, max_value or both")
        return self


class DeltaOptions(Model):
    min_value: Threshold = Field(
        0.0,
        description="Publish a value only when it differs from the last published one by more "
        "than this: a number, or a percentage of the last published value ('5%'). 0 publishes "
        "every change.",
    )
    max_value: Threshold | None = Field(
        None,
        description="Drop a value that differs from the last published one by more than this "
        "(an outlier); number or percentage.",
    )

    @field_validator("max_value")
    @classmethod
    def _above_min(cls, value: float | str | None, info: ValidationInfo) -> float | str | None:
        low = info.data.get("min_value")
        if value is None or low is None:
            return value
        (high_amount, high_rel), (low_amount, low_rel) = (
            parse_threshold(value),
            parse_threshold(low),
        )
        if high_rel == low_rel and high_amount <= low_amount:
            raise _error(
                "delta", f"max_value ({value}) must be above min_value ({low}): nothing would pass"
            )
        return value

    @model_validator(mode="after")
    def _has_a_bound(self) -> DeltaOptions:
        if not self.model_fields_set:
            raise _error("delta", "set min_value, max_value or both (or write `delta: 0.5`)")
        return self


class HeartbeatOptions(Model):
    period: Duration = Field(description="Republish the last value this often (seconds).")
    optimistic: bool = Field(
        False,
        description="Also pass every value on at once; without it values leave only on the "
        "heartbeat's beat.",
    )


class TimeoutOptions(Model):
    timeout: Duration = Field(description="Publish `value` after this many seconds of silence.")
    value: Scalar = Field(
        None,
        description="What to publish then: null (the default: 'unknown'), a number, a string, "
        "true/false, or `last` to republish the last value.",
    )


# --- the filters ---------------------------------------------------------------------------


class _Spec(RootModel[Any]):
    """One filter: a mapping of its name (`key`) to its options (`root`)."""

    model_config = ConfigDict(frozen=True)
    key: ClassVar[str]

    @model_validator(mode="before")
    @classmethod
    def _unwrap(cls, data: Any) -> Any:
        if isinstance(data, cls):
            return data
        if isinstance(data, Mapping) and list(data) == [cls.key]:
            return data[cls.key]
        raise _error("filter", f"expected a one-key mapping {{{cls.key}: ...}}, got {data!r}")

    @model_serializer(mode="wrap")
    def _wrap(self, handler: SerializerFunctionWrapHandler) -> Any:
        root = handler(self)
        # Pydantic runs this serializer twice on the outermost `or` of a recursive union (once
        # for the definition reference, once for the model): wrap only once.
        if isinstance(root, dict) and list(root) == [self.key] and self.key == "or":
            return root
        return {self.key: root}

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        inner = dict(handler(core_schema))
        inner.pop("title", None)
        description = " ".join((cls.__doc__ or "").split())
        if inner.get("description") == description:
            del inner["description"]
        return {
            "type": "object",
            "title": cls.key,
            "description": description,
            "properties": {cls.key: inner},
            "required": [cls.key],
            "additionalProperties": False,
        }


class MultiplySpec(_Spec):
    """Multiply each number by a factor."""

    key: ClassVar[str] = "multiply"
    root: Number = Field(description="The factor.")


class OffsetSpec(_Spec):
    """Add a constant to each number."""

    key: ClassVar[str] = "offset"
    root: Number = Field(description="What to add (negative to subtract).")


class CalibrateLinearSpec(_Spec):
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


class FilterOutSpec(_Spec):
    """Drop readings equal to one of these values (any type: numbers, strings, true/false,
    null). Numbers compare exactly: put `round` first for a sensor with noise."""

    key: ClassVar[str] = "filter_out"
    root: Annotated[
        list[Scalar],
        Field(min_length=1, description="A value or a list of values to drop."),
        BeforeValidator(_listed, json_schema_input_type=bool | float | str | None | list[Scalar]),
    ]


class ClampSpec(_Spec):
    """Limit numbers to [min_value, max_value]: replaced by the bound, or dropped."""

    key: ClassVar[str] = "clamp"
    root: ClampOptions


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


class MedianSpec(_Spec):
    """The median of the last window_size numbers (the mean of the two middle ones for an even
    count)."""

    key: ClassVar[str] = "median"
    root: _WindowRoot


class MinSpec(_Spec):
    """The smallest of the last window_size numbers."""

    key: ClassVar[str] = "min"
    root: _WindowRoot


class MaxSpec(_Spec):
    """The largest of the last window_size numbers."""

    key: ClassVar[str] = "max"
    root: _WindowRoot


class QuantileSpec(_Spec):
    """A quantile of the last window_size numbers (a value from the window)."""

    key: ClassVar[str] = "quantile"
    root: _QuantileRoot


class SlidingWindowMovingAverageSpec(_Spec):
    """The mean of the last window_size numbers."""

    key: ClassVar[str] = "sliding_window_moving_average"
    root: _SlidingAverageRoot


class ExponentialMovingAverageSpec(_Spec):
    """An exponentially weighted mean of all numbers so far."""

    key: ClassVar[str] = "exponential_moving_average"
    root: _EmaRoot


class ThrottleAverageSpec(_Spec):
    """Publish the mean of the numbers of each period, at the end of the period (nothing for a
    period without values)."""

    key: ClassVar[str] = "throttle_average"
    root: Duration = Field(description="The period (seconds, or '1min').")


class RoundSpec(_Spec):
    """Round numbers to this many decimals (halves away from zero)."""

    key: ClassVar[str] = "round"
    root: int = Field(ge=0, le=15, strict=True, description="Decimals (0..15).")


class DeltaSpec(_Spec):
    """Publish a value only when it changed enough since the last published one; values that
    are not numbers pass when they differ from it."""

    key: ClassVar[str] = "delta"
    root: Annotated[DeltaOptions, _shorthand("min_value", Threshold, DeltaOptions)]


class ThrottleSpec(_Spec):
    """Publish at most one value per period (the first; later ones in the period are dropped)."""

    key: ClassVar[str] = "throttle"
    root: Duration = Field(description="The period (seconds, or '10s').")


class HeartbeatSpec(_Spec):
    """Republish the last value every period, whether it changed or not."""

    key: ClassVar[str] = "heartbeat"
    root: Annotated[HeartbeatOptions, _shorthand("period", Duration, HeartbeatOptions)]


class TimeoutSpec(_Spec):
    """Pass values on; after a silence of `timeout` publish null (or `value`) once."""

    key: ClassVar[str] = "timeout"
    root: Annotated[TimeoutOptions, _shorthand("timeout", Duration, TimeoutOptions)]


class SkipInitialSpec(_Spec):
    """Drop the first values (a sensor's settling readings after start)."""

    key: ClassVar[str] = "skip_initial"
    root: int = Field(ge=1, strict=True, description="How many values to drop.")


class DebounceSpec(_Spec):
    """Publish a value only once no newer one came for a period (the last of a burst)."""

    key: ClassVar[str] = "debounce"
    root: Duration = Field(description="The quiet period (seconds, or '500ms').")


class OrSpec(_Spec):
    """Pass a value when any of these filters passes it (once); each item is one filter, as in
    ESPHome. `or: [{delta: 0.5}, {heartbeat: 300}]`: on change, or every 5 minutes."""

    key: ClassVar[str] = "or"
    root: list[FilterSpec] = Field(min_length=1, description="The filters, one per item.")


_SPECS: tuple[type[_Spec], ...] = (
    MultiplySpec,
    OffsetSpec,
    CalibrateLinearSpec,
    FilterOutSpec,
    ClampSpec,
    MedianSpec,
    MinSpec,
    MaxSpec,
    QuantileSpec,
    SlidingWindowMovingAverageSpec,
    ExponentialMovingAverageSpec,
    ThrottleAverageSpec,
    RoundSpec,
    DeltaSpec,
    ThrottleSpec,
    HeartbeatSpec,
    TimeoutSpec,
    SkipInitialSpec,
    DebounceSpec,
    OrSpec,
)
#: Every filter name, in the order of the documentation.
FILTER_NAMES: tuple[str, ...] = tuple(spec.key for spec in _SPECS)


def _filter_name(item: Any) -> str | None:
    """The union's tag: the item's single key (already checked by `_one_known_filter`)."""
    if isinstance(item, _Spec):
        return item.key
    if isinstance(item, Mapping) and len(item) == 1:
        return str(next(iter(item)))
    return None


def _one_known_filter(item: Any) -> Any:
    """One clear error for an item that is not `{known_filter: options}`, before the union
    would report one error per member."""
    if isinstance(item, _Spec):
        return item
    if not isinstance(item, Mapping) or not item:
        raise _error(
            "filter",
            f"a filter is a one-key mapping such as `- delta: 0.5`, got {item!r}",
        )
    if len(item) > 1:
        keys = ", ".join(repr(k) for k in item)
        raise _error("filter", f"one filter per list item, got {keys}: write each as its own item")
    name = next(iter(item))
    if name not in FILTER_NAMES:
        known = ", ".join(sorted(FILTER_NAMES))
        if name in _NOT_AVAILABLE:
            raise _error(
                "filter", f"ESPHome's filter {name!r} is not available here; known: {known}"
            )
        close = difflib.get_close_matches(str(name), FILTER_NAMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise _error("filter", f"unknown filter {name!r}{hint}; known: {known}")
    return item


#: One item of a `filters:` list.
FilterSpec = Annotated[
    Annotated[MultiplySpec, Tag("multiply")]
    | Annotated[OffsetSpec, Tag("offset")]
    | Annotated[CalibrateLinearSpec, Tag("calibrate_linear")]
    | Annotated[FilterOutSpec, Tag("filter_out")]
    | Annotated[ClampSpec, Tag("clamp")]
    | Annotated[MedianSpec, Tag("median")]
    | Annotated[MinSpec, Tag("min")]
    | Annotated[MaxSpec, Tag("max")]
    | Annotated[QuantileSpec, Tag("quantile")]
    | Annotated[SlidingWindowMovingAverageSpec, Tag("sliding_window_moving_average")]
    | Annotated[ExponentialMovingAverageSpec, Tag("exponential_moving_average")]
    | Annotated[ThrottleAverageSpec, Tag("throttle_average")]
    | Annotated[RoundSpec, Tag("round")]
    | Annotated[DeltaSpec, Tag("delta")]
    | Annotated[ThrottleSpec, Tag("throttle")]
    | Annotated[HeartbeatSpec, Tag("heartbeat")]
    | Annotated[TimeoutSpec, Tag("timeout")]
    | Annotated[SkipInitialSpec, Tag("skip_initial")]
    | Annotated[DebounceSpec, Tag("debounce")]
    | Annotated[OrSpec, Tag("or")],
    Discriminator(_filter_name),
    BeforeValidator(_one_known_filter),
]

OrSpec.model_rebuild()

#: The timeout `value` that republishes the last value instead of a fixed one (ESPHome's).
TIMEOUT_LAST: Value = "last"

__all__ = [
    "FILTER_NAMES",
    "TIMEOUT_LAST",
    "CalibrateLinearOptions",
    "CalibrateLinearSpec",
    "ClampOptions",
    "ClampSpec",
    "DebounceSpec",
    "DeltaOptions",
    "DeltaSpec",
    "Duration",
    "EmaOptions",
    "ExponentialMovingAverageSpec",
    "FilterOutSpec",
    "FilterSpec",
    "HeartbeatOptions",
    "HeartbeatSpec",
    "MaxSpec",
    "MedianSpec",
    "MinSpec",
    "MultiplySpec",
    "OffsetSpec",
    "OrSpec",
    "QuantileOptions",
    "QuantileSpec",
    "RoundSpec",
    "SkipInitialSpec",
    "SlidingAverageOptions",
    "SlidingWindowMovingAverageSpec",
    "ThrottleAverageSpec",
    "ThrottleSpec",
    "TimeoutOptions",
    "TimeoutSpec",
    "WindowOptions",
    "parse_duration",
    "parse_threshold",
]
