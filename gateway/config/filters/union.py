"""`FilterSpec`, one item of a `filters:` list: the union of every filter, routed by the item's
single key. A misspelt name or two filters in one item give one error that says so (naming the
closest known filter, or an ESPHome filter that is not available here), instead of one error
per union member. `or` is here too: its items are this union again.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Discriminator, Field, Tag

from gateway.config.filters.scalars import filter_error
from gateway.config.filters.specs import (
    CalibrateLinearSpec,
    ClampSpec,
    DebounceSpec,
    DeltaSpec,
    ExponentialMovingAverageSpec,
    FilterOutSpec,
    HeartbeatSpec,
    MaxSpec,
    MedianSpec,
    MinSpec,
    MultiplySpec,
    OffsetSpec,
    QuantileSpec,
    RoundSpec,
    SkipInitialSpec,
    SlidingWindowMovingAverageSpec,
    Spec,
    ThrottleAverageSpec,
    ThrottleSpec,
    TimeoutSpec,
)

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


class OrSpec(Spec):
    """Pass a value when any of these filters passes it (once); each item is one filter, as in
    ESPHome. `or: [{delta: 0.5}, {heartbeat: 300}]`: on change, or every 5 minutes."""

    key: ClassVar[str] = "or"
    root: list[FilterSpec] = Field(min_length=1, description="The filters, one per item.")


_SPECS: tuple[type[Spec], ...] = (
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
    if isinstance(item, Spec):
        return item.key
    if isinstance(item, Mapping) and len(item) == 1:
        return str(next(iter(item)))
    return None


def _one_known_filter(item: Any) -> Any:
    """One clear error for an item that is not `{known_filter: options}`, before the union
    would report one error per member."""
    if isinstance(item, Spec):
        return item
    if not isinstance(item, Mapping) or not item:
        raise filter_error(
            "filter",
            f"a filter is a one-key mapping such as `- delta: 0.5`, got {item!r}",
        )
    if len(item) > 1:
        keys = ", ".join(repr(k) for k in item)
        raise filter_error(
            "filter", f"one filter per list item, got {keys}: write each as its own item"
        )
    name = next(iter(item))
    if name not in FILTER_NAMES:
        known = ", ".join(sorted(FILTER_NAMES))
        if name in _NOT_AVAILABLE:
            raise filter_error(
                "filter", f"ESPHome's filter {name!r} is not available here; known: {known}"
            )
        close = difflib.get_close_matches(str(name), FILTER_NAMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise filter_error("filter", f"unknown filter {name!r}{hint}; known: {known}")
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
