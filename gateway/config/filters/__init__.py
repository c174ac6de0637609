"""The config of a sensor stream's filters: ESPHome's filter names and YAML shapes.

In YAML, `filters:` is a list whose items are one-key mappings (`- median: {window_size: 5}`);
`FilterSpec` is one item. `gateway.streams.chain.build_chain` turns a list of these into a
running chain.

One module per layer, each importing only those before it: `scalars` (durations, numbers,
thresholds, datapoints: the values inside options), `options` (the option models, ESPHome's
defaults), `specs` (one root model per filter, ESPHome's shorthands), `union` (`FilterSpec`,
routed by the item's key, with its errors for an unknown name; `or`; `FILTER_NAMES`).
Everything is importable from `gateway.config.filters`.
"""

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
from gateway.config.filters.scalars import Duration, parse_duration, parse_threshold
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
    ThrottleAverageSpec,
    ThrottleSpec,
    TimeoutSpec,
)
from gateway.config.filters.union import FILTER_NAMES, FilterSpec, OrSpec

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
