"""A gateway without Bluetooth devices does not load the Bluetooth libraries (their import
costs about half a second of start-up and 10 MB), and one with them does; the parser
libraries of the `ble-parsers` extra load only for a device whose decoder uses them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

PROBE = """
import asyncio, sys
from gateway.config import Config
from gateway.families import FAMILIES
from gateway.lifecycle import Gateway
from gateway.reload import plan_start
cfg = Config.model_validate({"gateway": {"id": "gw"}, "devices": [DEVICE]})
gw = Gateway(cfg)
plan_start(cfg)  # what reload compares: the links' specs
for family in FAMILIES:  # the links, as the lifecycle makes them
    if names := list(family.link_specs(cfg)):
        family.links(cfg, names, gw.families)
watched = ("bleak", "dbus_fast", "cryptography", "pymodbus", *PARSERS)
print(sorted(m for m in watched if m in sys.modules))
"""
PARSERS = ("habluetooth", "bthome_ble", "govee_ble", "xiaomi_ble", "ruuvitag_ble")


@pytest.mark.parametrize(
    ("device", "loaded"),
    [
        ('{"id": "boiler", "type": "serial", "port": "/dev/ttyX"}', "[]"),
        (
            '{"id": "kitchen", "type": "ble_advert", "address": "A4:C1:38:12:34:56", '
            '"decoder": "pvvx"}',
            "['bleak', 'cryptography', 'dbus_fast']",
        ),
        (
            '{"id": "meter1", "type": "modbus", "port": "/dev/ttyX", '
            '"registers": [{"name": "v", "address": 0}]}',
            "['pymodbus']",
        ),
        pytest.param(
            '{"id": "hall", "type": "ble_advert", "address": "A4:C1:38:12:34:56", '
            '"decoder": "govee"}',
            "['bleak', 'cryptography', 'dbus_fast', 'govee_ble', 'habluetooth']",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("govee_ble") is None,
                reason="the ble-parsers extra is not installed",
            ),
        ),
    ],
)
def test_bluetooth_libraries_load_only_for_bluetooth_devices(device: str, loaded: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.replace("DEVICE", device).replace("PARSERS", repr(PARSERS))],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == loaded


HTTP_PROBE = """
import asyncio, sys
from gateway.lifecycle import Gateway
from gateway.config import Config
cfg = Config.model_validate({"gateway": {"id": "gw"}, "metrics": {"enabled": ENABLED}})
Gateway(cfg)  # wired: the endpoint is made (not entered) when enabled
print(sorted(m for m in ("aiohttp", "h11", "gateway.statuspage.render") if m in sys.modules))
"""


@pytest.mark.parametrize(("enabled", "loaded"), [(False, "[]"), (True, "['h11']")])
def test_h11_loads_only_with_the_http_endpoint_aiohttp_never(enabled: bool, loaded: str) -> None:
    """The endpoint speaks HTTP through h11 (aiohttp cost ~12 MB of RSS): a config with
    `metrics.enabled: false` does without it; the status page's renderer loads only when the
    page is first asked for."""
    result = subprocess.run(
        [sys.executable, "-c", HTTP_PROBE.replace("ENABLED", str(enabled))],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == loaded
