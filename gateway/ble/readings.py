"""Decoded BLE values -> Readings: per-sensor config (unit, type) first, else the unit the
sensor name implies (`temperature` -> °C)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from gateway.config import SensorSpec
from gateway.decoders import to_readings
from gateway.decoders.ble import unit_of
from gateway.models import Reading, Value


def ble_readings(
    device: str, values: Mapping[str, Value], sensors: Mapping[str, SensorSpec], ts: float
) -> list[Reading]:
    """Raises DecodeError when a configured type coercion fails."""
    return [
        r if r.unit is not None else dataclasses.replace(r, unit=unit_of(r.sensor))
        for r in to_readings(device, values, sensors, ts)
    ]
