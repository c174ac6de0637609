"""One root model per filter, and ESPHome's shorthands for them.

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
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    RootModel,
    TypeAdapter,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema
from pydantic_core.core_schema import SerializerFunctionWrapHandler

from gateway.config.filters.options import (
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
from gateway.config.filters.scalars import (
    Datapoint,
    Duration,
    Number,
    Scalar,
    Threshold,
    check_scalar,
    filter_error,
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


class Spec(RootModel[Any]):
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
        raise filter_error("filter", f"expected a one-key mapping {{{cls.key}: ...}}, got {data!r}")

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


class MultiplySpec(Spec):
    """Multiply each number by a factor."""

    key: ClassVar[str] = "multiply"
    root: Number = Field(description="The factor.")


class OffsetSpec(Spec):
    """Add a constant to each number."""

    key: ClassVar[str] = "offset"
    root: Number = Field(description="What to add (negative to subtract).")


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


class FilterOutSpec(Spec):
    """Drop readings equal to one of these values (any type: numbers, strings, true/false,
    null). Numbers compare exactly: put `round` first for a sensor with noise."""

    key: ClassVar[str] = "filter_out"
    root: Annotated[
        list[Scalar],
        Field(min_length=1, description="A value or a list of values to drop."),
        BeforeValidator(_listed, json_schema_input_type=bool | float | str | None | list[Scalar]),
    ]


class ClampSpec(Spec):
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


class MedianSpec(Spec):
    """The median of the last window_size numbers (the mean of the two middle ones for an even
    count)."""

    key: ClassVar[str] = "median"
    root: _WindowRoot


class MinSpec(Spec):
    """The smallest of the last window_size numbers."""

    key: ClassVar[str] = "min"
    root: _WindowRoot


class MaxSpec(Spec):
    """The largest of the last window_size numbers."""

    key: ClassVar[str] = "max"
    root: _WindowRoot


class QuantileSpec(Spec):
    """A quantile of the last window_size numbers (a value from the window)."""

    key: ClassVar[str] = "quantile"
    root: _QuantileRoot


class SlidingWindowMovingAverageSpec(Spec):
    """The mean of the last window_size numbers."""

    key: ClassVar[str] = "sliding_window_moving_average"
    root: _SlidingAverageRoot


class ExponentialMovingAverageSpec(Spec):
    """An exponentially weighted mean of all numbers so far."""

    key: ClassVar[str] = "exponential_moving_average"
    root: _EmaRoot


class ThrottleAverageSpec(Spec):
    """Publish the mean of the numbers of each period, at the end of the period (nothing for a
    period without values)."""

    key: ClassVar[str] = "throttle_average"
    root: Duration = Field(description="The period (seconds, or '1min').")


class RoundSpec(Spec):
    """Round numbers to this many decimals (halves away from zero)."""

    key: ClassVar[str] = "round"
    root: int = Field(ge=0, le=15, strict=True, description="Decimals (0..15).")


class DeltaSpec(Spec):
    """Publish a value only when it changed enough since the last published one; values that
    are not numbers pass when they differ from it."""

    key: ClassVar[str] = "delta"
    root: Annotated[DeltaOptions, _shorthand("min_value", Threshold, DeltaOptions)]


class ThrottleSpec(Spec):
    """Publish at most one value per period (the first; later ones in the period are dropped)."""

    key: ClassVar[str] = "throttle"
    root: Duration = Field(description="The period (seconds, or '10s').")


class HeartbeatSpec(Spec):
    """Republish the last value every period, whether it changed or not."""

    key: ClassVar[str] = "heartbeat"
    root: Annotated[HeartbeatOptions, _shorthand("period", Duration, HeartbeatOptions)]


class TimeoutSpec(Spec):
    """Pass values on; after a silence of `timeout` publish null (or `value`) once."""

    key: ClassVar[str] = "timeout"
    root: Annotated[TimeoutOptions, _shorthand("timeout", Duration, TimeoutOptions)]


class SkipInitialSpec(Spec):
    """Drop the first values (a sensor's settling readings after start)."""

    key: ClassVar[str] = "skip_initial"
    root: int = Field(ge=1, strict=True, description="How many values to drop.")


class DebounceSpec(Spec):
    """Publish a value only once no newer one came for a period (the last of a burst)."""

    key: ClassVar[str] = "debounce"
    root: Duration = Field(description="The quiet period (seconds, or '500ms').")
