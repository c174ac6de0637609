"""Controls end to end (issue 23): `gateway run` as a subprocess, a real mosquitto, the Modbus
simulator (`gateway simulate modbus`, pymodbus's server) and a serial device on socat ptys.

What Home Assistant would do is done with an independent client (paho): read the retained
discovery configs, publish to their `command_topic` what Home Assistant publishes (`ON`, a
number, a label, `PRESS`), and read the state topic and `.../result`. The state is what the
device says: the simulator's registers and what the serial device answers."""

from __future__ import annotations

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
    PeerReader,
    SerialPair,
    SerialPairFactory,
    Subscriber,
    gateway_config,
    missing_programs,
    send_until_seen,
    serial_device,
    wait_until,
)
from httpprobe import endpoint, sample, scrape, status

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(bool(missing_programs("socat", "mosquitto")), reason="needs socat"),
]

PREFIX = "gateway"
NODE = "homeassistant/device/gw1"


@pytest.fixture
def simulator(make_serial_pair: SerialPairFactory) -> Iterator[SerialPair]:
    pair = make_serial_pair("MB")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "simulate", "modbus", "--port", pair.peer]
    )
    yield pair
    proc.send_signal(signal.SIGTERM)
    proc.wait(5)


def meter(port: str) -> dict[str, Any]:
    """The issue's meter1, with a setpoint range wider than the simulated thermostat's (5-30
    °C): a value it clamps shows what the device kept."""
    return {
        "id": "meter1",
        "type": "modbus",
        "port": port,
        "parity": "N",  # a pty refuses parity bits
        "unit_id": 1,
        "poll_interval": 0.5,
        "timeout": 0.3,
        "retries": 0,
        "backoff": dict(FAST_BACKOFF),
        "registers": [
            {"name": "relay", "address": 3, "function": "coil"},
            {
                "name": "setpoint",
                "address": 0x10,
                "data_type": "int16",
                "scale": 0.1,
                "unit": "°C",
                "homeassistant": {
                    "platform": "number",
                    "min": 0,
                    "max": 40,
                    "step": 0.5,
                    "mode": "box",
                    "entity_category": "config",
                },
            },
            {
                "name": "mode",
                "address": 0x11,
                "options": {0: "off", 1: "eco", 2: "comfort"},
                "homeassistant": {"platform": "select"},
            },
        ],
    }


def command(sub: Subscriber, topic: str, payload: bytes) -> str:
    """Publish to a command topic as Home Assistant does; the reply on `.../result`."""
    before = len(sub.on_topic(f"{topic}/result"))
    sub._client.publish(topic, payload, qos=1)
    return wait_until(
        lambda: sub.on_topic(f"{topic}/result")[before:] or None, 10, f"a reply on {topic}"
    )[0].text


def state(sub: Subscriber, topic: str, after: int, want: object) -> None:
    """The state topic says `want` after message number `after` (what the device holds)."""
    wait_until(
        lambda: (
            any(json.loads(m.payload)["value"] == want for m in sub.on_topic(topic)[after:]) or None
        ),
        10,
        f"{topic} = {want!r}",
    )


def test_modbus_controls_from_discovery_to_the_registers(
    broker: Broker, subscriber: Subscriber, daemon: Daemon, simulator: SerialPair
) -> None:
    cfg = gateway_config(broker, [meter(simulator.dev)])
    cfg["homeassistant"] = {"discovery": True}
    daemon.start(cfg)
    config = subscriber.wait_for(lambda m: m.topic == f"{NODE}/gw1--meter1/config", what="config")
    components = json.loads(config.payload)["components"]
    assert {k: c["platform"] for k, c in components.items()} == {
        "relay": "switch",
        "setpoint": "number",
        "mode": "select",
    }
    relay, setpoint, mode = (components[k] for k in ("relay", "setpoint", "mode"))
    assert relay["command_topic"] == f"{PREFIX}/meter1/set/relay"
    assert relay["state_topic"] == f"{PREFIX}/meter1/relay"
    assert (setpoint["min"], setpoint["max"], setpoint["step"]) == (0, 40, 0.5)
    assert setpoint["entity_category"] == "config"
    assert mode["options"] == ["off", "eco", "comfort"]
    state(subscriber, f"{PREFIX}/meter1/mode", 0, "off")  # the sensor publishes the label

    assert command(subscriber, relay["command_topic"], b"ON") == "ok: relay = on"
    state(subscriber, f"{PREFIX}/meter1/relay", 0, True)
    assert command(subscriber, setpoint["command_topic"], b"21.5") == "ok: setpoint = 21.5"
    state(subscriber, f"{PREFIX}/meter1/setpoint", 0, 21.5)
    assert command(subscriber, mode["command_topic"], b"eco") == "ok: mode = eco"
    state(subscriber, f"{PREFIX}/meter1/mode", 0, "eco")

    # The thermostat keeps at most 30 °C: the reply says so, the state is the device's.
    seen = len(subscriber.on_topic(f"{PREFIX}/meter1/setpoint"))
    reply = command(subscriber, setpoint["command_topic"], b"35")
    assert reply == "error: device kept 30.0"
    state(subscriber, f"{PREFIX}/meter1/setpoint", seen, 30.0)
    # Outside the control's range: refused before the device.
    reply = command(subscriber, setpoint["command_topic"], b"45")
    assert reply == "error: 45 is out of range for setpoint (0 to 40)"
    reply = command(subscriber, mode["command_topic"], b"boost")
    assert reply == "error: 'boost' is not an option of mode (off, eco, comfort)"

    base = endpoint(daemon)
    controls = status(base)["devices"]["meter1"]["controls"]
    assert controls["relay"] == {
        "platform": "switch",
        "state_sensor": "relay",
        "state": "on",
        "optimistic": False,
    }
    assert (controls["setpoint"]["state"], controls["mode"]["state"]) == ("30", "eco")
    samples = scrape(base)
    errors = {"device": "meter1", "register": "setpoint", "reason": "not_kept"}
    assert sample(samples, "gateway_modbus_errors_total", **errors) == 1
    assert sample(samples, "gateway_input_refused_total", edge="modbus", reason="out_of_range") == 1
    assert sample(samples, "gateway_commands_total", device="meter1", result="error") == 3


def test_serial_switch_and_button_write_their_commands(
    broker: Broker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    heater = serial_device(
        "heater",
        serial_pair,
        commands={"power": "PWR {payload}", "reset": "RST"},
        controls={
            "power": {
                "platform": "switch",
                "payload_on": "1",
                "payload_off": "0",
                "state": "power",
            },
            "reset": {"platform": "button"},
        },
    )
    cfg = gateway_config(broker, [heater])
    cfg["homeassistant"] = {"discovery": True}
    daemon.start(cfg)
    config = subscriber.wait_for(lambda m: m.topic == f"{NODE}/gw1--heater/config", what="config")
    components = json.loads(config.payload)["components"]
    power, reset = components["power"], components["reset"]
    assert (power["platform"], reset["platform"]) == ("switch", "button")
    assert (power["payload_on"], power["payload_off"]) == ("1", "0")
    assert power["state_topic"] == f"{PREFIX}/heater/power"
    assert "state_topic" not in reset
    send_until_seen(serial_pair, subscriber, PREFIX, "heater")

    fd = PeerReader(serial_pair)
    try:
        assert command(subscriber, power["command_topic"], b"ON") == "ok"
        assert command(subscriber, reset["command_topic"], b"PRESS") == "ok"
        assert command(subscriber, power["command_topic"], b"OFF") == "ok"
        wait_until(lambda: b"PWR 1\nRST\nPWR 0\n" in fd.read(), 5, "the commands written")
        reply = command(subscriber, power["command_topic"], b"dim")
        assert reply == "error: power takes ON or OFF ('1' or '0')"
        assert fd.read() == b"PWR 1\nRST\nPWR 0\n"  # nothing refused was written
    finally:
        fd.close()
    # The state is what the device says, not what was asked.
    serial_pair.write(b"power=0\n")
    subscriber.wait_value(f"{PREFIX}/heater/power", 0)
    base = endpoint(daemon)
    doc = status(base)["devices"]["heater"]["controls"]
    assert doc["power"]["state"] == "off"
    assert doc["reset"] == {
        "platform": "button",
        "state_sensor": None,
        "state": None,
        "optimistic": False,
    }
    samples = scrape(base)
    assert sample(samples, "gateway_input_refused_total", edge="serial", reason="not_on_off") == 1
