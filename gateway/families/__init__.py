"""Device families as plug-ins: each declares its config models and makes its links.

A family (`serial`, `modbus`, `ble`, `synthetic`) is one module here holding one `Family`:
which device models it owns (each registered as a `type:` where it is written:
`gateway.config.devices.device_model`), which links a config asks for (`link_specs`: name ->
what the link is made of, compared on reload) and how to make them (`links`), and what other
parts ask of its devices (known sensors and units, `gateway decode`). The lifecycle, the reload
plan, health and Home Assistant go through this registry only, so they know no family by name.
Optional libraries (pymodbus, bleak) are imported by a family's `links`, never when the registry
is loaded.
"""

from __future__ import annotations

from gateway.families.base import Family, FamilyContext
from gateway.families.ble import BLE
from gateway.families.modbus import MODBUS
from gateway.families.serial import SERIAL
from gateway.families.synthetic import SYNTHETIC
from gateway.registry import Registry

#: Every device family by its name; a loop over it gives the families.
FAMILIES: Registry[Family] = Registry("device family")
for _family in (SERIAL, MODBUS, BLE, SYNTHETIC):
    FAMILIES.add(_family.name, _family)

__all__ = ["FAMILIES", "Family", "FamilyContext", "family_of"]


def family_of(device: object) -> Family:
    """The family a device config belongs to (the one whose `models` it is one of)."""
    for family in FAMILIES:
        if isinstance(device, family.models):
            return family
    raise LookupError(f"no device family for {type(device).__name__}")  # pragma: no cover
