"""Decoded BLE values -> Readings: per-sensor config (unit, type) first, else the unit the
decoder states (the parser libraries), else the unit the sensor name implies
(`temperature` -> °C)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from gateway.config import SensorSpec
from gateway.decoders import to_readings
from gateway.decoders.ble import unit_of
from gateway.models import Reading, SensorClass, Value


def ble_readings(
    device: str,
    values: Mapping[str, Value],
    sensors: Mapping[str, SensorSpec],
    ts: float,
    classes: Mapping[str, SensorClass] | None = None,
) -> list[Reading]:
    """Raises DecodeError when a configured type coercion fails."""
    classes = classes or {}

    def unit(sensor: str) -> str | None:
        stated = classes.get(sensor)
        return stated.unit if stated is not None else unit_of(sensor)

    return [
        r if r.unit is not None else dataclasses.replace(r, unit=unit(r.sensor))
        for r in to_readings(device, values, sensors, ts)
    ]
