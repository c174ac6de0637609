"""The values inside a filter's options: durations (seconds, or ESPHome's strings "500ms", "10s",
"5min", "1h"), numbers, scalars, change thresholds and calibration datapoints, each checked
before pydantic's own validation so that the error says what was expected; and `filter_error`,
the error every filters module raises.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict  # pydantic needs it for TypedDicts before 3.12


def filter_error(kind: str, message: str) -> PydanticCustomError:
    # The message goes in through the context: a literal brace in it ("{median: {}}") would
    # otherwise be read as a template placeholder.
    return PydanticCustomError(kind, "{message}", {"message": message})


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
        raise filter_error("duration", f"expected a duration ({_DURATION_HINT}), got {value!r}")
    if not isinstance(value, str):
        return value
    match = _DURATION_RE.fullmatch(value.strip().lower())
    if match is None:
        raise filter_error("duration", f"{value!r} is not a duration; write {_DURATION_HINT}")
    unit = match["unit"]
    if not unit:
        raise filter_error("duration", f"{value!r} has no unit: write {match['number']} (seconds)")
    if unit not in _DURATION_UNITS:
        raise filter_error(
            "duration", f"unknown unit {unit!r} in {value!r}: use us, ms, s, min, h or d"
        )
    return float(match["number"]) * _DURATION_UNITS[unit]


def _number(value: Any) -> Any:
    # bool is an int to Python but never a number in a config: `multiply: true` is a mistake.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise filter_error("number", f"expected a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise filter_error("number", f"expected a finite number, got {value!r}")
    return value


def check_scalar(value: Any) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return _number(value)
    raise filter_error("value", f"expected a number, a string, true/false or null, got {value!r}")


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
    BeforeValidator(check_scalar, json_schema_input_type=bool | float | str | None),
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
            raise filter_error(
                "threshold", f"expected a number >= 0 or a percentage 0%..100%, got {value!r}"
            )
        return text
    number = _number(value)
    if number < 0:
        raise filter_error("threshold", f"a change threshold cannot be negative, got {value!r}")
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
            raise filter_error(
                "datapoint", f"{value!r} is not a datapoint such as '0.0 -> 0.5' (from -> to)"
            )
    elif isinstance(value, Mapping):
        if set(value) != {"from", "to"}:
            raise filter_error(
                "datapoint", f"a datapoint mapping has `from` and `to`, got {value!r}"
            )
        point = (_number(value["from"]), _number(value["to"]))
    elif isinstance(value, list | tuple) and len(value) == 2:
        point = (_number(value[0]), _number(value[1]))
    else:
        raise filter_error("datapoint", f"expected a datapoint such as '0.0 -> 0.5', got {value!r}")
    if not all(math.isfinite(v) for v in point):
        raise filter_error("datapoint", f"a datapoint needs finite numbers, got {value!r}")
    return (float(point[0]), float(point[1]))


Datapoint = Annotated[
    tuple[float, float],
    BeforeValidator(_datapoint, json_schema_input_type=str | DatapointFromTo),
]
