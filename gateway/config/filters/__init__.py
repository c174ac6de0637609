"""The config of a sensor stream's filters: ESPHome's filter names and YAML shapes.

In YAML, `filters:` is a list whose items are one-key mappings (`- median: {window_size: 5}`);
`FilterSpec` is one item. Each filter is registered once (`registry.register_filter`) with its
name, its config model and what it builds; `gateway.streams.chain.build_chain` turns a list of
these into a running chain.

One module per layer, each importing only those before it: `scalars` (durations, numbers,
thresholds, datapoints: the values inside options), `options` (the option models, ESPHome's
defaults), `registry` (`Spec`, `FILTERS`), `specs` (the built-in filters, ESPHome's
shorthands), `union` (`FilterSpec`, routed by the item's key, with its errors for an unknown
name; `or`). The filters' own models are imported from `specs` (and `union` for `or`).
"""

from gateway.config.filters.options import TIMEOUT_LAST
from gateway.config.filters.registry import FILTERS, Spec, register_filter
from gateway.config.filters.scalars import Duration, parse_duration, parse_threshold
from gateway.config.filters.union import FilterSpec, OrSpec, filter_names

__all__ = [
    "FILTERS",
    "TIMEOUT_LAST",
    "Duration",
    "FilterSpec",
    "OrSpec",
    "Spec",
    "filter_names",
    "parse_duration",
    "parse_threshold",
    "register_filter",
]
