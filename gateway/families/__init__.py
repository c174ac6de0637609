"""Device families as plug-ins: each declares its config models and makes its links.

A family (`serial`, `modbus`, `ble`, `synthetic`) is one module here holding one `Family`:
which device models it owns, which links a config asks for (`link_specs`: name -> what the link
is made of, compared on reload) and how to make them (`links`). The lifecycle and the reload
plan go through this registry only, so they know no family by name. Optional libraries (pymodbus,
bleak) are imported by a family's `links`, never when the registry is loaded.
"""

from __future__ import annotations

from gateway.families.base import Family, FamilyContext
from gateway.families.ble import BLE
from gateway.families.modbus import MODBUS
from gateway.families.serial import SERIAL
from gateway.families.synthetic import SYNTHETIC

FAMILIES: tuple[Family, ...] = (SERIAL, MODBUS, BLE, SYNTHETIC)

__all__ = ["FAMILIES", "Family", "FamilyContext", "family_of"]


def family_of(device: object) -> Family:
    """The family a device config belongs to."""
    for family in FAMILIES:
        if isinstance(device, family.models):
            return family
    raise LookupError(f"no device family for {type(device).__name__}")  # pragma: no cover
