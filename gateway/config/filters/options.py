"""The option models of the filters that take a mapping (`median: {window_size: 5}`): ESPHome's
defaults, the field descriptions, and the checks between fields (send_first_at within
send_every, max_value above min_value).
"""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from gateway.config.base import Model
from gateway.config.filters.scalars import (
    Datapoint,
    Duration,
    Number,
    Scalar,
    Threshold,
    filter_error,
    parse_threshold,
)
from gateway.models import Value


def _first_at_within_every(value: int, info: ValidationInfo) -> int:
    every = info.data.get("send_every")
    if every is not None and value > every:
        raise filter_error(
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
                raise filter_error(
                    "datapoints",
                    "with method: exact the `from` values must be ascending, without duplicates",
                )
        elif len(set(xs)) == 1:
            raise filter_error(
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
            raise filter_error("clamp", f"max_value ({value}) is below min_value ({low})")
        return value

    @model_validator(mode="after")
    def _has_a_bound(self) -> ClampOptions:
        if self.min_value is None and self.max_value is None:
            raise filter_error("clamp", "set min_value, max_value or both")
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
            raise filter_error(
                "delta", f"max_value ({value}) must be above min_value ({low}): nothing would pass"
            )
        return value

    @model_validator(mode="after")
    def _has_a_bound(self) -> DeltaOptions:
        if not self.model_fields_set:
            raise filter_error("delta", "set min_value, max_value or both (or write `delta: 0.5`)")
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


#: The timeout `value` that republishes the last value instead of a fixed one (ESPHome's).
TIMEOUT_LAST: Value = "last"
