"""Building the BLE links from the config: one per device, one scanner per adapter in use."""

from __future__ import annotations

from collections.abc import Callable

from gateway.ble.advert import AdvertLink, UnknownDevices
from gateway.ble.gatt import GattLink
from gateway.ble.hub import BleHub
from gateway.ble.patterns import scan_plans
from gateway.ble.scanner import ScannerLink
from gateway.config import BleAdvertDevice, BleGattDevice, Config
from gateway.models import Submit


def device_link(
    hub: BleHub, device: BleAdvertDevice | BleGattDevice, submit: Submit
) -> AdvertLink | GattLink:
    adapter = hub.adapter_of(device)
    if isinstance(device, BleAdvertDevice):
        classes = hub.sensor_classes.setdefault(device.id, {})
        return AdvertLink(device, adapter, submit, hub.metrics, classes, counters=hub.counters)
    return GattLink(device, adapter, submit, hub.metrics)


def scanner_links(
    hub: BleHub, cfg: Config, submit_unknown: Submit, on_fatal: Callable[[str], None]
) -> list[ScannerLink]:
    """`submit_unknown`: where readings of unconfigured devices go (Intake.submit_unknown)."""
    hub.configure(cfg.ble)
    unknown = None
    if cfg.ble.unknown_devices == "publish":
        unknown = UnknownDevices(cfg.ble, submit_unknown, hub.metrics)
    return [
        ScannerLink(
            hub.adapter(plan.adapter), cfg.ble, hub.metrics, plan, on_fatal, on_unknown=unknown
        )
        for plan in scan_plans(cfg)
    ]
