"""Bluetooth LE end to end: `python -m gateway run` as a subprocess, real bleak in it, against the
fake BlueZ on a private D-Bus bus (DBUS_SYSTEM_BUS_ADDRESS) and a real mosquitto.

Adverts -> decoded readings on MQTT; GATT notifications -> readings; an MQTT command -> a GATT
write; a dropped device reconnects; SIGTERM disconnects cleanly; the silent-scanner ladder ends
in exit status 3; `gateway scan` shows what is heard; passive scanning (BlueZ's advertisement
monitor) with BTHome button events.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from fakebluez import ThreadedFakeBlueZ
from helpers import (
    FAST_BACKOFF,
    Broker,
    Daemon,
    Subscriber,
    gateway_config,
    wait_until,
)

from gateway.decoders.ble import uuid16
from gateway.decoders.ble.bthome import encode_bthome

pytestmark = pytest.mark.timeout(40)

PREFIX = "gateway"
KITCHEN, HEART = "A4:C1:38:12:34:56", "AA:BB:CC:DD:EE:01"
ENV = uuid16(0x181A)
HR_SVC, HR_MEAS = uuid16(0x180D), uuid16(0x2A37)
LED = "6e400002-b5a3-f393-e0a9-e50e24dcca9e"
HEART_GATT = {HR_SVC: {HR_MEAS: (["notify"], b"\x00\x48"), LED: (["write"], b"")}}
PVVX = bytes.fromhex("56341238c1a46b080c12860b5f1204")  # 21.55 °C, 46.2 %, 95 %, 2.95 V
REMOTE, BTHOME = "3C:2E:F5:00:11:22", uuid16(0xFCD2)


@pytest.fixture
def bluez(dbus_address: str) -> Iterator[ThreadedFakeBlueZ]:
    fake = ThreadedFakeBlueZ(dbus_address, adv_interval=0.05)
    try:
        yield fake
    finally:
        fake.close()


def ble_config(broker: Broker, **ble: Any) -> dict[str, Any]:
    devices: list[dict[str, Any]] = [
        {"id": "kitchen", "type": "ble_advert", "address": KITCHEN, "decoder": "pvvx",
         "backoff": FAST_BACKOFF},
        {"id": "heart", "type": "ble_gatt", "address": HEART, "backoff": FAST_BACKOFF,
         "notify": [{"characteristic": "2a37", "format": "heart_rate"}],
         "commands": {"led": {"characteristic": LED, "payload": "text"}}},
    ]  # fmt: skip
    cfg = gateway_config(broker, devices)
    cfg["ble"] = {"adapter": "hci0", "backoff": FAST_BACKOFF, **ble}
    return cfg


def test_adverts_notifications_commands_reconnect_and_clean_shutdown(
    broker: Broker, subscriber: Subscriber, daemon: Daemon, bluez: ThreadedFakeBlueZ
) -> None:
    fake = bluez.fake
    heart = bluez.call(lambda: fake.add_device(HEART, "HRM", HEART_GATT))
    bluez.call(lambda: fake.add_device(KITCHEN, "ATC_123456", service_data={ENV: PVVX}))
    daemon.start(ble_config(broker))

    temp = subscriber.wait_value(f"{PREFIX}/kitchen/temperature", 21.55, timeout=10)
    assert temp.data is not None
    assert temp.data["unit"] == "°C"
    subscriber.wait_value(f"{PREFIX}/kitchen/humidity", 46.2)

    daemon.wait_log("ble_gatt:heart: connected")
    bluez.call(lambda: heart.chars[HR_MEAS].notify(b"\x00\x4b"))
    subscriber.wait_value(f"{PREFIX}/heart/heart_rate", 75)

    subscriber._client.publish(f"{PREFIX}/heart/set/led", b"on", qos=1)
    reply = subscriber.wait_for(lambda m: m.topic == f"{PREFIX}/heart/set/led/result")
    assert reply.text == "ok"
    assert bluez.call(lambda: heart.chars[LED].writes) == [(b"on", "request")]

    bluez.call(heart.drop)  # out of range: the link goes down, then reconnects
    daemon.wait_log("ble_gatt:heart: the device disconnected")
    daemon.wait_log("ble_gatt:heart: connected", count=2)
    bluez.call(lambda: heart.chars[HR_MEAS].notify(b"\x00\x50"))
    subscriber.wait_value(f"{PREFIX}/heart/heart_rate", 80)

    daemon.signal(signal.SIGTERM)
    assert daemon.wait(15) == 0
    assert bluez.call(lambda: heart.disconnect_calls) == 1  # disconnected, not just dropped
    assert not bluez.call(lambda: heart.p["Connected"])
    assert not bluez.call(lambda: fake.hci0.sessions)  # the scan was stopped too
    subscriber.wait_for(lambda m: m.topic == f"{PREFIX}/gw1/status" and m.text == "offline")


def test_a_silent_adapter_is_restarted_power_cycled_then_the_daemon_exits_3(
    broker: Broker, subscriber: Subscriber, daemon: Daemon, bluez: ThreadedFakeBlueZ
) -> None:
    fake = bluez.fake
    bluez.call(lambda: fake.add_device(KITCHEN, "ATC_123456", service_data={ENV: PVVX}))
    cfg = ble_config(broker, silence_timeout=0.5, restarts=1, power_cycles=1)
    cfg["devices"] = cfg["devices"][:1]
    daemon.start(cfg)
    subscriber.wait_value(f"{PREFIX}/kitchen/temperature", 21.55, timeout=10)

    bluez.call(lambda: fake.hci0.go_silent("never"))
    assert daemon.wait(20) == 3
    log = daemon.log()
    assert "restarting the scanner (restart 1 of 1)" in log
    assert "power-cycling the adapter (cycle 1 of 1)" in log
    assert "exiting so that systemd restarts the gateway" in log
    assert bluez.call(lambda: fake.hci0.power_log) == [False, True]


def test_gateway_scan_lists_devices_with_their_decoder(bluez: ThreadedFakeBlueZ) -> None:
    fake = bluez.fake
    bluez.call(lambda: fake.add_device(KITCHEN, "ATC_123456", service_data={ENV: PVVX}))
    bluez.call(lambda: fake.add_device(HEART, "HRM", HEART_GATT))
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "scan", "--seconds", "1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    kitchen = next(line for line in lines if line.startswith(KITCHEN))
    assert "pvvx" in kitchen
    assert "temperature=21.55°C" in kitchen
    heart = next(line for line in lines if line.startswith(HEART))
    assert " - " in heart  # heard, no decoder matches
    assert "service 180d" in heart


def test_reload_adds_advert_devices_and_restarts_the_scanner_only_when_ble_changes(
    broker: Broker, subscriber: Subscriber, daemon: Daemon, bluez: ThreadedFakeBlueZ
) -> None:
    fake = bluez.fake
    bluez.call(lambda: fake.add_device(KITCHEN, "ATC_123456", service_data={ENV: PVVX}))
    atc = bytes.fromhex("A4C13865432100D72E5F0B8612")  # 21.5 °C
    bluez.call(lambda: fake.add_device("A4:C1:38:65:43:21", "ATC_654321", service_data={ENV: atc}))
    cfg = ble_config(broker)
    cfg["devices"] = cfg["devices"][:1]
    daemon.start(cfg)
    subscriber.wait_value(f"{PREFIX}/kitchen/temperature", 21.55, timeout=10)

    hall = {"id": "hall", "type": "ble_advert", "name": "ATC_6543*", "decoder": "atc"}
    cfg["devices"].append(hall)
    daemon.write_config(cfg)
    daemon.signal(signal.SIGHUP)
    subscriber.wait_value(f"{PREFIX}/hall/temperature", 21.5, timeout=10)
    assert daemon.log_count("ble_scanner:hci0: scanning") == 1  # not restarted

    cfg["ble"]["silence_timeout"] = 30
    daemon.write_config(cfg)
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("ble_scanner:hci0: scanning", count=2)
    assert daemon.log_count("link ble_advert:kitchen: up -> stopped") == 0  # devices untouched


def test_passive_scanning_publishes_adverts_and_button_events_once(
    broker: Broker, subscriber: Subscriber, daemon: Daemon, bluez: ThreadedFakeBlueZ
) -> None:
    def button(packet_id: int, event: int) -> dict[str, bytes]:
        return {BTHOME: encode_bthome(bytes([0x00, packet_id, 0x3A, event]), trigger_based=True)}

    fake = bluez.fake
    bluez.call(lambda: fake.add_device(KITCHEN, "ATC_123456", service_data={ENV: PVVX}))
    remote = bluez.call(lambda: fake.add_device(REMOTE, "SBBT-002C", service_data=button(1, 1)))
    cfg = ble_config(broker, scanning_mode="passive")
    cfg["devices"] = [
        cfg["devices"][0],
        {"id": "remote", "type": "ble_advert", "address": REMOTE, "decoder": "bthome",
         "backoff": FAST_BACKOFF},
    ]  # fmt: skip
    daemon.start(cfg)

    subscriber.wait_value(f"{PREFIX}/kitchen/temperature", 21.55, timeout=10)
    subscriber.wait_value(f"{PREFIX}/remote/button", "press")
    daemon.wait_log("ble_scanner:hci0: scanning (passive: 0x16:1a18, 0x16:d2fc)")
    [monitor] = bluez.call(fake.monitors)
    assert monitor.calls[0] == "Activate"
    assert not bluez.call(lambda: fake.hci0.sessions)  # no active discovery
    bluez.call(lambda: remote.advertise(service_data=button(2, 4)))
    subscriber.wait_value(f"{PREFIX}/remote/button", "long_press")
    # Each packet was advertised many times (every 50 ms); each event was published once.
    assert [m.data["value"] for m in subscriber.on_topic(f"{PREFIX}/remote/button") if m.data] == [
        "press", "long_press"
    ]  # fmt: skip

    daemon.signal(signal.SIGTERM)
    assert daemon.wait(15) == 0
    assert bluez.call(fake.monitors) == []  # the monitor was unregistered


def test_ble_values_go_through_streams_and_are_announced_to_home_assistant(
    broker: Broker, subscriber: Subscriber, daemon: Daemon, bluez: ThreadedFakeBlueZ
) -> None:
    """Adverts and GATT values alike: filters apply, and the sensors appear in Home Assistant's
    discovery with the device class and unit their names imply, under the friendly name."""
    fake = bluez.fake
    hrm = bluez.call(lambda: fake.add_device(HEART, "HRM", HEART_GATT))
    bluez.call(lambda: fake.add_device(KITCHEN, "ATC_123456", service_data={ENV: PVVX}))
    cfg = ble_config(broker)
    kitchen, heart = cfg["devices"]
    kitchen["name"] = "Kitchen"  # with an address: the friendly name
    kitchen["sensors"] = {"temperature": {"filters": [{"offset": 1.0}, {"round": 1}]}}
    heart["sensors"] = {"heart_rate": {"filters": [{"multiply": 2}]}}
    cfg["homeassistant"] = {"discovery": True}
    daemon.start(cfg)
    subscriber.wait_value(f"{PREFIX}/kitchen/temperature", 22.6, timeout=10)  # 21.55 + 1
    daemon.wait_log("ble_gatt:heart: connected", timeout=15)
    bluez.call(lambda: hrm.chars[HR_MEAS].notify(b"\x00\x48"))
    subscriber.wait_value(f"{PREFIX}/heart/heart_rate", 144)  # 72 x 2
    topic = "homeassistant/device/gw1/gw1--kitchen/config"

    def announced() -> dict[str, Any] | None:
        found = [m for m in subscriber.on_topic(topic) if m.payload]
        config: dict[str, Any] = json.loads(found[-1].payload) if found else {}
        return (
            config if {"temperature", "humidity"} <= config.get("components", {}).keys() else None
        )

    config = wait_until(announced, 10.0, "the kitchen's sensors announced")
    # Its own filters, then republish_after: one value, not one per advert (20 a second).
    assert len(subscriber.on_topic(f"{PREFIX}/kitchen/temperature")) == 1
    assert config["device"]["name"] == "Kitchen"
    temperature = config["components"]["temperature"]
    assert (temperature["device_class"], temperature["unit_of_measurement"]) == (
        "temperature",
        "°C",
    )
    assert temperature["state_class"] == "measurement"
    assert temperature["expire_after"] == 900  # stale_after
    assert config["components"]["humidity"]["device_class"] == "humidity"
