"""SerialLink on a real pseudo-terminal through pyserial-asyncio: the test plays the device on
the controller side, the link opens the device side by its path."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.config import SerialDevice
from gateway.errors import LinkDownError, TransientLinkError
from gateway.links.serial import CLOSE_TIMEOUT, SerialLink
from gateway.metrics import Metrics
from gateway.models import Reading
from gateway.supervisor import Supervisor

pytestmark = pytest.mark.timeout(10)

WAIT = 2.0  # seconds allowed for anything to cross the pty


@dataclass
class Pty:
    controller: int  # the test's end: what is written here is what the device "sends"
    device: int  # held open so the pty stays configured; the link opens `path` itself
    path: str
    closed: set[int] = field(default_factory=set)

    def send(self, data: bytes) -> None:
        os.write(self.controller, data)

    def unplug(self) -> None:
        os.close(self.controller)
        self.closed.add(self.controller)

    async def receive(self, size: int) -> bytes:
        """Read exactly `size` bytes the link wrote to the device."""
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(self.controller, readable.set)
        data = b""
        try:
            async with asyncio.timeout(WAIT):
                while len(data) < size:
                    await readable.wait()
                    readable.clear()
                    data += os.read(self.controller, size - len(data))
        finally:
            loop.remove_reader(self.controller)
        return data


@pytest.fixture
def pty() -> Iterator[Pty]:
    controller, device = os.openpty()
    p = Pty(controller, device, os.ttyname(device))
    yield p
    for fd in (controller, device):
        if fd not in p.closed:
            os.close(fd)


class Collector:
    """The link's `submit`: collects readings and lets the test wait for them."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Reading] = asyncio.Queue()

    def __call__(self, reading: Reading) -> None:
        self.queue.put_nowait(reading)

    async def get(self, count: int) -> list[Reading]:
        async with asyncio.timeout(WAIT):
            return [await self.queue.get() for _ in range(count)]


def device(path: str, **overrides: Any) -> SerialDevice:
    return SerialDevice.model_validate(
        {
            "id": "boiler",
            "type": "serial",
            "port": path,
            "baudrate": 9600,
            "decoder": "kv",
            "sensors": {"temp": {"unit": "°C", "type": "float"}},
            **overrides,
        }
    )


def open_fds() -> dict[int, str]:
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the fd listdir itself used is gone already
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return fds


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_readings_are_decoded_and_submitted(pty: Pty) -> None:
    metrics, collect = Metrics(), Collector()
    link = SerialLink(device(pty.path), collect, metrics)
    assert link.name == "serial:boiler"

    async with link:
        assert link.is_up
        before = time.time()
        pty.send(b"temp=21")
        pty.send(b".5,hum=40\r\nstate=idle\n")
        readings = await collect.get(3)

    assert [(r.device, r.sensor, r.value, r.unit) for r in readings] == [
        ("boiler", "temp", 21.5, "°C"),
        ("boiler", "hum", 40, None),
        ("boiler", "state", "idle", None),
    ]
    assert all(before <= r.ts <= time.time() for r in readings)
    assert sample(metrics, "gateway_readings_received_total", device="boiler") == 3.0


async def test_json_device(pty: Pty) -> None:
    collect = Collector()
    async with SerialLink(device(pty.path, decoder="json"), collect, Metrics()):
        pty.send(b'{"temp": 19, "pump": {"on": true}}\n')
        readings = await collect.get(2)
    assert [(r.sensor, r.value) for r in readings] == [("temp", 19.0), ("pump_on", True)]


async def test_garbled_line_is_counted_and_the_link_keeps_going(pty: Pty) -> None:
    metrics, collect = Metrics(), Collector()
    async with SerialLink(device(pty.path), collect, metrics) as link:
        run = asyncio.create_task(link.run())
        pty.send(b"temp=21.5\n\x00\xffgarbage\ntemp=warm\n" + b"x" * 5000 + b"\ntemp=22\n")
        readings = await collect.get(2)
        assert [r.value for r in readings] == [21.5, 22.0]
        assert not run.done()
        run.cancel()

    assert sample(metrics, "gateway_frame_errors_total", device="boiler", reason="decode") == 2.0
    assert sample(metrics, "gateway_frame_errors_total", device="boiler", reason="oversized") == 1.0
    assert sample(metrics, "gateway_readings_received_total", device="boiler") == 2.0


async def test_unplug_makes_run_raise_and_exit_releases_the_fd(pty: Pty) -> None:
    fds_before = open_fds()
    link = SerialLink(device(pty.path), Collector(), Metrics())

    async with link:
        assert pty.path in open_fds().values()
        pty.unplug()
        with pytest.raises(TransientLinkError) as info:
            async with asyncio.timeout(WAIT):
                await link.run()
        assert info.value.kind == "unplugged"
        assert pty.path in str(info.value)
        assert not link.is_up
        with pytest.raises(LinkDownError):
            await link.write(b"x")

    # Only the test's own fds remain (its device fd now shows the pty as deleted).
    assert set(open_fds()) == set(fds_before) - pty.closed


async def test_cancelled_run_then_exit_closes_the_port_cleanly(pty: Pty) -> None:
    fds_before = open_fds()
    link = SerialLink(device(pty.path), Collector(), Metrics())
    async with link:  # must not raise CancelledError into a caller that was not cancelled
        run = asyncio.create_task(link.run())
        await asyncio.sleep(0)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    assert open_fds() == fds_before


async def test_supervised_link_stopped_releases_the_port(pty: Pty) -> None:
    fds_before = open_fds()
    metrics, collect, changed = Metrics(), Collector(), asyncio.Event()
    async with Supervisor(metrics, on_change=changed.set) as sup:
        sup.start(SerialLink(device(pty.path), collect, metrics))
        async with asyncio.timeout(WAIT):
            while sup.status["serial:boiler"].state != "up":
                changed.clear()
                await changed.wait()
        assert sample(metrics, "gateway_link_up", link="serial:boiler") == 1.0
        pty.send(b"temp=20\n")  # (pyserial flushes input on open: send only once it is up)
        await collect.get(1)

        await sup.stop("serial:boiler")

        assert open_fds() == fds_before
        assert sup.status["serial:boiler"].state == "stopped"
        assert sample(metrics, "gateway_link_up", link="serial:boiler") == 0.0


async def test_stopping_a_link_whose_writes_are_stuck_still_releases_the_port(pty: Pty) -> None:
    # The device never reads: the write cannot drain, so closing must give up (CLOSE_TIMEOUT)
    # and abort instead of keeping the fd open forever.
    fds_before = open_fds()
    metrics, changed = Metrics(), asyncio.Event()
    link = SerialLink(device(pty.path), Collector(), metrics)
    async with Supervisor(metrics, on_change=changed.set) as sup:
        sup.start(link)
        async with asyncio.timeout(WAIT):
            while sup.status["serial:boiler"].state != "up":
                changed.clear()
                await changed.wait()
        await link.write(b"x" * 1_000_000)  # far more than the pty buffers

        async with asyncio.timeout(CLOSE_TIMEOUT + WAIT):
            await sup.stop("serial:boiler")

        assert open_fds() == fds_before


async def test_exit_closes_the_fd(pty: Pty) -> None:
    fds_before = open_fds()
    for _ in range(3):  # reusable, and nothing accumulates across cycles
        link = SerialLink(device(pty.path), Collector(), Metrics())
        async with link:
            assert pty.path in open_fds().values()
        assert not link.is_up
        assert open_fds() == fds_before


async def test_missing_port_is_not_found(tmp_path: Path) -> None:
    fds_before = open_fds()
    link = SerialLink(device(str(tmp_path / "ttyUSB9")), Collector(), Metrics())
    with pytest.raises(TransientLinkError) as info:
        async with link:
            pass
    assert info.value.kind == "not_found"
    assert "plugged in" in str(info.value)  # advice for the user
    assert not link.is_up
    assert open_fds() == fds_before


async def test_second_opener_of_the_same_port_is_busy(pty: Pty) -> None:
    fds_before = open_fds()
    first = SerialLink(device(pty.path), Collector(), Metrics())
    second = SerialLink(device(pty.path, id="intruder"), Collector(), Metrics())

    async with first:
        with pytest.raises(TransientLinkError) as info:
            async with second:
                pass
        assert info.value.kind == "busy"
        assert "exclusive" in str(info.value)
        assert first.is_up

    async with second:  # the lock went with the first link's fd
        assert second.is_up
    assert open_fds() == fds_before


async def test_write_fails_while_down_and_reaches_the_device_while_up(pty: Pty) -> None:
    link = SerialLink(device(pty.path), Collector(), Metrics())
    with pytest.raises(LinkDownError):
        await link.write(b"PING\n")

    async with link:
        await link.write(b"SET pump=on\n")
        assert await pty.receive(12) == b"SET pump=on\n"

    with pytest.raises(LinkDownError):
        await link.write(b"PING\n")


async def test_run_outside_the_context_is_refused(pty: Pty) -> None:
    link = SerialLink(device(pty.path), Collector(), Metrics())
    with pytest.raises(RuntimeError, match="outside"):
        await link.run()
