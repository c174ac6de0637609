"""The encode stage (`gateway/encoding.py`) against a real outbox: values JSON cannot carry are
counted, never published (issue 21, items 7 and 16), and a `payload: device` object holds a
bounded number of sensors, forgetting those not seen for a while (item 12)."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import pytest

from gateway.config import Config
from gateway.encoding import Encoder
from gateway.metrics import Metrics
from gateway.models import Reading, Value
from gateway.mqtt.topics import device_payload, reading_payload, render
from gateway.outbox import Outbox

pytestmark = pytest.mark.timeout(30)

HUGE = 10**400


def config(**device: Any) -> Config:
    serial = {"id": "boiler", "type": "serial", "port": "/dev/ttyX", **device}
    return Config.model_validate({"gateway": {"id": "gw"}, "devices": [serial]})


def payloads(outbox: Outbox) -> list[dict[str, Any]]:
    """Every accepted message's payload, parsed strictly (NaN and Infinity are not JSON)."""

    def strict(constant: str) -> None:
        raise AssertionError(f"{constant} in a payload")

    return [json.loads(render(r), parse_constant=strict) for r in outbox.writer.unwritten.values()]


def dropped(outbox: Outbox, reason: str) -> float:
    metrics: Metrics = outbox._metrics
    value = metrics.registry.get_sample_value(
        "gateway_readings_dropped_total", {"device": "boiler", "reason": reason}
    )
    return value or 0.0


def frame(ts: float = 1000.0, **values: Value | None) -> list[Reading]:
    return [Reading("boiler", name, value, None, ts) for name, value in values.items()]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, HUGE, -HUGE])
async def test_a_value_json_cannot_carry_is_counted_not_published(
    outbox: Outbox, bad: Value
) -> None:
    encoder = Encoder(outbox, config(), outbox._metrics)
    encoder.publish(frame(temp=21.5, bad=bad, hum=40))
    assert [p["value"] for p in payloads(outbox)] == [21.5, 40]
    assert dropped(outbox, "not_a_number") == 1


@pytest.mark.parametrize("bad", [math.nan, math.inf, HUGE])
async def test_device_mode_leaves_out_a_value_json_cannot_carry(outbox: Outbox, bad: Value) -> None:
    encoder = Encoder(outbox, config(payload="device"), outbox._metrics)
    encoder.publish(frame(temp=21.5, bad=bad))
    encoder.publish(frame(hum=40))
    assert [{k: v for k, v in p.items() if k != "ts"} for p in payloads(outbox)] == [
        {"temp": 21.5, "seq": 1},
        {"temp": 21.5, "hum": 40, "seq": 2},
    ]
    assert dropped(outbox, "not_a_number") == 1


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_payload_builders_refuse_non_finite_numbers_rather_than_write_invalid_json(
    bad: float,
) -> None:
    """The last guard: `Infinity` is not JSON; a ValueError the encoder counts is better."""
    with pytest.raises(ValueError, match="JSON"):
        reading_payload(Reading("boiler", "t", bad, None, 0.0), 1)
    with pytest.raises(ValueError, match="JSON"):
        device_payload(({"t": bad}, 0.0), 1)


# -- payload: device, bounded (item 12) --------------------------------------------------------


async def test_device_mode_refuses_new_sensors_beyond_max_sensors(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    encoder = Encoder(outbox, config(payload="device", max_sensors=3), outbox._metrics)
    with caplog.at_level(logging.WARNING, logger="gateway.encoding"):
        for n in range(500):  # a decoder that names its sensors from the data
            encoder.publish(frame(ts=1000.0 + n, temp=21.5, **{f"k{n}": n}))
    last = payloads(outbox)[-1]
    assert set(last) == {"temp", "k0", "k1", "ts", "seq"}
    assert dropped(outbox, "too_many_sensors") == 498
    refusals = [r for r in caplog.records if "max_sensors" in r.getMessage()]
    assert len(refusals) == 1  # at most once a minute per device
    assert "boiler" in refusals[0].getMessage()


async def test_configured_sensors_always_have_room(outbox: Outbox) -> None:
    cfg = config(payload="device", max_sensors=1, sensors={"hum": {"unit": "%"}})
    encoder = Encoder(outbox, cfg, outbox._metrics)
    encoder.publish(frame(temp=21.5, other=1))
    encoder.publish(frame(hum=40))
    assert {k: v for k, v in payloads(outbox)[-1].items() if k != "ts"} == {
        "temp": 21.5,
        "hum": 40,
        "seq": 2,
    }
    assert dropped(outbox, "too_many_sensors") == 1


async def test_device_mode_forgets_sensors_not_seen_for_sensor_expire_after(
    outbox: Outbox,
) -> None:
    cfg = config(payload="device", max_sensors=2, sensor_expire_after=60)
    encoder = Encoder(outbox, cfg, outbox._metrics)
    encoder.publish(frame(ts=1000.0, a=1, b=2))
    encoder.publish(frame(ts=1030.0, a=3))
    encoder.publish(frame(ts=1070.0, a=4, c=5))  # b: 70 s unseen, gone; c takes its place
    encoder.publish(frame(ts=1100.0, d=6))  # a and c are fresh: no room for d
    states = [{k: v for k, v in p.items() if k not in {"ts", "seq"}} for p in payloads(outbox)]
    assert states == [{"a": 1, "b": 2}, {"a": 3, "b": 2}, {"a": 4, "c": 5}]  # d: no message
    assert dropped(outbox, "too_many_sensors") == 1


async def test_the_payload_of_500_lines_with_new_keys_stays_bounded(outbox: Outbox) -> None:
    """The issue's figure: 379 KB per message after 500 lines, each with a new key."""
    encoder = Encoder(outbox, config(payload="device"), outbox._metrics)
    for n in range(500):
        encoder.publish(frame(ts=1000.0 + n, **{f"sensor_with_a_long_name_{n}": n}))
    last = list(outbox.writer.unwritten.values())[-1]
    assert len(json.loads(render(last))) == 64 + 2  # the default max_sensors, ts and seq
    assert len(render(last)) < 4096
