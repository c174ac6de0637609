"""`FilterSpec`, one item of a `filters:` list: the union of every registered filter, routed by
the item's single key. A misspelt name or two filters in one item give one error that says so
(naming the closest known filter, or an ESPHome filter that is not available here), instead of
one error per union member. `or` is here too: its items are this union again.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Union

from pydantic import BeforeValidator, ConfigDict, Discriminator, Field, GetCoreSchemaHandler, Tag
from pydantic_core import CoreSchema

from gateway.config.filters import specs  # noqa: F401 - registers the built-in filters
from gateway.config.filters.registry import FILTERS, Spec, register_filter
from gateway.config.filters.scalars import filter_error
from gateway.streams.filters import Filter, Or

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
    if name not in FILTERS:
        known = ", ".join(sorted(FILTERS.names()))
        if name in _NOT_AVAILABLE:
            raise filter_error(
                "filter", f"ESPHome's filter {name!r} is not available here; known: {known}"
            )
        close = difflib.get_close_matches(str(name), FILTERS.names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise filter_error("filter", f"unknown filter {name!r}{hint}; known: {known}")
    return item


class _RegisteredFilters:
    """The union of the registered filters, routed by the item's single key (the tag), built
    when a model that holds `FilterSpec` builds its schema: a filter registered later is in the
    union once the models are rebuilt (`gateway.config.root` does that when the registry
    changes)."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        members = tuple(Annotated[spec, Tag(spec.key)] for spec in FILTERS.values())
        return handler.generate_schema(
            Annotated[Union[members], Discriminator(_filter_name)]  # noqa: UP007 - built at run time
        )


#: One item of a `filters:` list (a `Spec`: its `build()` makes the running filter).
FilterSpec = Annotated[Spec, _RegisteredFilters(), BeforeValidator(_one_known_filter)]


@register_filter
class OrSpec(Spec):
    """Pass a value when any of these filters passes it (once); each item is one filter, as in
    ESPHome. `or: [{delta: 0.5}, {heartbeat: 300}]`: on change, or every 5 minutes."""

    # Built on first use, once it is registered: so that an `or` may hold an `or`.
    model_config = ConfigDict(frozen=True, defer_build=True)
    key: ClassVar[str] = "or"
    root: list[FilterSpec] = Field(min_length=1, description="The filters, one per item.")

    def build(self) -> Filter:
        return Or([branch.build() for branch in self.root])


def filter_names() -> tuple[str, ...]:
    """Every filter name, in the order of the documentation."""
    return FILTERS.names()
