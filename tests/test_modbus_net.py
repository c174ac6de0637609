"""Modbus over the network against pymodbus's own servers on loopback: Modbus TCP, RTU frames
over TCP (a serial-to-Ethernet converter) and UDP; devices sharing one connection; a silent unit
among live ones; the network's faults (a refused connect, a server restart, a half-open socket
and a slow peer through the fault proxy); a host name."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from faultproxy import ThreadedFaultProxy
from helpers import FAST_BACKOFF, free_port
from test_modbus_link import REGISTERS, VALUES, Collector, run_link, server_map

from gateway.config import ModbusDevice
from gateway.errors import TransientLinkError
from gateway.metrics import Metrics
from gateway.modbus.bus import ModbusBuses
from gateway.modbus.link import ModbusLink
from gateway.modbus.simulator import ModbusSimulator, UnitMap
from gateway.supervisor import Supervisor

pytestmark = pytest.mark.timeout(60)

TRANSPORTS = ["tcp", "rtu_over_tcp", "udp"]
HOST = "127.0.0.1"


def net_device(transport: str, port: int, unit: int, **kw: Any) -> ModbusDevice:
    return ModbusDevice.model_validate(
        {
            "id": f"unit{unit}",
            "type": "modbus",
            "transport": transport,
            "host": HOST,
            "port": port,
            "unit_id": unit,
            "poll_interval": 0.2,
            "timeout": 0.3,
            "retries": 1,
            "registers": REGISTERS,
            "backoff": dict(FAST_BACKOFF),
            **kw,
        }
    )


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((HOST, port)) == 0


@contextlib.asynccontextmanager
async def serving(sim: ModbusSimulator, port: int) -> AsyncIterator[ModbusSimulator]:
    """The simulator's server until the block ends (then its port is closed)."""
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(sim.serve(), name="modbus-server")
        async with asyncio.timeout(5):
            while sim.transport != "udp" and not await asyncio.to_thread(listening, port):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # UDP: nothing to connect to; TCP: the probe's close is seen
        try:
            yield sim
        finally:
            task.cancel()


def units_map(*units: int) -> dict[int, UnitMap]:
    table = server_map(net_device("tcp", 1, 1))
    return {u: {f: dict(c) for f, c in table.items()} for u in units}


@pytest.fixture
def port() -> int:
    return free_port()


async def wait_for(check: Any, what: str) -> None:
    """Poll `check` (no event to wait on: a counter, a list) for up to 10 s."""
    try:
        async with asyncio.timeout(10):
            while not check():  # noqa: ASYNC110 - a counter has no event
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@contextlib.asynccontextmanager
async def supervised(*links: ModbusLink) -> AsyncIterator[tuple[Supervisor, list[str]]]:
    """The links under a real supervisor; also yields every state change, in order."""
    changes: list[str] = []
    metrics = Metrics()
    holder: list[Supervisor] = []

    def changed() -> None:
        for status in holder[0].status.values():
            if not changes or changes[-1] != f"{status.name}={status.state}":
                changes.append(f"{status.name}={status.state}")

    sup = Supervisor(metrics, on_change=changed, stop_timeout=5)
    holder.append(sup)
    async with sup:
        for link in links:
            sup.start(link)
        yield sup, changes
        for link in links:
            await sup.stop(link.name)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_every_type_an_exception_and_writes_over_each_transport(
    transport: str, port: int
) -> None:
    dev = net_device(transport, port, 1)
    metrics = Metrics()
    sim = ModbusSimulator(port, units_map(1), transport=transport)
    got = Collector()
    link = ModbusLink(dev, ModbusBuses(metrics).bus_for(dev), got, metrics)
    async with serving(sim, port), asyncio.TaskGroup() as tg:
        task = tg.create_task(run_link(link))
        values = await got.next()
        for name, text in VALUES.items():
            assert str(values[name]) == text or values[name] == float(text), name
        assert "missing" not in values  # address 20: an exception answer, that register only
        assert metrics.readings_received.labels("unit1")._value.get() >= len(values)
        assert metrics.modbus_errors.labels("unit1", "missing", "illegal_address")._value.get()
        assert await link.execute("relay", b"0") == "relay = off"
        assert (await got.next())["relay"] is False
        assert await link.execute("i16", b"-3.2") == "i16 = -3.2"
        assert (await got.next())["i16"] == -3.2
        assert await link.execute("i32", b"-7") == "i32 = -7"
        assert (await got.next())["i32"] == -7
        task.cancel()


async def test_devices_on_one_address_share_one_connection_and_report_it(port: int) -> None:
    metrics = Metrics()
    buses = ModbusBuses(metrics)
    devs = [net_device("tcp", port, unit) for unit in (1, 2, 3)]
    sim = ModbusSimulator(port, units_map(1, 2, 3), transport="tcp")
    got = [Collector() for _ in devs]
    links = [ModbusLink(d, buses.bus_for(d), g, metrics) for d, g in zip(devs, got, strict=True)]
    assert len({id(buses.bus_for(d)) for d in devs}) == 1
    async with serving(sim, port), asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(run_link(link)) for link in links]
        for g in got:
            await g.next()
            await g.next()
        assert sim.connections == 1
        label = f"tcp://{HOST}:{port}"
        (status,) = buses.status()["connections"].values()  # type: ignore[attr-defined]
        assert status["connected"] is True
        assert status["devices"] == ["modbus:unit1", "modbus:unit2", "modbus:unit3"]
        assert metrics.modbus_connection_devices.labels(label)._value.get() == 3
        assert metrics.modbus_connection_up.labels(label)._value.get() == 1
        for task in tasks:
            task.cancel()
    assert metrics.modbus_connection_up.labels(label)._value.get() == 0


@pytest.mark.parametrize("transport", ["tcp", "rtu_over_tcp"])
async def test_a_silent_unit_never_stalls_the_others_nor_goes_online(
    transport: str, port: int
) -> None:
    """Three units on one connection, unit 3 not there (the server keeps quiet): units 1 and 2
    keep their poll rate, and unit 3's link never comes up."""
    interval, window = 0.5, 6.0
    metrics, buses = Metrics(), ModbusBuses()
    # A timeout well inside the interval: a silent unit's try holds the connection for it (on
    # RTU over TCP twice: the quiet time after a timeout).
    devs = [
        net_device(transport, port, u, poll_interval=interval, timeout=0.1, retries=0)
        for u in (1, 2, 3)
    ]
    sim = ModbusSimulator(port, units_map(1, 2), transport=transport)
    got = [Collector() for _ in devs]
    links = [ModbusLink(d, buses.bus_for(d), g, metrics) for d, g in zip(devs, got, strict=True)]
    async with serving(sim, port), supervised(*links) as (sup, changes):
        await wait_for(lambda: len(got[0].frames) >= 2 and len(got[1].frames) >= 2, "polls")
        before = [len(g.frames) for g in got]
        await asyncio.sleep(window)
        polls = [len(g.frames) - b for g, b in zip(got, before, strict=True)]
        assert sup.status["modbus:unit3"].failures >= 2  # it was asked, again and again
    expected = window / interval
    for n in polls[:2]:
        assert abs(n - expected) <= 0.1 * expected, (polls, expected)
    assert polls[2] == 0
    assert "modbus:unit3=up" not in changes
    assert "modbus:unit1=backing_off" not in changes


async def test_a_refused_connect_says_so_and_a_restarted_server_is_read_again(port: int) -> None:
    dev = net_device("tcp", port, 1)
    got = Collector()
    link = ModbusLink(dev, ModbusBuses().bus_for(dev), got, Metrics())
    with pytest.raises(TransientLinkError, match="refused") as err:
        async with link:
            pass
    assert err.value.kind == "refused"
    for _ in range(2):  # the server starts, stops (a restart), starts again
        sim = ModbusSimulator(port, units_map(1), transport="tcp")
        async with serving(sim, port):
            async with link:
                await link.poll_once()
                assert got.frames
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.3):
                        await link.run()  # polls until the server goes away below
        with pytest.raises(TransientLinkError) as err:
            async with link:
                await link.poll_once()
        assert err.value.kind in ("refused", "disconnected")


async def test_the_server_going_away_fails_the_running_link(port: int) -> None:
    dev = net_device("tcp", port, 1)
    link = ModbusLink(dev, ModbusBuses().bus_for(dev), Collector(), Metrics())
    sim = ModbusSimulator(port, units_map(1), transport="tcp")
    async with asyncio.TaskGroup() as tg:
        server = tg.create_task(sim.serve())
        await wait_for(lambda: listening(port), "listening")
        async with link:
            await link.poll_once()
            server.cancel()  # the server shuts down: its connections close (FIN)
            with pytest.raises(TransientLinkError, match="disconnected") as err:
                await link.run()
            assert err.value.kind == "disconnected"


@pytest.fixture
def proxy_to(port: int) -> Iterator[ThreadedFaultProxy]:
    proxy = ThreadedFaultProxy(HOST, port)
    yield proxy
    proxy.close()


async def test_a_half_open_connection_is_dropped_and_reopened(
    port: int, proxy_to: ThreadedFaultProxy
) -> None:
    """The peer vanishes without FIN (the proxy swallows every byte): requests time out, the
    connection is dropped after timeout x (retries + 1), and reopened once the peer is back."""
    metrics = Metrics()
    dev = net_device("tcp", proxy_to.port, 1, timeout=0.2, retries=1)
    got = Collector()
    link = ModbusLink(dev, ModbusBuses(metrics).bus_for(dev), got, metrics)
    label = f"tcp://{HOST}:{proxy_to.port}"
    sim = ModbusSimulator(port, units_map(1), transport="tcp")
    async with serving(sim, port), supervised(link) as (sup, _):
        await got.next()
        proxy_to.blackhole = True
        drops = metrics.modbus_connection_drops.labels(label)
        await wait_for(lambda: drops._value.get() >= 1, "the connection dropped")
        assert sup.status["modbus:unit1"].last_error
        proxy_to.blackhole = False
        proxy_to.reset_all()  # the connections made meanwhile lead nowhere
        count = len(got.frames)
        await wait_for(lambda: len(got.frames) > count + 1, "reads again")
        # A unit that never answered on the new connections did not drop them again and again.
        assert drops._value.get() <= 2


class SlowPeer:
    """In front of pymodbus's server, a peer that answers late: the answer to each connection's
    first request leaves after `late` seconds (past the gateway's timeout), the others after
    `delay`; answers go out as they are due, so a late one arrives during the next request."""

    def __init__(self, upstream: int, late: float, delay: float) -> None:
        self.upstream, self.late, self.delay = upstream, late, delay
        self.late_sent = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, HOST, 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(HOST, self.upstream)
        loop = asyncio.get_running_loop()
        first = True
        with contextlib.suppress(ConnectionError):
            while request := await reader.read(4096):
                up_writer.write(request)
                answer = await up_reader.read(4096)
                delay = self.late if first else self.delay
                self.late_sent += first
                first = False
                loop.call_later(delay, writer.write, answer)
        up_writer.close()
        writer.close()

    async def close(self) -> None:
        self._server.close()


@pytest.mark.parametrize("transport", ["tcp", "rtu_over_tcp"])
async def test_a_late_answer_is_never_taken_for_the_next_request(transport: str, port: int) -> None:
    """A slow peer answers after the timeout, while the next request would wait for its own
    answer: on Modbus TCP the transaction id tells them apart; RTU frames have none, so the
    connection stays quiet for a timeout after a timeout. No value is another register's."""
    regs = [{"name": n, "address": a} for n, a in (("a", 0), ("b", 10), ("c", 20))]
    sim = ModbusSimulator(
        port, {1: {"holding": {0: 1111, 10: 2222, 20: 3333}}}, transport=transport
    )
    peer = SlowPeer(port, late=0.35, delay=0.1)
    got = Collector()
    async with serving(sim, port):
        dev = net_device(transport, await peer.start(), 1, registers=regs, timeout=0.2, retries=1)
        link = ModbusLink(dev, ModbusBuses().bus_for(dev), got, Metrics())
        async with link:  # the probe (the first request) is answered late: its retry in time
            for _ in range(3):
                await link.poll_once()
        await peer.close()
    assert peer.late_sent == 1
    seen = {(k, v) for frame in got.frames for k, v in frame.items()}
    assert seen == {("a", 1111), ("b", 2222), ("c", 3333)}


async def test_a_host_name_is_resolved_in_the_hardware_pool(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`localhost` (which may resolve to ::1 first: the next address is tried), resolved in a
    thread of the hardware pool, never on the event loop."""
    threads: list[str] = []
    resolve = socket.getaddrinfo

    def watched(*args: Any, **kw: Any) -> Any:
        threads.append(threading.current_thread().name)
        return resolve(*args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", watched)
    dev = ModbusDevice.model_validate(
        {**net_device("tcp", port, 1).model_dump(exclude_unset=True), "host": "localhost"}
    )
    got = Collector()
    link = ModbusLink(dev, ModbusBuses().bus_for(dev), got, Metrics())
    sim = ModbusSimulator(port, units_map(1), transport="tcp")
    async with serving(sim, port), link:
        await link.poll_once()
    assert got.frames
    assert threads
    assert all(name.startswith("hardware-") for name in threads), threads
