"""Modbus over the network end to end: `gateway run` as a subprocess reads the two units of
`gateway simulate modbus --tcp/--rtu-over-tcp/--udp PORT` (pymodbus's own servers, on loopback)
over one shared connection into a real mosquitto: values, a coil written from MQTT, `/status`
and the metrics with the connection and its devices; and an independent client (mbpoll) reads
the same values the gateway publishes."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import (
    FAST_BACKOFF,
    Broker,
    Daemon,
    Subscriber,
    free_port,
    gateway_config,
    missing_programs,
    port_open,
    wait_until,
)
from httpprobe import endpoint, sample, scrape, status
from test_modbus_e2e import publish, value

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(bool(missing_programs("mosquitto")), reason="needs mosquitto"),
]

FLAGS = {"tcp": "--tcp", "rtu_over_tcp": "--rtu-over-tcp", "udp": "--udp"}


@pytest.fixture
def port() -> int:
    return free_port()


@contextlib.contextmanager
def simulated(transport: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "simulate", "modbus", FLAGS[transport], str(port)]
    )
    try:
        if transport != "udp":
            wait_until(lambda: port_open(port), 10, f"the simulator on {port}")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(5)


def devices(transport: str, port: int) -> list[dict[str, Any]]:
    common = {
        "type": "modbus",
        "transport": transport,
        "host": "127.0.0.1",
        "port": port,
        "poll_interval": 0.3,
        "timeout": 0.5,
        "retries": 1,
        "backoff": dict(FAST_BACKOFF),
    }
    meter = {
        "id": "meter1",
        "unit_id": 1,
        "registers": [
            {"name": "voltage", "address": 0, "function": "input", "data_type": "float32"},
            {"name": "current", "address": 2, "function": "input", "data_type": "float32"},
            {"name": "power", "address": 4, "function": "input", "data_type": "int32"},
            {"name": "energy", "address": 0x0156, "data_type": "uint32", "unit": "kWh"},
            {"name": "relay", "address": 3, "function": "coil"},
        ],
        **common,
    }
    room = {
        "id": "room",
        "unit_id": 2,
        "registers": [
            {"name": "temperature", "address": 0, "data_type": "int16", "scale": 0.1},
            {"name": "humidity", "address": 1},
        ],
        **common,
    }
    return [meter, room]


@pytest.mark.parametrize("transport", ["tcp", "rtu_over_tcp", "udp"])
def test_two_units_over_one_connection_to_mqtt_with_a_write_and_status(
    transport: str, port: int, broker: Broker, subscriber: Subscriber, daemon: Daemon
) -> None:
    with simulated(transport, port):
        daemon.start(gateway_config(broker, devices(transport, port)))
        assert 225 <= value(subscriber, "gateway/meter1/voltage") <= 235
        assert 19 <= value(subscriber, "gateway/room/temperature") <= 23
        assert value(subscriber, "gateway/meter1/relay") is False
        subscriber.wait_for(
            lambda m: m.topic == "gateway/meter1/availability" and m.text == "online",
            what="meter1 online",
        )

        publish(broker, "gateway/meter1/set/relay", b"1")
        reply = subscriber.wait_for(lambda m: m.topic == "gateway/meter1/set/relay/result")
        assert reply.text == "ok: relay = on"
        wait_until(
            lambda: json.loads(subscriber.on_topic("gateway/meter1/relay")[-1].payload)["value"],
            5,
            "the relay read back on",
        )
        wait_until(  # the relay switches the simulated load on
            lambda: (
                json.loads(subscriber.on_topic("gateway/meter1/current")[-1].payload)["value"] > 2
            ),
            5,
            "a current",
        )

        base = endpoint(daemon)
        label = f"{transport}://127.0.0.1:{port}"
        connection = status(base)["modbus"]["connections"][label]
        assert connection["connected"] is True
        assert connection["devices"] == ["modbus:meter1", "modbus:room"]
        samples = scrape(base)
        assert sample(samples, "gateway_modbus_connection_devices", connection=label) == 2
        assert sample(samples, "gateway_modbus_connection_up", connection=label) == 1
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0


def mbpoll(port: int, unit: int, table: str, start: int, count: int) -> list[float]:
    """Values read by mbpoll (0-based addresses, big-endian words): `[0]: 230.5` lines."""
    out = subprocess.run(
        [
            *("mbpoll", "-m", "tcp", "-p", str(port), "-a", str(unit), "-t", table),
            *("-0", "-B", "-1", "-r", str(start), "-c", str(count), "127.0.0.1"),
        ],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    return [float(line.split(":", 1)[1].split()[0]) for line in out.splitlines() if "]:" in line]


@pytest.mark.skipif(bool(missing_programs("mbpoll")), reason="needs mbpoll")
def test_mbpoll_reads_what_the_gateway_publishes(
    port: int, broker: Broker, subscriber: Subscriber, daemon: Daemon
) -> None:
    with simulated("tcp", port):
        daemon.start(gateway_config(broker, devices("tcp", port)))
        ours = {
            topic: value(subscriber, f"gateway/{topic}")
            for topic in (
                *("meter1/voltage", "meter1/current", "meter1/power", "meter1/energy"),
                *("room/temperature", "room/humidity"),
            )
        }
        voltage, current = mbpoll(port, 1, "3:float", 0, 2)
        (power,) = mbpoll(port, 1, "3:int", 4, 1)
        (energy,) = mbpoll(port, 1, "4:int", 0x0156, 1)
        temperature_raw, humidity = mbpoll(port, 2, "4", 0, 2)
    # The profile drifts slowly (volts by < 0.1 V/s, °C by < 0.02/s): read moments apart.
    assert abs(ours["meter1/voltage"] - voltage) < 0.5
    assert ours["meter1/current"] == current == 0.0  # the relay is off: no load
    assert ours["meter1/power"] == power == 0
    assert abs(ours["meter1/energy"] - energy) <= 1  # counts up every 10 s
    assert abs(ours["room/temperature"] - temperature_raw * 0.1) < 0.15
    assert abs(ours["room/humidity"] - humidity) <= 1
