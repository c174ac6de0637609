"""What Home Assistant is told about each configured device: its sensors, their units and
classes, from the config, from what the decoder is known to produce, and from what was learned.

Decoders such as `kv`, `json`, `nmea` and the BLE advert formats name their sensors only when
they send them: those sensors are announced when first seen, and remembered (`Learned`, a small
JSON file in the state directory) so that a restart announces them again at once instead of
clearing their entities until the next reading.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import (
    Device,
    SensorSpec,
)
from gateway.families import family_of
from gateway.homeassistant.checks import check_sensor, default_classes
from gateway.homeassistant.identity import DeviceInfo, SensorInfo
from gateway.homeassistant.tables import BINARY_SENSOR_DEVICE_CLASSES, SENSOR_DEVICE_CLASSES
from gateway.limits import MAX_LEARNED

log = logging.getLogger(__name__)

LEARNED_FILE = "homeassistant.json"


@dataclass(frozen=True, slots=True)
class SeenSensor:
    unit: str | None
    binary: bool
    # What the decoder said the sensor is (the BLE parser libraries' descriptions), if it did.
    device_class: str | None = None
    state_class: str | None = None


def known_sensors(device: Device) -> dict[str, str | None]:
    """Sensor -> unit, for the sensors the config and the decoder say the device has."""
    known = family_of(device).known_sensors(device)
    for name, sensor in device.sensors.items():
        known[name] = sensor.unit if sensor.unit is not None else known.get(name)
    return known


def is_binary(spec: SensorSpec) -> bool:
    """A binary_sensor: bool values, or a class only binary sensors have (door, motion)."""
    if spec.type is not None:
        return spec.type == "bool"
    dc = spec.device_class
    return dc in BINARY_SENSOR_DEVICE_CLASSES and dc not in SENSOR_DEVICE_CLASSES


def default_unit(device: Device, sensor: str) -> str | None:
    """The unit a sensor has when the config gives none: the decoder's."""
    unit = known_sensors(device).get(sensor)
    return unit if unit is not None else family_of(device).default_unit(device, sensor)


def sensor_info(
    device: Device, sensor: str, unit: str | None, seen: SeenSensor | None
) -> SensorInfo:
    spec = device.sensors.get(sensor) or SensorSpec()
    if unit is None and seen is not None:
        unit = seen.unit
    if unit is None:
        unit = family_of(device).default_unit(device, sensor)
    device_class: str | None = spec.device_class
    state_class: str | None = spec.state_class
    binary = is_binary(spec) or (spec.type is None and seen is not None and seen.binary)
    if device_class is None and seen is not None and seen.device_class is not None:
        device_class, state_class = _stated_classes(seen, unit, state_class, binary=binary)
    if device_class is None:
        device_class, implied_state = default_classes(sensor, unit, binary=binary)
        state_class = state_class or implied_state
    return SensorInfo(
        key=sensor,
        unit=None if binary else unit,
        device_class=device_class,
        state_class=None if binary else state_class,
        binary=binary,
        overrides=dict(spec.homeassistant),
    )


def _stated_classes(
    seen: SeenSensor, unit: str | None, state_class: str | None, *, binary: bool
) -> tuple[str | None, str | None]:
    """The decoder's device and state class where Home Assistant takes them with this unit
    (a user's filter may have changed it: then the sensor's name decides, as elsewhere)."""
    state_class = state_class or (None if binary else seen.state_class)
    for candidate in (state_class, None):
        if check_sensor(seen.device_class, candidate, unit, binary=binary) is None:
            return seen.device_class, candidate
    return None, state_class


def device_info(device: Device, learned: dict[str, SeenSensor]) -> DeviceInfo:
    known = known_sensors(device)
    controls = family_of(device).controls(device)
    # A control is the entity of its name and of its state sensor (one entity per thing).
    taken = {*controls, *(c.state for c in controls.values() if c.state is not None)}
    names = [s for s in [*known, *(s for s in learned if s not in known)] if s not in taken]
    return DeviceInfo(
        id=device.id,
        name=device.display_name,
        manufacturer=device.manufacturer,
        model=device.model,
        sensors=tuple(sensor_info(device, n, known.get(n), learned.get(n)) for n in names),
        payload=device.payload,
        expire_after=device.availability_timeout,
        controls=tuple(controls.values()),
    )


class Learned:
    """Sensors seen per device, kept in `<state_dir>/homeassistant.json` (written on change:
    rare, a handful of times per device's life)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sensors: dict[str, dict[str, SeenSensor]] = {}
        self._load()

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return  # the first run
        try:
            data: Any = json.loads(text)
            for device, sensors in dict(data).items():
                self.sensors[str(device)] = {
                    str(name): SeenSensor(
                        info.get("unit"),
                        bool(info.get("binary")),
                        info.get("device_class"),
                        info.get("state_class"),
                    )
                    for name, info in dict(sensors).items()
                }
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            # A damaged file costs only a re-learn: the sensors are announced on their next
            # value. Not a reason to refuse to start.
            log.warning("homeassistant: ignoring %s (%s)", self.path, exc)
            self.sensors.clear()

    def of(self, device: str) -> dict[str, SeenSensor]:
        return self.sensors.get(device, {})

    def learn(self, device: str, sensor: str, seen: SeenSensor) -> bool:
        """Remember a sensor; True when it is new (then announce it)."""
        sensors = self.sensors.setdefault(device, {})
        if sensors.get(sensor) == seen or len(sensors) >= MAX_LEARNED:
            return False
        sensors[sensor] = seen
        self._save()
        return True

    def keep_only(self, devices: set[str]) -> None:
        """Forget devices no longer configured."""
        if gone := [d for d in self.sensors if d not in devices]:
            for device in gone:
                del self.sensors[device]
            self._save()

    def _save(self) -> None:
        data = {
            device: {name: _saved(s) for name, s in sensors.items()}
            for device, sensors in self.sensors.items()
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, ensure_ascii=False, sort_keys=True), "utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:  # a full disk must not stop readings; we re-learn next start
            log.warning("homeassistant: cannot write %s: %s", self.path, exc)

    def __iter__(self) -> Iterator[str]:
        return iter(self.sensors)


def _saved(seen: SeenSensor) -> dict[str, Any]:
    saved: dict[str, Any] = {"unit": seen.unit, "binary": seen.binary}
    if seen.device_class is not None:
        saved["device_class"] = seen.device_class
    if seen.state_class is not None:
        saved["state_class"] = seen.state_class
    return saved
