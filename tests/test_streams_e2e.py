"""Sensor streams end to end: the daemon as a subprocess, a real mosquitto, real ptys.

Filters between the decoder and the broker (what passes, what is dropped and counted), timed
filters (heartbeat, timeout) on the real clock, `payload: device`, and each device's retained
availability: offline on link loss and after `availability.timeout` of silence, online again
with the next value.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest
from helpers import (
    Broker,
    Daemon,
    SerialPair,
    SerialPairFactory,
    Subscriber,
    gateway_config,
    send_until_seen,
    serial_device,
    wait_consumed,
    wait_until,
)
from httpprobe import endpoint, sample, scrape, status

pytestmark = pytest.mark.timeout(40)

PREFIX = "gateway"


def start(daemon: Daemon, broker: Broker, pair: SerialPair, **device: Any) -> str:
    daemon.start(gateway_config(broker, [serial_device("boiler", pair, **device)]))
    daemon.wait_log("mqtt: connected")
    return endpoint(daemon)


def values(sub: Subscriber, topic: str) -> list[Any]:
    return [m.value for m in sub.on_topic(topic)]


def test_filters_transform_and_drop_values_and_count_the_drops(
    daemon: Daemon, broker: Broker, serial_pair: SerialPair, subscriber: Subscriber
) -> None:
    temp = {
        "unit": "°C",
        "filters": [
            {"filter_out": 85},  # DS18B20's power-on value
            {"offset": -0.5},
            {"round": 1},
            {"delta": 0.2},
        ],
    }
    base = start(daemon, broker, serial_pair, sensors={"temp": temp})
    send_until_seen(serial_pair, subscriber, PREFIX, "boiler")
    for value in (20.0, 85, 20.1, 21.0, 85, 21.3):
        serial_pair.write(f"temp={value}\n".encode())
    wait_consumed(daemon, serial_pair)
    topic = f"{PREFIX}/boiler/temp"
    subscriber.wait_value(topic, 20.8)
    # 20.0 -> 19.5 published; 85 dropped; 20.1 -> 19.6, within 0.2 of the last published
    # value: dropped by delta; 21.0 -> 20.5; 85 dropped; 21.3 -> 20.8 (0.3 from 20.5).
    assert values(subscriber, topic) == [19.5, 20.5, 20.8]
    samples = scrape(base)
    labels = {"device": "boiler", "sensor": "temp"}
    assert sample(samples, "gateway_filter_dropped_total", **labels, filter="filter_out") == 2
    assert sample(samples, "gateway_filter_dropped_total", **labels, filter="delta") == 1


def test_heartbeat_republishes_and_timeout_publishes_null_after_silence(
    daemon: Daemon, broker: Broker, serial_pair: SerialPair, subscriber: Subscriber
) -> None:
    sensors = {
        "temp": {"filters": [{"or": [{"delta": 0.5}, {"heartbeat": 0.5}]}]},
        "hum": {"filters": [{"timeout": "1s"}]},
    }
    start(daemon, broker, serial_pair, sensors=sensors)
    send_until_seen(serial_pair, subscriber, PREFIX, "boiler")
    serial_pair.write(b"temp=21.5 hum=40\n")
    temp, hum = f"{PREFIX}/boiler/temp", f"{PREFIX}/boiler/hum"
    subscriber.wait_value(hum, 40)
    # Unchanged, yet published again every 0.5 s by the heartbeat; the value keeps the time
    # it was read.
    wait_until(lambda: len(values(subscriber, temp)) >= 3, 5.0, "three heartbeats")
    stamps = {m.data["ts"] for m in subscriber.on_topic(temp) if m.data}
    assert set(values(subscriber, temp)) == {21.5}
    assert len(stamps) == 1
    # No new humidity for 1 s: null.
    null = subscriber.wait_for(
        lambda m: m.topic == hum and m.data is not None and m.data["value"] is None,
        5.0,
        "hum = null",
    )
    assert null.data is not None
    assert null.data["ts"] > min(stamps)
    # The device unplugged (offline): its last value is not presented as current any more.
    serial_pair.unplug()
    wait_until(
        lambda: any(
            m.text == "offline" for m in subscriber.on_topic(f"{PREFIX}/boiler/availability")
        ),
        5.0,
        "offline",
    )
    time.sleep(0.2)  # a heartbeat already on its way
    beats = len(values(subscriber, temp))
    time.sleep(1.5)  # three periods
    assert len(values(subscriber, temp)) == beats


def test_device_payload_is_one_object_per_frame_with_every_sensor(
    daemon: Daemon, broker: Broker, serial_pair: SerialPair, subscriber: Subscriber
) -> None:
    start(daemon, broker, serial_pair, payload="device")
    topic = f"{PREFIX}/boiler"

    def objects() -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in subscriber.on_topic(topic)]

    serial_pair.write(b"temp=21.5 hum=40\n")
    first = wait_until(
        lambda: next((o for o in objects() if o.get("temp") == 21.5), None), 10.0, "an object"
    )
    assert first["hum"] == 40
    assert isinstance(first["ts"], float)
    assert isinstance(first["seq"], int)
    serial_pair.write(b"temp=22\n")  # a frame with one sensor: the object still has both
    second = wait_until(
        lambda: next((o for o in objects() if o.get("temp") == 22), None), 5.0, "a 2nd object"
    )
    assert second["hum"] == 40
    assert second["seq"] > first["seq"]
    assert subscriber.on_topic(f"{PREFIX}/boiler/temp") == []


def test_availability_follows_the_link_and_the_timeout(
    daemon: Daemon, broker: Broker, serial_pair: SerialPair, subscriber: Subscriber
) -> None:
    start(daemon, broker, serial_pair, availability={"timeout": 1.0})
    topic = f"{PREFIX}/boiler/availability"

    def last() -> str | None:
        found = subscriber.on_topic(topic)
        return found[-1].text if found else None

    send_until_seen(serial_pair, subscriber, PREFIX, "boiler")
    wait_until(lambda: last() == "online", 5.0, "online")
    # Silence beyond the timeout: offline, though the port is open.
    wait_until(lambda: last() == "offline", 5.0, "offline after the timeout")
    assert daemon.log().count("nothing decoded for 1s: offline") == 1
    serial_pair.write(b"temp=1\n")
    wait_until(lambda: last() == "online", 5.0, "online with the next value")
    # The link lost: offline at once, whatever the timeout says.
    serial_pair.write(b"temp=2\n")
    serial_pair.unplug()
    wait_until(lambda: last() == "offline", 5.0, "offline on link loss")


def test_every_silence_ends_in_offline_and_every_reading_after_it_in_online(
    daemon: Daemon, broker: Broker, serial_pair: SerialPair, subscriber: Subscriber
) -> None:
    """Issue 23, defect 1: the timer fired once per link start. After the first silence the
    device spoke again (`online`), and the next silence published nothing, ever: the timer
    slept without a deadline once stale, and a value only woke it for filter deadlines."""
    start(daemon, broker, serial_pair, availability={"timeout": 1.0})
    topic = f"{PREFIX}/boiler/availability"

    def states() -> list[str]:
        return [m.text for m in subscriber.on_topic(topic)]

    def next_state(after: int, state: str, what: str) -> int:
        """The index of the first `state` past `after` (the machine's load cannot make us miss
        a state that came and went between two polls)."""
        return wait_until(
            lambda: next((i for i, s in enumerate(states()) if i > after and s == state), None),
            5.0,
            what,
        )

    send_until_seen(serial_pair, subscriber, PREFIX, "boiler")
    wait_until(lambda: states()[-1:] == ["online"], 5.0, "online")
    at = len(states()) - 1 - states()[::-1].index("online")
    first_offline = at + 1
    for n in range(1, 4):
        at = next_state(at, "offline", f"offline after silence {n}")
        serial_pair.write(f"temp={n}\n".encode())
        at = next_state(at, "online", f"online after the reading that ended silence {n}")
    # Each state change once, in order: no repeats, nothing missed.
    assert states()[first_offline : at + 1] == ["offline", "online"] * 3
    # Each silence logged (a link not up yet at connect publishes `offline` without a line).
    assert daemon.log().count("nothing decoded for 1s: offline") >= 3


def test_a_reload_restarts_a_changed_devices_stream_and_keeps_the_others(
    daemon: Daemon, broker: Broker, make_serial_pair: SerialPairFactory, subscriber: Subscriber
) -> None:
    pairs = {name: make_serial_pair(name.upper()) for name in ("a", "b")}

    def cfg(period_a: float) -> dict[str, Any]:
        periods = {"a": period_a, "b": 30.0}
        devices = [
            serial_device(n, pairs[n], sensors={"temp": {"filters": [{"heartbeat": p}]}})
            for n, p in periods.items()
        ]
        return gateway_config(broker, devices)

    daemon.start(cfg(30))
    base = endpoint(daemon)
    for name, pair in pairs.items():
        send_until_seen(pair, subscriber, PREFIX, name)
    links = status(base)["links"]
    assert links["stream:a"]["starts"] == links["stream:b"]["starts"] == 1
    daemon.write_config(cfg(0.3))
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("reload: ")
    wait_until(lambda: status(base)["links"]["stream:a"]["starts"] == 2, 5.0, "stream:a again")
    assert status(base)["links"]["stream:b"]["starts"] == 1
    # The new filter is the one running: a heartbeat of device a every 0.3 s.
    pairs["a"].write(b"temp=5\n")
    wait_until(lambda: values(subscriber, f"{PREFIX}/a/temp").count(5) >= 2, 5.0, "heartbeats")
    assert values(subscriber, f"{PREFIX}/b/temp") == []
