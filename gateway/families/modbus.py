"""Modbus devices (`type: modbus`): devices on one serial port, or with the same transport,
host and port, share its bus. pymodbus (the `modbus` extra) is imported only when a Modbus link
is made."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.config import Device, ModbusDevice
from gateway.controls import Control, register_controls
from gateway.families.base import Family, FamilyContext

if TYPE_CHECKING:
    from gateway.supervisor import Link


class ModbusFamily(Family):
    name = "modbus"
    models = (ModbusDevice,)

    def device_link(self, device: Any, ctx: FamilyContext) -> Link:
        from gateway.modbus.bus import ModbusBuses  # noqa: PLC0415 - the `modbus` extra
        from gateway.modbus.link import ModbusLink  # noqa: PLC0415

        buses = ctx.shared(self.name, lambda: ModbusBuses(ctx.metrics))
        return ModbusLink(device, buses.bus_for(device), ctx.submit, ctx.metrics)

    def controls(self, device: Device) -> dict[str, Control]:
        """Coils are switches, holding registers with options selects, and what a register's
        `homeassistant.platform` says; the state of each is its register's read-back."""
        assert isinstance(device, ModbusDevice)
        return register_controls(device.registers)

    status_key = "modbus"

    def status_document(self, ctx: FamilyContext, view: Any, now: float) -> object:
        """Each port or connection in use and the devices on it; None without Modbus."""
        buses = ctx.peek(self.name)
        return None if buses is None else buses.status()  # type: ignore[attr-defined]


MODBUS = ModbusFamily()
