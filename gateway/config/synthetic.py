"""Synthetic devices: readings the gateway makes up at a fixed rate, with no hardware.

For trying a config (filters, payload modes, Home Assistant discovery) before the device is
wired, for the demo, and for fleet and soak benchmarks, where a hundred gateways would need a
thousand ptys otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from gateway.config.base import SensorName
from gateway.config.devices import DeviceBase, device_model
from gateway.yamlsource import Path_

#: counter: the frame's number (0, 1, 2, ...; a consumer can count what it got); walk: a bounded
#: random walk around 20 (a room's temperature); sine: 20 ± 5 over a minute.
Shape = Literal["counter", "walk", "sine"]


def _one_walk() -> dict[str, Shape]:
    return {"value": "walk"}


@device_model
class SyntheticDevice(DeviceBase):
    """Makes up one frame of readings every `interval` seconds."""

    type: Literal["synthetic"]
    interval: float = Field(
        1.0, gt=0, le=86_400, description="Seconds between frames (one reading per value)."
    )
    values: dict[SensorName, Shape] = Field(
        default_factory=_one_walk,
        min_length=1,
        description="Sensor -> how its value moves: counter (the frame's number), walk (a "
        "random walk around 20), sine (20 ± 5 over a minute).",
    )
    count: int | None = Field(
        None,
        ge=1,
        description="Stop after this many frames (the link stays up, silent); default: never. "
        "Benchmarks use it to know exactly what was produced.",
    )
    seed: int | None = Field(None, description="Seed of the random walk; default: the device id.")
    open_timeout: float = Field(1.0, gt=0, description="Seconds allowed to 'open' the device.")

    def named_sensors(self) -> Iterator[tuple[str, Path_]]:
        for name in self.values:
            yield name, ("values", name)
        yield from super().named_sensors()
