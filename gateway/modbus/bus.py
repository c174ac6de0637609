"""One RS485 line, shared by the Modbus devices on it: one port, one client, one request at a
time.

Each Modbus device is its own supervised link (`modbus:<id>`: its own state, availability,
backoff and commands), and every link on the same port attaches to the same `ModbusBus`. The
bus owns the port: `attached()` is the only way in, the first link to attach opens it, the last
to leave closes it (in its `__aexit__`, so the port is released whatever happened), and a link
that attaches to a bus whose port died (unplugged) reopens it in place for everyone. The bus
runs no task of its own. Requests take the bus's lock, so the slaves' requests interleave but
never overlap, and each has the asking device's timeout. When the port goes away, every
attached link is told at once (its `on_lost`), fails with `unplugged` and backs off; the first
one back reopens the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import serial

from gateway.config import ModbusDevice
from gateway.errors import LinkDownError, TransientLinkError
from gateway.links.hardware import hardware_executor
from gateway.links.serial import find_port, translate_open_error
from gateway.modbus.client import RtuClient

log = logging.getLogger(__name__)


class ModbusBus:
    def __init__(self, options: ModbusDevice) -> None:
        self._options = options  # the first device's port and line settings (all are equal)
        self._client: RtuClient | None = None
        self._users: dict[str, Callable[[], None]] = {}  # link name -> its on_lost
        self._opening = asyncio.Lock()
        self._turn = asyncio.Lock()  # one request on the line at a time
        self.path = options.port or ""

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    @contextlib.asynccontextmanager
    async def attached(self, user: str, on_lost: Callable[[], None]) -> AsyncIterator[None]:
        """Use the port (opened if it is not) until the block ends; `on_lost` is called when
        the port goes away meanwhile."""
        if user in self._users:
            raise RuntimeError(f"{user} is already attached to {self.path}")
        async with self._opening:
            if not self.connected:
                await self._reopen()
            self._users[user] = on_lost
        try:
            yield
        finally:
            del self._users[user]
            if not self._users:
                self._close()

    async def _reopen(self) -> None:
        self._close()
        loop = asyncio.get_running_loop()
        o = self._options
        # Finding a `match` lists the ports (sysfs): in the hardware pool, like a serial open.
        path, how = await loop.run_in_executor(hardware_executor(), find_port, o)
        # pymodbus opens the port on the event loop. Open it once in the hardware pool first:
        # a wedged USB adapter then hangs a pool thread (bounded by the link's open timeout),
        # never the loop, and a refused open gets pyserial's reason.
        if (refused := await self._probe(path)) is not None:
            raise refused
        client = RtuClient(
            path,
            baudrate=o.baudrate,
            bytesize=o.bytesize,
            parity=o.parity,
            stopbits=o.stopbits,
            on_lost=lambda: self._lost(client),
        )
        try:
            opened = await client.connect()
        except ValueError as exc:  # settings pyserial refuses
            client.close()
            raise translate_open_error(path, exc) from exc
        except BaseException:
            client.close()
            raise
        if not opened:
            client.close()
            raise await self._probe(path) or TransientLinkError(f"cannot open {path}", kind="open")
        self._client, self.path = client, path
        log.info("modbus: opened %s%s at %d baud, parity %s", path, how, o.baudrate, o.parity)

    async def _probe(self, path: str) -> Exception | None:
        """Open and close the port with pyserial in the hardware pool: None if that worked,
        else the reason (pymodbus only logs why it could not open a port)."""

        def probe() -> None:
            serial.serial_for_url(path, baudrate=self._options.baudrate, exclusive=True).close()

        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(hardware_executor(), probe)
        except (serial.SerialException, OSError, ValueError) as exc:
            return translate_open_error(path, exc)
        return None

    def _lost(self, client: RtuClient) -> None:
        # Only the port in use going away matters: closing a dead one ourselves (a reopen)
        # reports a disconnect too, which must not fail the links that use the new one.
        if client is not self._client:
            return
        for on_lost in list(self._users.values()):
            on_lost()

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
            log.info("modbus: closed %s", client.path)

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[RtuClient]:
        """The client, once the line is free, for one request (the caller's `asyncio.timeout`
        inside the turn: waiting for the line is not the device's fault)."""
        async with self._turn:
            client = self._client
            if client is None or not client.connected:
                raise LinkDownError(f"{self.path} is not open")
            yield client


class ModbusBuses:
    """The buses of a gateway, by port (and line settings: a reload that changes them gets a
    new bus once the old one's devices are stopped)."""

    def __init__(self) -> None:
        self._buses: dict[tuple[object, ...], ModbusBus] = {}

    def bus_for(self, device: ModbusDevice) -> ModbusBus:
        key = (*device.bus_key, *device.line_settings)
        bus = self._buses.get(key)
        if bus is None:
            bus = self._buses[key] = ModbusBus(device)
        return bus
