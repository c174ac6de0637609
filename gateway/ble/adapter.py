"""Power-cycling an adapter over D-Bus: org.bluez.Adapter1.Powered off, then on.

The last resort before giving up on a silent scanner, as `bluetoothctl power off; power on`
would do by hand. `SystemBus` owns the one D-Bus connection this needs, for as long as it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import Self

from dbus_fast import BusType, DBusError, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from gateway.limits import DBUS_DISCONNECT_TIMEOUT as DISCONNECT_TIMEOUT

log = logging.getLogger(__name__)

BLUEZ = "org.bluez"
ADAPTER_IFACE = "org.bluez.Adapter1"
PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"


class SystemBus:
    """A private connection to the system bus (DBUS_SYSTEM_BUS_ADDRESS is honoured)."""

    def __init__(self) -> None:
        self.bus: MessageBus | None = None

    async def __aenter__(self) -> Self:
        self.bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        bus, self.bus = self.bus, None
        if bus is not None:
            bus.disconnect()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DISCONNECT_TIMEOUT):
                    await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]

    async def call(self, message: Message) -> Message:
        assert self.bus is not None, "call() outside the bus's context"
        reply = await self.bus.call(message)
        assert reply is not None  # method calls always get a reply
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body else ""
            raise DBusError(reply.error_name or "org.freedesktop.DBus.Error.Failed", text)
        return reply

    async def set_powered(self, adapter: str, on: bool) -> None:
        await self.call(
            Message(
                destination=BLUEZ,
                path=f"/org/bluez/{adapter}",
                interface=PROPERTIES_IFACE,
                member="Set",
                signature="ssv",
                body=[ADAPTER_IFACE, "Powered", Variant("b", on)],
            )
        )

    async def powered(self, adapter: str) -> bool:
        reply = await self.call(
            Message(
                destination=BLUEZ,
                path=f"/org/bluez/{adapter}",
                interface=PROPERTIES_IFACE,
                member="Get",
                signature="ss",
                body=[ADAPTER_IFACE, "Powered"],
            )
        )
        return bool(reply.body[0].value)


async def power_cycle(adapter: str, step_timeout: float) -> None:
    """Powered off, then on; each step bounded. Raises dbus-fast/OS errors or TimeoutError
    (the caller translates them)."""
    async with SystemBus() as bus:
        for on in (False, True):
            async with asyncio.timeout(step_timeout):
                await bus.set_powered(adapter, on)
                log.info("adapter %s: powered %s", adapter, "on" if on else "off")
        async with asyncio.timeout(step_timeout):
            if not await bus.powered(adapter):
                raise DBusError("org.bluez.Error.NotReady", f"{adapter} did not power on")
