"""Synthetic devices (`type: synthetic`): made-up readings at a fixed rate, no hardware."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.config import Device, SyntheticDevice
from gateway.families.base import Family, FamilyContext
from gateway.synthetic import SyntheticLink

if TYPE_CHECKING:
    from gateway.supervisor import Link


class SyntheticFamily(Family):
    name = "synthetic"
    models = (SyntheticDevice,)

    def device_link(self, device: Any, ctx: FamilyContext) -> Link:
        return SyntheticLink(device, ctx.submit, ctx.metrics)

    def known_sensors(self, device: Device) -> dict[str, str | None]:
        assert isinstance(device, SyntheticDevice)
        return dict.fromkeys(device.values)


SYNTHETIC = SyntheticFamily()
