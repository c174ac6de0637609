"""Home Assistant's check of a loaded config: whether it takes each sensor's device class, state
class and unit (`checks.check_sensor`), with the decoder's unit where the config gives none.

It needs Home Assistant's tables and every family's decoders, which the config package must not
import: this package owns the check, and the application runs it after the config's own checks
(`gateway.app_config`, ESPHome's final validate). Its problems read as the config's own:
FILE:LINE:COL, at the key to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.config import Config, Device
from gateway.homeassistant.checks import check_sensor
from gateway.homeassistant.devices import default_unit, is_binary
from gateway.yamlsource import Located, Path_, dotted


def check_sensor_classes(cfg: Config, located: Located) -> list[str]:
    problems = []
    for i, device in enumerate(cfg.devices):
        for name, spec in device.sensors.items():
            if spec.device_class is None and spec.state_class is None:
                continue
            unit = spec.unit if spec.unit is not None else default_unit(device, name)
            problem = check_sensor(
                spec.device_class, spec.state_class, unit, binary=is_binary(spec)
            )
            if problem is None:
                continue
            key = "device_class" if spec.device_class is not None else "state_class"
            if "state_class" in problem and spec.state_class is not None:
                key = "state_class"
            elif "unit" in problem and spec.unit is not None:
                key = "unit"
            loc = _sensor_loc(device, i, name, key, located)
            problems.append(f"{located.where(loc)}: {dotted(loc)}: {problem}")
    return problems


def _sensor_loc(device: Device, i: int, name: str, key: str, located: Located) -> Path_:
    """Where a sensor's setting was written: under `sensors:`, or its family's own entry (a
    Modbus register's)."""
    loc: Path_ = ("devices", i, "sensors", name, key)
    entry = device.sensor_entry(name)
    if entry is not None and key not in _given(located, loc[:-1]):
        return ("devices", i, *entry, key)
    return loc


def _given(located: Located, loc: Path_) -> set[str]:
    """The keys written at `loc` in the YAML (none if there is nothing there)."""
    node: Any = located.data
    for part in loc:
        if isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return set()
    return {str(k) for k in node} if isinstance(node, Mapping) else set()
