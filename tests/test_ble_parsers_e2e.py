"""The parser libraries end to end: `python -m gateway run` (real bleak) against the fake BlueZ
with real captures of a Govee H5075, an Inkbird IBS-TH2, a Qingping CGG1 and a Xiaomi LYWSDCGQ
(tests/ble_captures.py says where each comes from), to mosquitto, with Home Assistant discovery
announcing what the libraries say each value is; and `gateway scan` naming the parser."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from ble_captures import CAPTURES, GOVEE_H5075, INKBIRD_IBS_TH2, QINGPING_CGG1, XIAOMI_LYWSDCGQ
from fakebluez import ThreadedFakeBlueZ
from helpers import FAST_BACKOFF, Broker, Daemon, Subscriber, gateway_config, wait_until

from gateway.config.ble import INSTALL_HINT, LIBRARIES, installed_libraries

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        len(installed_libraries()) < len(LIBRARIES),
        reason=f"the ble-parsers extra is not installed ({INSTALL_HINT})",
    ),
]
PREFIX = "gateway"


def add_captures(fake: ThreadedFakeBlueZ) -> None:
    for c in CAPTURES:
        fake.fake.add_device(c.address, c.name, **c.fake_device())


@pytest.fixture
def bluez(dbus_address: str) -> Iterator[ThreadedFakeBlueZ]:
    fake = ThreadedFakeBlueZ(dbus_address, adv_interval=0.05)
    try:
        fake.call(lambda: add_captures(fake))
        yield fake
    finally:
        fake.close()


def test_library_decoded_adverts_reach_mqtt_and_home_assistant(
    broker: Broker, subscriber: Subscriber, daemon: Daemon, bluez: ThreadedFakeBlueZ
) -> None:
    devices: list[dict[str, Any]] = [
        {"id": c.decoder, "type": "ble_advert", "address": c.address, "decoder": c.decoder,
         "backoff": FAST_BACKOFF}
        for c in (GOVEE_H5075, INKBIRD_IBS_TH2, QINGPING_CGG1)
    ]  # fmt: skip
    # The Xiaomi through `auto`: the first installed parser that supports it reads it.
    devices.append(
        {"id": "mijia", "type": "ble_advert", "address": XIAOMI_LYWSDCGQ.address,
         "decoder": "auto", "rssi": True, "backoff": FAST_BACKOFF}
    )  # fmt: skip
    cfg = gateway_config(broker, devices)
    cfg["ble"] = {"adapter": "hci0", "backoff": FAST_BACKOFF}
    cfg["homeassistant"] = {"discovery": True}
    daemon.start(cfg)

    for capture, device_id in [
        (GOVEE_H5075, "govee"),
        (INKBIRD_IBS_TH2, "inkbird"),
        (QINGPING_CGG1, "qingping"),
        (XIAOMI_LYWSDCGQ, "mijia"),
    ]:
        for sensor, value in capture.values.items():
            message = subscriber.wait_value(f"{PREFIX}/{device_id}/{sensor}", value, timeout=15)
            assert message.data is not None
            assert message.data["unit"] == {"temperature": "°C", "voltage": "V"}.get(sensor, "%")
    rssi = subscriber.wait_for(lambda m: m.topic == f"{PREFIX}/mijia/signal_strength")
    assert rssi.value == -60  # the fake's RSSI, by the device's `rssi` option

    topic = "homeassistant/device/gw1/gw1--mijia/config"

    def announced() -> dict[str, Any] | None:
        found = [m for m in subscriber.on_topic(topic) if m.payload]
        config: dict[str, Any] = json.loads(found[-1].payload) if found else {}
        wanted = {"temperature", "humidity", "battery", "voltage"}
        return config if wanted <= config.get("components", {}).keys() else None

    components = wait_until(announced, 15.0, "the Xiaomi's sensors announced")["components"]
    for sensor, unit in [("temperature", "°C"), ("humidity", "%"), ("voltage", "V")]:
        assert components[sensor]["device_class"] == sensor
        assert components[sensor]["unit_of_measurement"] == unit
        assert components[sensor]["state_class"] == "measurement"
    log = daemon.log()
    assert "ble_advert:mijia: listening for 58:2D:34:3B:2E:BF on hci0 (decoder auto)" in log


def test_gateway_scan_names_the_library_that_reads_each_device(bluez: ThreadedFakeBlueZ) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "scan", "--seconds", "1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for capture in CAPTURES:
        row = next(line for line in lines if line.startswith(capture.address))
        assert f" {capture.decoder} " in row
        assert "temperature=" in row
        assert f"    address: {capture.address}" in lines
        assert lines[lines.index(f"    address: {capture.address}") + 1] == (
            f"    decoder: {capture.decoder}"
        )
    assert "Config for the devices recognised" in done.stdout
