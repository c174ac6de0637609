"""What was seen (`gateway/recent.py`, `health.Seen`): a value no float can hold draws no point
and exports no gauge, and neither raises (issue 21, item 7: it made the serial callback and
/metrics fail)."""

from __future__ import annotations

import math

from gateway.health import Seen
from gateway.metrics import Metrics
from gateway.models import Reading
from gateway.recent import Recent, as_number

HUGE = 10**400


def test_as_number_of_an_int_beyond_a_float_is_none() -> None:
    assert as_number(HUGE) is None
    assert as_number(-HUGE) is None
    assert as_number(math.inf) is None
    assert as_number(2**63) == float(2**63)


def test_recent_records_a_huge_int_without_a_point() -> None:
    recent = Recent()
    recent.record(Reading("boiler", "big", HUGE, None, 1.0))
    assert list(recent.of("boiler")["big"].ring) == []


def test_seen_exports_no_gauge_for_a_value_no_float_holds() -> None:
    seen, metrics = Seen(keep_values=True), Metrics()
    for value in (HUGE, math.nan, 21.5):
        seen.record(Reading("boiler", "temp", value, "°C", 1.0))
        seen.record(Reading("boiler", "big", value, None, 1.0))
        seen.export(metrics)
    get = metrics.registry.get_sample_value
    assert get("gateway_sensor_value", {"device": "boiler", "sensor": "temp", "unit": "°C"}) == 21.5
