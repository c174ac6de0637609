"""Modbus RTU end to end: `gateway run` as a subprocess reads two slaves on one socat pty pair,
played by `gateway simulate modbus` (pymodbus's server), into a real mosquitto: values with
units through the sensor streams, Home Assistant discovery of the registers, a coil written
from MQTT with the device's answer in the reply, and an unplug/replug of the line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    FAST_BACKOFF,
    Broker,
    Daemon,
    Message,
    SerialPair,
    SerialPairFactory,
    Subscriber,
    gateway_config,
    missing_programs,
    wait_until,
)
from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(bool(missing_programs("socat", "mosquitto")), reason="needs socat"),
]


def publish(broker: Broker, topic: str, payload: bytes) -> None:
    client = Client(CallbackAPIVersion.VERSION2, client_id="modbus-e2e-pub")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(5.0)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def simulator(make_serial_pair: SerialPairFactory) -> Iterator[tuple[SerialPair, Any]]:
    pair = make_serial_pair("MB")

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "simulate", "modbus", "--port", pair.peer]
        )

    procs = [start()]
    yield pair, (procs, start)
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        proc.wait(5)


def devices(port: str) -> list[dict[str, Any]]:
    common = {
        "type": "modbus",
        "port": port,
        "parity": "N",
        "poll_interval": 0.3,
        "timeout": 0.3,
        "retries": 0,
        "backoff": dict(FAST_BACKOFF),
    }
    meter = {
        "id": "meter1",
        "unit_id": 1,
        "registers": [
            {
                "name": "voltage",
                "address": 0,
                "function": "input",
                "data_type": "float32",
                "unit": "V",
                "device_class": "voltage",
                "state_class": "measurement",
            },
            {
                "name": "energy",
                "address": 0x0156,
                "data_type": "uint32",
                "unit": "kWh",
                "device_class": "energy",
                "state_class": "total_increasing",
            },
            {"name": "relay", "address": 3, "function": "coil"},
        ],
        "sensors": {"voltage": {"filters": [{"round": 0}]}},
        **common,
    }
    thermometer = {
        "id": "room",
        "unit_id": 2,
        "registers": [
            {"name": "temperature", "address": 0, "data_type": "int16", "scale": 0.1, "unit": "°C"},
        ],
        **common,
    }
    return [meter, thermometer]


def value(subscriber: Subscriber, topic: str, after: int = 0) -> Any:
    msg = subscriber.wait_for(
        lambda m: m.topic == topic and subscriber.messages.index(m) >= after,
        timeout=10,
        what=topic,
    )
    return json.loads(msg.payload)["value"]


def test_two_slaves_on_one_line_to_mqtt_with_discovery_writes_and_replug(
    broker: Broker,
    subscriber: Subscriber,
    daemon: Daemon,
    simulator: tuple[SerialPair, Any],
) -> None:
    pair, (procs, start) = simulator
    cfg = gateway_config(broker, devices(pair.dev))
    cfg["homeassistant"] = {"discovery": True, "announce_delay": 0.2}
    daemon.start(cfg)
    volts = value(subscriber, "gateway/meter1/voltage")
    assert isinstance(volts, float)
    assert 227 <= volts <= 233
    assert volts == round(volts)  # through the sensor's stream: round 0
    assert 19 <= value(subscriber, "gateway/room/temperature") <= 23
    assert value(subscriber, "gateway/meter1/relay") is False
    assert len(daemon.pty_fds()) == 1  # one port for both slaves

    config = subscriber.wait_for(
        lambda m: m.topic == "homeassistant/device/gw1/gw1--meter1/config", what="discovery"
    )
    components = json.loads(config.payload)["components"]
    energy = components["energy"]
    assert (energy["unit_of_measurement"], energy["device_class"]) == ("kWh", "energy")
    assert energy["state_class"] == "total_increasing"
    assert components["relay"]["platform"] == "switch"  # a coil is a switch (issue 23)

    publish(broker, "gateway/meter1/set/relay", b"1")
    reply = subscriber.wait_for(lambda m: m.topic == "gateway/meter1/set/relay/result")
    assert reply.text == "ok: relay = on"
    wait_until(
        lambda: json.loads(subscriber.on_topic("gateway/meter1/relay")[-1].payload)["value"],
        5,
        "the relay read back on",
    )

    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        proc.wait(5)
    pair.unplug()
    daemon.wait_log("went away")
    assert daemon.pty_fds() == []
    pair.plug()
    procs.append(start())
    seen = len(subscriber.messages)
    assert 19 <= value(subscriber, "gateway/room/temperature", after=seen) <= 23
    value(subscriber, "gateway/meter1/voltage", after=seen)

    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0
    assert Path(pair.realpath).exists()


def is_reply(topic: str, text: str) -> Callable[[Message], bool]:
    return lambda m: m.topic == topic and m.text == text


def test_a_write_out_of_range_is_answered_and_the_session_stays_up(
    broker: Broker,
    subscriber: Subscriber,
    daemon: Daemon,
    simulator: tuple[SerialPair, Any],
) -> None:
    """Issue 21 (1, 17): `set/energy 1e30` raised decimal.InvalidOperation, which crashed the
    MQTT session ("link mqtt crashed (a bug)"), and `1e400` stored inf into a float register.
    Both are answered with an error; nothing is written; the session stays up."""
    pair, _ = simulator
    meter, room = devices(pair.dev)
    meter["registers"].append({"name": "limit", "address": 0x0160, "data_type": "float32"})
    daemon.start(gateway_config(broker, [meter, room]))
    value(subscriber, "gateway/meter1/energy")
    for register, text, kind in (
        ("energy", "1e30", "uint32"),
        ("limit", "1e400", "float32"),
        ("limit", "1e39", "float32"),
    ):
        publish(broker, f"gateway/meter1/set/{register}", text.encode())
        expected = f"error: {text} is out of range for {register} ({kind})"
        topic = f"gateway/meter1/set/{register}/result"
        subscriber.wait_for(is_reply(topic, expected), what=expected)
    publish(broker, "gateway/meter1/set/relay", b"1")
    reply = subscriber.wait_for(lambda m: m.topic == "gateway/meter1/set/relay/result")
    assert reply.text == "ok: relay = on"
    assert "crashed" not in daemon.log()
    assert daemon.log_count("mqtt: connected") == 1
