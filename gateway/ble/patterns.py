"""What an adapter's scanner listens for: its scanning mode and, when passive, the patterns for
BlueZ's advertisement monitor.

Passive scanning in BlueZ (org.bluez.AdvertisementMonitorManager1) reports only advertisements
that match one of a monitor's "or patterns": an AD structure of a given type whose data holds
given bytes at a given position. The patterns come from the decoders of the adapter's advert
devices (every decoder knows the service data UUID or company id it reads), plus the ones
configured in `ble.passive_patterns` / `ble.adapters.<hci>.passive_patterns`. Pure: config in,
plan out.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from gateway.config import (
    AdvertStructSpec,
    BleAdvertDevice,
    BleGattDevice,
    Config,
    PassivePattern,
    ScanningMode,
)
from gateway.decoders.ble import bthome, ibeacon, ruuvi, xiaomi
from gateway.decoders.ble.advert import BASE_UUID_SUFFIX
from gateway.linknames import link_name

# AD types (Bluetooth Core Specification Supplement, part A, 1.11 and 1.4)
SERVICE_DATA_16, SERVICE_DATA_32, SERVICE_DATA_128 = 0x16, 0x20, 0x21
MANUFACTURER_DATA = 0xFF


@dataclass(frozen=True, slots=True)
class Pattern:
    start: int
    ad_type: int
    data: bytes

    def __str__(self) -> str:
        return f"0x{self.ad_type:02X}:{self.data.hex()}" + (f"@{self.start}" if self.start else "")


def _le16(number: int) -> bytes:
    return number.to_bytes(2, "little")


#: What each built-in decoder reads: service data of its UUID, or manufacturer data of its
#: company (the UUID or company id comes first in the AD structure's data, little endian).
BUILTIN_PATTERNS: dict[str, Pattern] = {
    "bthome": Pattern(0, SERVICE_DATA_16, _le16(bthome.UUID16)),
    "pvvx": Pattern(0, SERVICE_DATA_16, _le16(xiaomi.UUID16)),
    "atc": Pattern(0, SERVICE_DATA_16, _le16(xiaomi.UUID16)),
    "ruuvi": Pattern(0, MANUFACTURER_DATA, _le16(ruuvi.COMPANY_ID)),
    "ibeacon": Pattern(0, MANUFACTURER_DATA, _le16(ibeacon.COMPANY_ID) + ibeacon.PREFIX),
}


def struct_pattern(spec: AdvertStructSpec) -> Pattern:
    if spec.manufacturer_id is not None:
        return Pattern(0, MANUFACTURER_DATA, _le16(spec.manufacturer_id))
    assert spec.service_uuid is not None  # the config model guarantees one source
    full = spec.service_uuid
    if full.endswith(BASE_UUID_SUFFIX) and full.startswith("0000"):
        return Pattern(0, SERVICE_DATA_16, _le16(int(full[4:8], 16)))
    if full.endswith(BASE_UUID_SUFFIX):
        return Pattern(0, SERVICE_DATA_32, int(full[:8], 16).to_bytes(4, "little"))
    return Pattern(0, SERVICE_DATA_128, uuid.UUID(full).bytes[::-1])


#: The parser libraries' formats with a fixed service data UUID. Govee, Inkbird, SensorPush
#: and ThermoPro put measurements where the company id goes, and `auto` may be any format:
#: no pattern is sure to hear those (like a GATT device, they need ble.passive_patterns).
LIBRARY_PATTERNS: dict[str, Pattern] = {
    "xiaomi": Pattern(0, SERVICE_DATA_16, _le16(0xFE95)),  # MiBeacon
    "qingping": Pattern(0, SERVICE_DATA_16, _le16(0xFDCD)),
}


def device_pattern(device: BleAdvertDevice) -> Pattern | None:
    if device.struct is not None:
        return struct_pattern(device.struct)
    return BUILTIN_PATTERNS.get(device.decoder) or LIBRARY_PATTERNS.get(device.decoder)


def configured_pattern(spec: PassivePattern) -> Pattern:
    return Pattern(spec.start, spec.ad_type, bytes.fromhex(spec.data))


@dataclass(frozen=True, slots=True)
class ScanPlan:
    """One adapter's scanner: how it scans and, passively, with which patterns. `unmatched`
    names the links of devices that no derived pattern is sure to hear (GATT devices, and
    advert devices whose decoder has no fixed pattern)."""

    adapter: str
    mode: ScanningMode
    patterns: tuple[Pattern, ...] = ()
    unmatched: tuple[str, ...] = ()


def scan_plan(cfg: Config, adapter: str) -> ScanPlan:
    mode = cfg.ble.scanning_mode_of(adapter)
    if mode == "active":
        return ScanPlan(adapter, mode)
    patterns: dict[Pattern, None] = {}  # ordered, without duplicates
    unheard: list[str] = []
    for device in cfg.devices:
        if not isinstance(device, BleAdvertDevice | BleGattDevice):
            continue
        if (device.adapter or cfg.ble.adapter) != adapter:
            continue
        pattern = device_pattern(device) if isinstance(device, BleAdvertDevice) else None
        if pattern is not None:
            patterns[pattern] = None
        else:
            unheard.append(link_name(device))
    if cfg.ble.unknown_devices == "publish" and adapter == cfg.ble.adapter:
        patterns.update(dict.fromkeys(BUILTIN_PATTERNS.values()))
    configured = cfg.ble.passive_patterns_of(adapter)
    patterns.update(dict.fromkeys(configured_pattern(p) for p in configured))
    unmatched = () if configured else tuple(unheard)
    return ScanPlan(adapter, mode, tuple(patterns), unmatched)


def adapters_in_use(cfg: Config) -> list[str]:
    """Adapters of the configured BLE devices, in config order."""
    names: dict[str, None] = {}
    for device in cfg.devices:
        if isinstance(device, BleAdvertDevice | BleGattDevice):
            names[device.adapter or cfg.ble.adapter] = None
    return list(names)


def scanner_adapters(cfg: Config) -> list[str]:
    """Adapters that need a scanner: those of the BLE devices, and the default adapter when
    unknown devices are published."""
    names = adapters_in_use(cfg)
    if cfg.ble.unknown_devices == "publish" and cfg.ble.adapter not in names:
        names.append(cfg.ble.adapter)
    return names


def scan_plans(cfg: Config) -> list[ScanPlan]:
    return [scan_plan(cfg, name) for name in scanner_adapters(cfg)]
