"""Bluetooth LE devices (`type: ble_advert`, `type: ble_gatt`) and the scanner of each adapter
they use. bleak, dbus-fast and cryptography cost about half a second of start-up and their
memory: everything of them is imported only once a BLE device is configured."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from gateway.config import BleAdvertDevice, BleGattDevice, Config, Device, Uuid
from gateway.errors import DecodeError
from gateway.families.base import Family, FamilyContext, Out
from gateway.limits import EXIT_ADAPTER_DEAD
from gateway.linknames import link_name, scanner_link_name
from gateway.models import Reading

if TYPE_CHECKING:
    from gateway.ble.hub import BleHub
    from gateway.supervisor import Link


class BleFamily(Family):
    name = "ble"
    models = (BleAdvertDevice, BleGattDevice)
    status_key = "ble"

    def link_specs(self, cfg: Config) -> dict[str, object]:
        devices = self.devices(cfg)
        if not devices and cfg.ble.unknown_devices != "publish":
            return {}  # no Bluetooth configured: do not even load its libraries
        from gateway.ble.patterns import scan_plans  # noqa: PLC0415

        specs: dict[str, object] = {link_name(d): d for d in devices}
        # Advert devices need no scanner restart (their links subscribe and unsubscribe by
        # themselves) unless they change a passive scanner's patterns; the scanners restart
        # together, as they share the `ble` section and the unknown-devices sink.
        plans = tuple(scan_plans(cfg))
        for plan in plans:
            specs[scanner_link_name(plan.adapter)] = (cfg.ble, plans)
        return specs

    def hub(self, cfg: Config, ctx: FamilyContext) -> BleHub:
        from gateway.ble.counters import COUNTERS_FILE, ReplayCounters  # noqa: PLC0415
        from gateway.ble.hub import BleHub  # noqa: PLC0415

        def make() -> BleHub:
            counters = ReplayCounters(cfg.gateway.state_dir / COUNTERS_FILE)
            return BleHub(cfg.ble, ctx.metrics, ctx.sensor_classes, counters)

        return ctx.shared(self.name, make)

    def links(self, cfg: Config, names: Collection[str], ctx: FamilyContext) -> list[Link]:
        from gateway.ble.links import device_link, scanner_links  # noqa: PLC0415

        hub = self.hub(cfg, ctx)
        links: list[Link] = [
            device_link(hub, d, ctx.submit) for d in self.devices(cfg) if link_name(d) in names
        ]
        scanners = [n for n in names if n.startswith(scanner_link_name(""))]
        if scanners:

            def gave_up(reason: str) -> None:
                # The silent-scanner ladder's last step: exit non-zero, systemd restarts us.
                ctx.request_exit(reason, EXIT_ADAPTER_DEAD)

            made = scanner_links(hub, cfg, ctx.submit_unknown or ctx.submit, gave_up)
            links += [link for link in made if link.name in scanners]
        return links

    def status_document(self, ctx: FamilyContext, view: Any, now: float) -> object:
        hub = ctx.peek(self.name)
        if hub is None:
            return None
        from gateway.ble.status import ble_document  # noqa: PLC0415

        return ble_document(hub, view, now)  # type: ignore[arg-type]  # made by hub() above

    def known_sensors(self, device: Device) -> dict[str, str | None]:
        known: dict[str, str | None] = {}
        if isinstance(device, BleGattDevice):
            for spec in [*device.notify, *device.poll]:
                if spec.fields:
                    known.update({f: None for f in spec.fields if f != "_"})
                else:
                    known[spec.sensor or spec.format] = None
        elif isinstance(device, BleAdvertDevice) and device.rssi:
            known["signal_strength"] = "dBm"
        return known

    def default_unit(self, device: Device, sensor: str) -> str | None:
        from gateway.decoders.ble import unit_of  # noqa: PLC0415 - BLE only

        return unit_of(sensor)

    def sample_frames(
        self, device: Device, data: bytes, characteristic: str | None, out: Out
    ) -> Iterator[list[Reading]]:
        if isinstance(device, BleAdvertDevice):
            return _advert_frames(device, data)
        assert isinstance(device, BleGattDevice)
        return _gatt_frames(device, data, characteristic)


def _advert_frames(device: BleAdvertDevice, data: bytes) -> Iterator[list[Reading]]:
    from gateway.ble.readings import ble_readings  # noqa: PLC0415
    from gateway.decoders.ble import make_advert_parser, parse_ad_structures  # noqa: PLC0415

    advert = parse_ad_structures(data, device.address or "00:00:00:00:00:00")
    decoded = make_advert_parser(device)(advert)
    yield ble_readings(device.id, {**decoded.values, **decoded.events}, device.sensors, time.time())


def _gatt_frames(
    device: BleGattDevice, data: bytes, characteristic: str | None
) -> Iterator[list[Reading]]:
    from gateway.ble.readings import ble_readings  # noqa: PLC0415
    from gateway.decoders.ble.gatt import decode_gatt  # noqa: PLC0415

    specs = [*device.notify, *device.poll]
    if characteristic is not None:
        try:
            uuid = TypeAdapter(Uuid).validate_python(characteristic)
        except ValidationError:
            raise DecodeError(
                f"--characteristic {characteristic!r} is not a UUID (e.g. 2a37 or the full form)"
            ) from None
        specs = [s for s in specs if s.characteristic == uuid]
    if not specs:
        raise DecodeError("no notify or poll characteristic of this device matches")
    yield ble_readings(device.id, decode_gatt(specs[0], data), device.sensors, time.time())


BLE = BleFamily()
