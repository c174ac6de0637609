"""What each sensor sent last, and a short history of its numeric values, for the status page.

Kept in memory only and bounded three ways: sensors per device (a decoder that names sensors
from the data, such as `kv`, must not let a device grow this without end), points per sensor,
and time between points (readings closer than `RING_SPACING` replace the newest point instead
of adding one), so a ring spans at least `RING_POINTS * RING_SPACING` seconds however fast a
device sends. Recording is a dict store and, for numbers, one deque append: it runs for every
reading.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from gateway.limits import RECENT_MAX_SENSORS as MAX_SENSORS
from gateway.limits import RING_POINTS, RING_SPACING
from gateway.models import Reading, Value


@dataclass(slots=True)
class SensorRecent:
    value: Value | None
    unit: str | None
    ts: float
    ring: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=RING_POINTS))

    def add(self, reading: Reading) -> None:
        self.value, self.unit, self.ts = reading.value, reading.unit, reading.ts
        number = as_number(reading.value)
        if number is None:
            return
        ring = self.ring
        if ring and reading.ts - ring[-1][0] < RING_SPACING:
            # Keep the first time stamp of the bucket: replacing it would let a device that
            # sends faster than the spacing hold one point forever.
            ring[-1] = (ring[-1][0], number)
        else:
            ring.append((reading.ts, number))


def as_number(value: Value | None) -> float | None:
    """A value a sparkline can draw: finite ints and floats (not booleans, strings, None)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond a float (decoders refuse them: a last guard)
        return None
    return number if math.isfinite(number) else None


@dataclass(slots=True)
class Recent:
    """Per device, per sensor: the last value and its ring."""

    sensors: dict[str, dict[str, SensorRecent]] = field(default_factory=dict)

    def record(self, reading: Reading) -> None:
        device = self.sensors.get(reading.device)
        if device is None:
            device = self.sensors[reading.device] = {}
        sensor = device.get(reading.sensor)
        if sensor is None:
            if len(device) >= MAX_SENSORS:
                return
            sensor = device[reading.sensor] = SensorRecent(reading.value, reading.unit, reading.ts)
        sensor.add(reading)

    def forget(self, device: str) -> None:
        self.sensors.pop(device, None)

    def of(self, device: str) -> dict[str, SensorRecent]:
        return self.sensors.get(device, {})
