"""Home Assistant MQTT discovery end to end: the daemon as a subprocess, a real mosquitto, a pty.

What Home Assistant would read is checked with an independent client (paho): the retained
configs on the broker (read by a fresh subscription, which gets exactly the retained messages),
the re-announce after Home Assistant's `online`, the clearing of configs a reload removed or a
previous run left behind.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any

import pytest
from helpers import (
    Broker,
    Daemon,
    SerialPair,
    Subscriber,
    gateway_config,
    send_until_seen,
    serial_device,
    unique,
    wait_until,
)
from httpprobe import endpoint, sample, scrape
from paho.mqtt.client import Client, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion

pytestmark = pytest.mark.timeout(60)

PREFIX = "gateway"
NODE = "homeassistant/device/gw1"
BOILER = f"{NODE}/gw1--boiler/config"
GATEWAY = f"{NODE}/gw1/config"
SENSORS = {
    "temp": {
        "unit": "°C",
        "device_class": "temperature",
        "state_class": "measurement",
        "homeassistant": {"name": "Temperature", "suggested_display_precision": 1},
    }
}


def retained(broker: Broker, topic: str = "homeassistant/#") -> dict[str, bytes]:
    """The retained messages under `topic`, as a client connecting now gets them. A sentinel
    published after the SUBACK arrives after them (the broker sends in order)."""
    got: dict[str, bytes] = {}
    done = threading.Event()
    sentinel = f"homeassistant/sentinel/{unique()}"
    client = Client(CallbackAPIVersion.VERSION2, client_id=f"retained-{unique()}")

    def on_message(_c: Client, _u: Any, msg: MQTTMessage) -> None:
        if msg.topic == sentinel:
            done.set()
        elif msg.retain:
            got[msg.topic] = bytes(msg.payload)

    def on_subscribe(c: Client, *_: Any) -> None:
        c.publish(sentinel, b"", qos=1)

    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.subscribe(topic, qos=1)
        assert done.wait(5.0), "the sentinel did not come back"
    finally:
        client.disconnect()
        client.loop_stop()
    return got


def publish(broker: Broker, topic: str, payload: bytes, *, retain: bool = False) -> None:
    client = Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{unique()}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5.0)
    finally:
        client.disconnect()
        client.loop_stop()


def with_topic(broker: Broker, topic: str) -> dict[str, bytes] | None:
    """The retained messages, once `topic` is among them."""
    found = retained(broker)
    return found if topic in found else None


def config(
    broker: Broker, pair: SerialPair, *, ha: dict[str, Any] | None = None, **dev: Any
) -> dict[str, Any]:
    device = serial_device("boiler", pair, dev.pop("sensors", SENSORS), name="Boiler room", **dev)
    cfg = gateway_config(broker, [device])
    cfg["homeassistant"] = {"discovery": True, "announce_delay": 0.2, **(ha or {})}
    return cfg


def start(daemon: Daemon, cfg: dict[str, Any]) -> None:
    daemon.start(cfg)
    daemon.wait_log("mqtt: connected")


def decoded(payload: bytes) -> dict[str, Any]:
    obj = json.loads(payload)
    assert isinstance(obj, dict)
    return obj


def test_configured_devices_are_announced_with_every_field(
    daemon: Daemon, broker: Broker, serial_pair: SerialPair, subscriber: Subscriber
) -> None:
    start(daemon, config(broker, serial_pair, availability={"timeout": 120}))
    configs = wait_until(lambda: with_topic(broker, BOILER), 10.0, "configs")
    boiler = decoded(configs[BOILER])
    assert boiler["device"] == {
        "identifiers": ["iot-gateway:gw1:boiler"],
        "name": "Boiler room",
        "via_device": "iot-gateway:gw1",
    }
    assert boiler["origin"]["name"] == "iot-gateway"
    assert {"sw_version", "support_url"} <= boiler["origin"].keys()
    temp = boiler["components"]["temp"]
    assert temp["platform"] == "sensor"
    assert temp["unique_id"] == "gw1:boiler:temp"
    assert temp["default_entity_id"] == "sensor.boiler_temp"
    assert "object_id" not in temp
    assert temp["state_topic"] == f"{PREFIX}/boiler/temp"
    assert "value_json.value" in temp["value_template"]
    assert (temp["unit_of_measurement"], temp["device_class"], temp["state_class"]) == (
        "°C",
        "temperature",
        "measurement",
    )
    assert temp["expire_after"] == 120
    assert [a["topic"] for a in temp["availability"]] == [
        f"{PREFIX}/gw1/status",
        f"{PREFIX}/boiler/availability",
    ]
    assert temp["availability_mode"] == "all"
    assert (temp["name"], temp["suggested_display_precision"]) == ("Temperature", 1)
    # The gateway is a device too (the one `via_device` names), with its connectivity.
    gateway = decoded(configs[GATEWAY])
    assert gateway["device"]["identifiers"] == ["iot-gateway:gw1"]
    assert gateway["components"]["connectivity"]["state_topic"] == f"{PREFIX}/gw1/status"
    # A sensor the decoder names only when it sends it is announced when first seen, and
    # its values reach the state topic the config names.
    send_until_seen(serial_pair, subscriber, PREFIX, "boiler")
    serial_pair.write(b"hum=40\n")
    subscriber.wait_value(f"{PREFIX}/boiler/hum", 40)

    def announced_hum() -> dict[str, Any] | None:
        boiler = decoded(retained(broker)[BOILER])
        return boiler if "hum" in boiler["components"] else None

    learned = wait_until(announced_hum, 5.0, "hum announced")
    assert learned["components"]["hum"]["unique_id"] == "gw1:boiler:hum"


def test_home_assistant_online_brings_configs_and_last_values_again(
    daemon: Daemon, broker: Broker, serial_pair: SerialPair, subscriber: Subscriber
) -> None:
    # A birth message retained from long ago reaches the gateway when it subscribes: that is
    # not Home Assistant starting, nothing is announced twice for it.
    publish(broker, "homeassistant/status", b"online", retain=True)
    start(daemon, config(broker, serial_pair))
    send_until_seen(serial_pair, subscriber, PREFIX, "boiler")
    serial_pair.write(b"temp=21.5\n")
    first = subscriber.wait_value(f"{PREFIX}/boiler/temp", 21.5)
    time.sleep(0.5)  # (announce_delay is 0.2 s)
    assert "Home Assistant is online" not in daemon.log()
    announced = len(subscriber.on_topic(BOILER))
    assert announced >= 1
    # Home Assistant restarted: its birth message.
    publish(broker, "homeassistant/status", b"online")
    wait_until(lambda: len(subscriber.on_topic(BOILER)) > announced, 5.0, "re-announce")
    again = wait_until(
        # (`or None`: an empty list is not None, and would end the wait at once)
        lambda: [m for m in subscriber.on_topic(f"{PREFIX}/boiler/temp") if m is not first] or None,
        5.0,
        "the last value again",
    )
    # The same reading, byte for byte (same ts and seq: a consumer sees a repeat).
    assert again[-1].payload == first.payload
    assert "Home Assistant is online" in daemon.log()


def test_a_value_sent_with_a_new_config_is_sent_again_once_home_assistant_can_have_subscribed(
    daemon: Daemon, broker: Broker, serial_pair: SerialPair, subscriber: Subscriber
) -> None:
    """Issue 23, defect 2: Home Assistant subscribes to a new entity's state topic 70-150 ms
    after its config arrives, so the first line after a start (and the first value of a
    sensor learned at run time) was never shown. Each such value goes out once more,
    `state_resend_delay` after the config; only the new entity's, and only once."""
    temp, hum = f"{PREFIX}/boiler/temp", f"{PREFIX}/boiler/hum"
    daemon.start(config(broker, serial_pair, ha={"state_resend_delay": 1.5}))
    base = endpoint(daemon)
    daemon.wait_log("serial:boiler: opened")  # (a line written before the port opened is gone)
    daemon.wait_log("mqtt: connected")
    serial_pair.write(b"temp=21.5\n")  # at once: what Home Assistant would miss
    sent = wait_until(lambda: subscriber.on_topic(temp)[1:] or None, 10.0, "the value again")
    first, again = subscriber.on_topic(temp)
    assert again.payload == first.payload  # the same reading (same ts and seq)
    config_at = subscriber.on_topic(BOILER)[0].received
    assert again.received - config_at >= 1.5 - 0.1  # not before Home Assistant can listen
    assert sent == [again]
    # A sensor learned at run time: its config is new, its first value goes out again; the
    # entities Home Assistant has already (temp) are not sent again.
    serial_pair.write(b"hum=40\n")
    wait_until(lambda: len(subscriber.on_topic(hum)) == 2 or None, 10.0, "hum again")
    assert [m.value for m in subscriber.on_topic(hum)] == [40, 40]
    serial_pair.write(b"temp=22\n")
    subscriber.wait_value(temp, 22)
    assert [m.value for m in subscriber.on_topic(temp)] == [21.5, 21.5, 22]
    assert sample(scrape(base), "gateway_discovery_messages_total", kind="state") == 2
    assert daemon.log().count("value(s) again for new entities") == 2


def test_removed_sensors_and_devices_are_cleared(
    daemon: Daemon, broker: Broker, serial_pair: SerialPair, subscriber: Subscriber
) -> None:
    sensors = {**SENSORS, "hum": {"unit": "%", "device_class": "humidity"}}
    start(daemon, config(broker, serial_pair, sensors=sensors))
    wait_until(lambda: BOILER in retained(broker), 10.0, "configs")
    # A sensor removed by a reload: in device mode Home Assistant needs the component sent
    # as {"platform": ...} first, then the config without it.
    before = len(subscriber.on_topic(BOILER))
    daemon.write_config(config(broker, serial_pair))
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: len(subscriber.on_topic(BOILER)) >= before + 2, 10.0, "two configs")
    marker, final = (decoded(m.payload) for m in subscriber.on_topic(BOILER)[before : before + 2])
    assert marker["components"]["hum"] == {"platform": "sensor"}
    assert "hum" not in final["components"]
    assert "temp" in final["components"]
    assert "hum" not in decoded(retained(broker)[BOILER])["components"]
    # The device removed: its config is cleared (an empty retained payload deletes it).
    cfg = config(broker, serial_pair)
    cfg["devices"] = []
    daemon.write_config(cfg)
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: BOILER not in retained(broker), 10.0, "the device's config cleared")
    assert GATEWAY in retained(broker)


def test_configs_left_by_an_earlier_run_are_cleared_at_startup(
    daemon: Daemon, broker: Broker, serial_pair: SerialPair
) -> None:
    ghost = f"{NODE}/gw1--ghost/config"
    ours = {
        "device": {"identifiers": ["iot-gateway:gw1:ghost"], "name": "ghost"},
        "origin": {"name": "iot-gateway"},
        "components": {"t": {"platform": "sensor", "state_topic": "gateway/ghost/t"}},
    }
    foreign = f"{NODE}/someone-else/config"  # same node id, not published by us: kept
    publish(broker, ghost, json.dumps(ours).encode(), retain=True)
    publish(broker, foreign, b'{"device": {"identifiers": ["x"]}}', retain=True)
    start(daemon, config(broker, serial_pair))
    wait_until(lambda: ghost not in retained(broker), 10.0, "the ghost cleared")
    configs = retained(broker)
    assert BOILER in configs
    assert foreign in configs


def test_component_mode_announces_one_config_per_sensor(
    daemon: Daemon, broker: Broker, serial_pair: SerialPair
) -> None:
    start(daemon, config(broker, serial_pair, ha={"mode": "component"}))
    topic = "homeassistant/sensor/gw1/gw1--boiler--temp/config"
    configs = wait_until(lambda: with_topic(broker, topic), 10.0, "configs")
    temp = decoded(configs[topic])
    assert temp["unique_id"] == "gw1:boiler:temp"
    assert temp["device"]["identifiers"] == ["iot-gateway:gw1:boiler"]
    assert temp["unit_of_measurement"] == "°C"
    assert not any(t.startswith("homeassistant/device/") for t in configs)
