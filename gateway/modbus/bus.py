"""One Modbus line or connection, shared by the devices on it: one port or socket, one client,
one request at a time.

Each Modbus device is its own supervised link (`modbus:<id>`: its own state, availability,
backoff and commands), and every link on the same serial port, or with the same transport, host
and port, attaches to the same `ModbusBus`. The bus owns the handle: `attached()` is the only
way in, the first link to attach opens it (a `SerialLine` or a `NetworkPeer` knows how), the
last to leave closes it (in its `__aexit__`, so it is released whatever happened), and a link
that attaches to a bus whose handle died (unplugged, the server restarted) reopens it in place
for everyone. The bus runs no task of its own. Requests take the bus's lock, so the units'
requests interleave but never overlap (many devices and converters accept one connection and
one request at a time: pymodbus's own TCP server answers only the first of pipelined requests),
and each has the asking device's timeout. When the handle goes away, every attached link is told
at once (its `on_lost`), fails and backs off; the first one back reopens it.

A network connection can also die without a word (the peer vanished without FIN: a half-open
socket). The bus notices when a unit that has answered on this connection gets no answer for a
whole `timeout x (retries + 1)` and nothing else answered meanwhile either: it drops the
connection, and the links reopen it. A unit that never answered on it (a dead unit among live
ones) does not count: its timeouts are its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import termios
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import serial

from gateway.config import ModbusDevice
from gateway.errors import LinkDownError, TransientLinkError
from gateway.links.hardware import hardware_executor
from gateway.links.serial import find_port, translate_open_error
from gateway.metrics import Metrics
from gateway.modbus.client import ModbusClient, network_client, serial_client

log = logging.getLogger(__name__)

Lost = Callable[[ModbusClient], None]


class Opener(Protocol):
    """How a bus opens its handle: a serial line or a network peer."""

    label: str  # the port or `tcp://host:port`: /status, the metrics' `connection`
    network: bool
    quiet_after_timeout: bool

    async def open(self, lost: Lost) -> ModbusClient:
        """A connected client; `lost(client)` when it goes away. Raises a LinkError."""


class SerialLine:
    """A serial port (found by path or `match`), opened with the line's settings."""

    network = False
    quiet_after_timeout = False  # as before: a serial line's timing is the devices' own

    def __init__(self, options: ModbusDevice) -> None:
        self._options = options  # the first device's port and line settings (all are equal)
        self.label = options.connection_label

    async def open(self, lost: Lost) -> ModbusClient:
        loop = asyncio.get_running_loop()
        o = self._options
        # Finding a `match` lists the ports (sysfs): in the hardware pool, like a serial open.
        path, how = await loop.run_in_executor(hardware_executor(), find_port, o)
        # pymodbus opens the port on the event loop. Open it once in the hardware pool first:
        # a wedged USB adapter then hangs a pool thread (bounded by the link's open timeout),
        # never the loop, and a refused open gets pyserial's reason.
        if (refused := await self._probe(path)) is not None:
            raise refused
        client = serial_client(
            path,
            baudrate=o.baudrate,
            bytesize=o.bytesize,
            parity=o.parity,
            stopbits=o.stopbits,
            on_lost=lambda: lost(client),
        )
        try:
            opened = await client.connect()
        except (ValueError, termios.error) as exc:  # settings pyserial or the driver refuses
            client.close()
            raise translate_open_error(path, exc) from exc
        except BaseException:
            client.close()
            raise
        if not opened:
            client.close()
            raise await self._probe(path) or TransientLinkError(f"cannot open {path}", kind="open")
        log.info("modbus: opened %s%s at %d baud, parity %s", path, how, o.baudrate, o.parity)
        return client

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


class NetworkPeer:
    """A Modbus TCP server, a serial-to-Ethernet converter (RTU over TCP) or a UDP peer. The
    host name is resolved at every connect, in the hardware pool (a stuck resolver must not
    hold the loop, nor the default executor the MQTT session resolves its broker in)."""

    network = True

    def __init__(self, options: ModbusDevice) -> None:
        assert options.host is not None  # the model requires it for networks
        assert isinstance(options.port, int)
        self.transport = options.transport
        self.quiet_after_timeout = options.transport == "rtu_over_tcp"
        self.host, self.port = options.host, options.port
        self.label = options.connection_label

    async def open(self, lost: Lost) -> ModbusClient:
        refused: TransientLinkError | None = None
        for address in await self._resolve():
            client = self._client(address, lost)
            try:
                opened = await client.connect()
            except BaseException:
                client.close()
                raise
            if opened:
                log.info("modbus: connected to %s (%s)", self.label, address)
                return client
            client.close()
            refused = await self._why_not(address)
        raise refused or TransientLinkError(f"cannot connect to {self.label}", kind="connect")

    def _client(self, address: str, lost: Lost) -> ModbusClient:
        client = network_client(
            self.transport, address, self.port, label=self.label, on_lost=lambda: lost(client)
        )
        return client

    async def _resolve(self) -> list[str]:
        kind = socket.SOCK_DGRAM if self.transport == "udp" else socket.SOCK_STREAM

        def resolve() -> list[str]:
            infos = socket.getaddrinfo(self.host, self.port, type=kind)
            return list(dict.fromkeys(str(info[4][0]) for info in infos))

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(hardware_executor(), resolve)
        except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
            raise TransientLinkError(
                f"cannot resolve {self.host}: {exc}",
                kind="dns",
                advice="check the host name and the DNS settings",
            ) from exc

    async def _why_not(self, address: str) -> TransientLinkError:
        """pymodbus only logs why a connect failed: try once more ourselves for the reason."""
        if self.transport == "udp":
            return TransientLinkError(f"cannot open a UDP socket to {self.label}", kind="connect")
        try:
            _, writer = await asyncio.open_connection(address, self.port)
        except OSError as exc:
            refused = isinstance(exc, ConnectionRefusedError)
            why = (
                "connection refused"
                if refused
                else (os.strerror(exc.errno) if exc.errno else str(exc))
            )
            return TransientLinkError(
                f"cannot connect to {self.label} ({address}): {why}",
                kind="refused" if refused else "connect",
                advice="is the device on, and is this its Modbus port?",
            )
        writer.close()
        return TransientLinkError(f"cannot connect to {self.label} ({address})", kind="connect")


class ModbusBus:
    def __init__(self, opener: Opener, metrics: Metrics | None = None) -> None:
        self._opener = opener
        self._metrics = metrics
        self._client: ModbusClient | None = None
        self._users: dict[str, Callable[[], None]] = {}  # link name -> its on_lost
        self._opening = asyncio.Lock()
        self._turn = asyncio.Lock()  # one request on the line at a time
        self._answered: set[int] = set()  # units that answered on this connection
        self._last_answer = 0.0  # monotonic time of the latest answer on it
        self.connects = 0
        self.drops = 0

    @property
    def label(self) -> str:
        """The configured port (or match) or `transport://host:port`: the metrics' label and
        the key of `/status`."""
        return self._opener.label

    @property
    def path(self) -> str:
        """What logs and errors name: the port opened (a match resolves to one) or the label."""
        return self._client.path if self._client is not None else self._opener.label

    @property
    def network(self) -> bool:
        return self._opener.network

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    @property
    def quiet_after_timeout(self) -> bool:
        """RTU frames over a network: after a timeout the line stays quiet for another timeout,
        so that a late answer (it has no transaction id) meets no request."""
        return self._opener.quiet_after_timeout

    @property
    def users(self) -> list[str]:
        return sorted(self._users)

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
        self._gauge()
        try:
            yield
        finally:
            del self._users[user]
            if not self._users:
                self._close()
            self._gauge()

    async def _reopen(self) -> None:
        self._close()
        self._client = await self._opener.open(self._lost)
        self._answered.clear()
        self.connects += 1
        if self._metrics is not None:
            self._metrics.modbus_connects.labels(self.label).inc()

    def _lost(self, client: ModbusClient) -> None:
        # Only the handle in use going away matters: closing a dead one ourselves (a reopen)
        # reports a disconnect too, which must not fail the links that use the new one.
        if client is not self._client:
            return
        self._close()
        self._tell_users()

    def _tell_users(self) -> None:
        for on_lost in list(self._users.values()):
            on_lost()

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
            log.info("modbus: closed %s", client.path)
        self._gauge()

    def _gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.modbus_connection_up.labels(self.label).set(int(self.connected))
            self._metrics.modbus_connection_devices.labels(self.label).set(len(self._users))

    def answered(self, unit: int) -> None:
        """A unit answered (values or an exception): it and the connection are alive."""
        self._answered.add(unit)
        self._last_answer = time.monotonic()

    def unanswered(self, unit: int, since: float) -> None:
        """A unit gave no answer to a request and its retries, asked first at `since`
        (monotonic). If it answered on this connection before and nothing else answered
        since, the connection is dead (half-open): drop it, the links reopen it."""
        if not self.network or self._client is None:
            return
        if unit not in self._answered or self._last_answer >= since:
            return
        log.warning(
            "modbus: %s: unit %d answered before and nothing answers now: dropping the "
            "connection (half-open?) and reconnecting",
            self.path,
            unit,
        )
        self.drops += 1
        if self._metrics is not None:
            self._metrics.modbus_connection_drops.labels(self.label).inc()
        self._close()
        self._tell_users()

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[ModbusClient]:
        """The client, once the line is free, for one request (the caller's `asyncio.timeout`
        inside the turn: waiting for the line is not the device's fault)."""
        async with self._turn:
            client = self._client
            if client is None or not client.connected:
                raise LinkDownError(f"{self.path} is not open")
            yield client

    def status(self) -> dict[str, object]:
        """This connection's part of `/status`."""
        return {
            "connected": self.connected,
            "devices": self.users,
            "connects": self.connects,
            "drops": self.drops,
        }


class ModbusBuses:
    """The buses of a gateway, by port or connection (and line settings: a reload that changes
    them gets a new bus once the old one's devices are stopped)."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics
        self._buses: dict[tuple[object, ...], ModbusBus] = {}

    def bus_for(self, device: ModbusDevice) -> ModbusBus:
        key = (*device.bus_key, *device.line_settings)
        bus = self._buses.get(key)
        if bus is None:
            opener = NetworkPeer(device) if device.is_network else SerialLine(device)
            bus = self._buses[key] = ModbusBus(opener, self._metrics)
        return bus

    def status(self) -> dict[str, object]:
        """`/status`'s `modbus` section: each connection in use, with its devices."""
        return {
            "connections": {bus.label: bus.status() for bus in self._buses.values() if bus.users}
        }
