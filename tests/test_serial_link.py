"""SerialLink on a real pseudo-terminal through pyserial-asyncio: the test plays the device on
the controller side, the link opens the device side by its path (or finds it by a by-id name)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import SerialPair
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import SerialDevice
from gateway.errors import (
    CommandRefusedError,
    FatalLinkError,
    GatewayError,
    LinkDownError,
    TransientLinkError,
)
from gateway.limits import SERIAL_CLOSE_TIMEOUT as CLOSE_TIMEOUT
from gateway.limits import SERIAL_WRITE_HIGH_WATER as WRITE_HIGH_WATER
from gateway.links.pipeline import FramePipeline
from gateway.links.serial import SerialLink
from gateway.metrics import Metrics
from gateway.models import Reading, Value
from gateway.simdevices import (
    METER_DECODER,
    METER_FORMAT,
    METER_FRAMING,
    METER_QUERY,
    GpsReceiver,
    Meter,
    meter_frame,
)
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
        os.set_blocking(self.controller, False)  # a blocking read would stall the link too
        data = b""
        try:
            async with asyncio.timeout(WAIT):
                while len(data) < size:
                    await readable.wait()
                    readable.clear()
                    with contextlib.suppress(BlockingIOError):  # readiness seen twice
                        data += os.read(self.controller, size - len(data))
        finally:
            loop.remove_reader(self.controller)
            os.set_blocking(self.controller, True)
        return data

    async def drain(self) -> None:
        """Read and discard what the link writes, until cancelled."""
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(self.controller, readable.set)
        os.set_blocking(self.controller, False)
        try:
            while True:
                await readable.wait()
                readable.clear()
                with contextlib.suppress(BlockingIOError):
                    os.read(self.controller, 65536)
        finally:
            loop.remove_reader(self.controller)
            os.set_blocking(self.controller, True)

    async def send_all(self, data: bytes) -> None:
        """Send more than the pty buffers, without blocking the event loop the link reads in."""
        loop = asyncio.get_running_loop()
        writable = asyncio.Event()
        loop.add_writer(self.controller, writable.set)
        os.set_blocking(self.controller, False)
        view = memoryview(data)
        try:
            async with asyncio.timeout(WAIT):
                while view:
                    await writable.wait()
                    writable.clear()
                    with contextlib.suppress(BlockingIOError):
                        view = view[os.write(self.controller, view) :]
        finally:
            loop.remove_writer(self.controller)
            os.set_blocking(self.controller, True)


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

    def __call__(self, readings: Sequence[Reading]) -> None:
        for reading in readings:
            self.queue.put_nowait(reading)

    async def get(self, count: int) -> list[Reading]:
        async with asyncio.timeout(WAIT):
            return [await self.queue.get() for _ in range(count)]

    async def get_until(self, last: Callable[[Reading], bool]) -> list[Reading]:
        """Readings up to and including the first for which `last` is true."""
        got: list[Reading] = []
        async with asyncio.timeout(WAIT):
            while not got or not last(got[-1]):
                got.append(await self.queue.get())
        return got


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


def new_fds(before: dict[int, str]) -> dict[int, str]:
    """The fds opened since `before` (or reused for something else). Fds that were closed
    meanwhile do not count: an earlier test's socket may be garbage-collected at any moment."""
    return {fd: path for fd, path in open_fds().items() if before.get(fd) != path}


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
    assert set(new_fds(fds_before)) <= {pty.device}


async def test_cancelled_run_then_exit_closes_the_port_cleanly(pty: Pty) -> None:
    fds_before = open_fds()
    link = SerialLink(device(pty.path), Collector(), Metrics())
    async with link:  # must not raise CancelledError into a caller that was not cancelled
        run = asyncio.create_task(link.run())
        await asyncio.sleep(0)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    assert new_fds(fds_before) == {}


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

        assert new_fds(fds_before) == {}
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

        assert new_fds(fds_before) == {}


async def test_exit_closes_the_fd(pty: Pty) -> None:
    fds_before = open_fds()
    for _ in range(3):  # reusable, and nothing accumulates across cycles
        link = SerialLink(device(pty.path), Collector(), Metrics())
        async with link:
            assert pty.path in open_fds().values()
        assert not link.is_up
        assert new_fds(fds_before) == {}


async def test_missing_port_is_not_found(tmp_path: Path) -> None:
    fds_before = open_fds()
    link = SerialLink(device(str(tmp_path / "ttyUSB9")), Collector(), Metrics())
    with pytest.raises(TransientLinkError) as info:
        async with link:
            pass
    assert info.value.kind == "not_found"
    assert "plugged in" in str(info.value)  # advice for the user
    assert not link.is_up
    assert new_fds(fds_before) == {}


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
    assert new_fds(fds_before) == {}


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


# -- binary framing, decoders, polling -----------------------------------------------------------

METER = {"framing": METER_FRAMING, "decoder": METER_DECODER, "sensors": {}}


def values(readings: list[Reading]) -> dict[str, tuple[Value | None, str | None]]:
    return {r.sensor: (r.value, r.unit) for r in readings}


async def test_binary_meter_frames_through_garbage(pty: Pty) -> None:
    metrics, collect = Metrics(), Collector()
    answer = meter_frame(struct.pack(METER_FORMAT, 0x81, 2301, 415, 12345, 955))
    async with SerialLink(device(pty.path, **METER), collect, metrics) as link:
        run = asyncio.create_task(link.run())
        damaged = answer[:5] + b"\x00" + answer[6:]
        pty.send(b"\x13\x37" + answer[:7])
        pty.send(answer[7:] + damaged + answer)
        first, second = await collect.get(4), await collect.get(4)
        assert not run.done()
        run.cancel()
    assert (
        values(first)
        == values(second)
        == {
            "voltage": (230.1, "V"),
            "current": (4.15, "A"),
            "energy": (12345, "Wh"),
            "power": (955, "W"),
        }
    )
    errors = {
        reason: sample(metrics, "gateway_frame_errors_total", device="boiler", reason=reason)
        for reason in ("resync", "checksum")
    }
    assert errors == {"resync": 1.0, "checksum": 1.0}


async def test_nmea_gps_on_a_line_device(pty: Pty) -> None:
    collect = Collector()
    async with SerialLink(device(pty.path, decoder="nmea", sensors={}), collect, Metrics()):
        pty.send(GpsReceiver()(random.Random(1), 0))
        gga, rmc = await collect.get(6), await collect.get(4)
    assert set(values(gga)) == {"fix_quality", "satellites", "lat", "lon", "hdop", "alt"}
    assert values(rmc)["speed"][1] == "m/s"
    lat, unit = values(rmc)["lat"]
    assert unit == "°"
    assert lat == pytest.approx(48.1173, abs=0.001)


class PlayedMeter:
    """Plays the simulator's meter on the test's end of the pty: answers polls, misses some."""

    def __init__(self, pty: Pty, miss_every: int) -> None:
        self.pty = pty
        self.meter = Meter(miss_every=miss_every)
        self.rng = random.Random(7)

    def __enter__(self) -> Meter:
        asyncio.get_running_loop().add_reader(self.pty.controller, self._answer)
        return self.meter

    def __exit__(self, *exc: object) -> None:
        asyncio.get_running_loop().remove_reader(self.pty.controller)

    def _answer(self) -> None:
        for frame in self.meter.receive(os.read(self.pty.controller, 4096), self.rng):
            self.pty.send(frame)


async def test_polled_meter_missed_responses_are_counted_and_asked_again(
    pty: Pty, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    metrics, collect = Metrics(), Collector()
    poll = {"query_hex": METER_QUERY.hex(" "), "interval": 0.05, "timeout": 0.03}
    link = SerialLink(device(pty.path, **METER, poll=poll), collect, metrics)
    with PlayedMeter(pty, miss_every=3) as meter:
        async with link:
            run = asyncio.create_task(link.run())
            answers = [values(await collect.get(4)) for _ in range(4)]
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run
    assert all(set(a) == {"voltage", "current", "energy", "power"} for a in answers)
    assert answers[0]["voltage"][1] == "V"
    polls = sample(metrics, "gateway_polls_total", device="boiler")
    missed = sample(metrics, "gateway_polls_missed_total", device="boiler")
    assert meter.requests == polls >= 5  # the third request went unanswered, then asked again
    assert missed == meter.requests // 3
    assert "no response to the poll within 0.03s" in caplog.text
    assert "responding again after 1 missed poll(s)" in caplog.text


async def test_text_query_is_written_as_is(pty: Pty) -> None:
    poll = {"query": "READ?\r\n", "interval": 0.05, "timeout": 0.05}
    link = SerialLink(device(pty.path, poll=poll), Collector(), Metrics())
    async with link:
        run = asyncio.create_task(link.run())
        assert await pty.receive(14) == b"READ?\r\nREAD?\r\n"
        run.cancel()


async def test_random_bytes_never_stop_the_link(pty: Pty) -> None:
    metrics, collect = Metrics(), Collector()
    noise = random.Random(3).randbytes(20_000)
    async with SerialLink(device(pty.path, **METER), collect, metrics) as link:
        run = asyncio.create_task(link.run())
        await pty.send_all(noise)
        pty.send(meter_frame(struct.pack(METER_FORMAT, 0x81, 2300, 0, 1, 0)))
        readings = await collect.get_until(lambda r: r.sensor == "voltage" and r.value == 230.0)
        assert readings
        assert not run.done()
        run.cancel()
    errors = metrics.registry.get_sample_value(
        "gateway_frame_errors_total", {"device": "boiler", "reason": "resync"}
    )
    assert errors is not None
    assert errors > 0


async def test_binary_command_is_written_without_a_terminator(pty: Pty) -> None:
    meter = device(pty.path, **METER, raw_commands=True)
    async with SerialLink(meter, Collector(), Metrics()) as link:
        await link.execute("raw", METER_QUERY)
        assert await pty.receive(len(METER_QUERY)) == METER_QUERY


# -- commands: what an MQTT payload may write ---------------------------------------------------


async def test_raw_is_refused_unless_the_device_opts_in(pty: Pty) -> None:
    metrics = Metrics()
    async with SerialLink(device(pty.path), Collector(), metrics) as link:
        with pytest.raises(GatewayError, match="raw_commands: true"):
            await link.execute("raw", b"RESET_FACTORY")
    assert sample(metrics, "gateway_input_refused_total", edge="serial", reason="raw_off") == 1
    async with SerialLink(device(pty.path, raw_commands=True), Collector(), metrics) as link:
        await link.execute("raw", b"PING")
        assert await pty.receive(5) == b"PING\n"  # the refused one never reached the port


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"21\nRESET_FACTORY", "terminator"),  # two commands in one
        (b"21\rX", "control"),
        (b"21\x00", "control"),
        (b"21\x1b[2J", "control"),
        (b"\xff\xfe", "encoding"),
    ],
)
async def test_a_payload_that_would_write_more_than_its_command_is_refused(
    pty: Pty, payload: bytes, reason: str
) -> None:
    metrics = Metrics()
    commands = {"setpoint": "SP {payload}"}
    async with SerialLink(device(pty.path, commands=commands), Collector(), metrics) as link:
        with pytest.raises(GatewayError) as info:
            await link.execute("setpoint", payload)
        assert str(info.value).startswith("payload refused: ")
        await link.execute("setpoint", b"21")
        assert await pty.receive(6) == b"SP 21\n"  # and nothing of the refused payload before
    assert sample(metrics, "gateway_input_refused_total", edge="serial", reason=reason) == 1


async def test_a_template_that_takes_bytes_writes_any_byte(pty: Pty) -> None:
    commands = {"blob": {"template": "B{payload}", "payload": "bytes"}, "sp": "SP {payload}"}
    async with SerialLink(device(pty.path, commands=commands), Collector(), Metrics()) as link:
        await link.execute("blob", b"\x00\xff\x1b")
        assert await pty.receive(5) == b"B\x00\xff\x1b\n"
        await link.execute("sp", "21,5 °C".encode())  # text in the device's encoding
        assert await pty.receive(12) == "SP 21,5 °C\n".encode()


async def test_a_device_that_does_not_read_makes_commands_busy_not_a_growing_buffer(
    pty: Pty,
) -> None:
    # The device never reads: before the fix every command was `ok` and the transport's buffer
    # grew by its size (RSS 80 -> 327 MB under a flood).
    metrics, block = Metrics(), b"x" * 4000
    link = SerialLink(device(pty.path, raw_commands=True), Collector(), metrics)
    async with link:
        refused = None
        for _ in range(300):  # 1.2 MB, far more than the pty and the high-water mark hold
            try:
                await link.execute("raw", block)
            except CommandRefusedError as exc:
                refused = exc
                break
        assert refused is not None, f"300 commands taken, {link.write_backlog} bytes waiting"
        assert str(refused).startswith("busy: ")
        assert link.write_backlog <= WRITE_HIGH_WATER + len(block) + 1
        assert sample(metrics, "gateway_input_refused_total", edge="serial", reason="busy") == 1

        draining = asyncio.create_task(pty.drain())  # the device reads again: commands go on
        await link.execute("raw", b"PING")
        draining.cancel()


async def test_polls_to_a_device_that_does_not_read_do_not_pile_up(pty: Pty) -> None:
    query = "Q" * 1000 + "\n"
    poll = {"query": query, "interval": 0.005, "timeout": 0.001}
    link = SerialLink(device(pty.path, poll=poll), Collector(), Metrics())
    async with link:
        run = asyncio.create_task(link.run())
        await asyncio.sleep(1.0)  # ~200 polls, 200 KB: far more than the pty holds
        assert link.write_backlog <= WRITE_HIGH_WATER + len(query)
        assert not run.done()
        run.cancel()


async def test_flow_control_settings_reach_the_port(pty: Pty) -> None:
    link = SerialLink(device(pty.path, rtscts=True, xonxoff=True), Collector(), Metrics())
    async with link:
        [fd] = [fd for fd, path in open_fds().items() if path == pty.path and fd != pty.device]
        iflag, _, cflag = termios.tcgetattr(fd)[:3]
    assert cflag & termios.CRTSCTS
    assert iflag & termios.IXON
    assert iflag & termios.IXOFF


async def test_a_parity_the_port_refuses_is_a_config_failure_not_a_crash(
    serial_pair: SerialPair, caplog: pytest.LogCaptureFixture
) -> None:
    # socat's ptys refuse parity bits as some USB adapters refuse mark/space: termios says
    # EINVAL, which before the fix escaped as `termios.error` and the supervisor called it a bug.
    fds_before = open_fds()
    link = SerialLink(device(serial_pair.dev, parity="E"), Collector(), Metrics())
    with pytest.raises(FatalLinkError) as info:
        async with link:
            pass
    assert info.value.kind == "config"
    assert "parity E" in str(info.value)
    assert "parity: N" in str(info.value)  # the advice
    assert not link.is_up
    assert new_fds(fds_before) == {}

    metrics, changed = Metrics(), asyncio.Event()
    async with Supervisor(metrics, on_change=changed.set) as sup:
        sup.start(SerialLink(device(serial_pair.dev, parity="S"), Collector(), metrics))
        async with asyncio.timeout(WAIT):
            while sup.status["serial:boiler"].state != "failed":
                changed.clear()
                await changed.wait()
    assert "crashed" not in caplog.text


# -- identity --------------------------------------------------------------------------------


@pytest.fixture
def second_pty() -> Iterator[Pty]:
    controller, device_fd = os.openpty()
    p = Pty(controller, device_fd, os.ttyname(device_fd))
    yield p
    for fd in (controller, device_fd):
        if fd not in p.closed:
            os.close(fd)


def repoint(link: Path, target: str) -> None:
    """Replace a symlink atomically, as udev does when the device comes back."""
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target)
    tmp.replace(link)


async def test_matched_device_is_found_again_under_a_new_tty(
    pty: Pty, second_pty: Pty, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    name = by_id / "usb-Acme_Meter_42-if00-port0"
    name.symlink_to(pty.path)
    config = {"port": None, "match": {"by_id": "usb-Acme_*_42-*", "by_id_dir": str(by_id)}}
    collect = Collector()
    link = SerialLink(device("", **config), collect, Metrics())

    async with link:
        found = "(match by_id=usb-Acme_*_42-*: usb-Acme_Meter_42-if00-port0)"
        assert f"opened {pty.path} {found} at 9600 baud" in caplog.text
        pty.unplug()
        with pytest.raises(TransientLinkError, match=f"{pty.path} went away"):
            await link.run()
    repoint(name, second_pty.path)  # replugged: ttyUSB1 now
    async with link:
        assert second_pty.path in open_fds().values()
        assert pty.path not in open_fds().values()
        second_pty.send(b"temp=19.5\n")
        [reading] = await collect.get(1)
    assert reading.value == 19.5


async def test_no_match_and_two_matches_are_clear_errors(
    pty: Pty, second_pty: Pty, tmp_path: Path
) -> None:
    match = {"by_id": "usb-Acme_*", "by_id_dir": str(tmp_path)}
    link = SerialLink(device("", port=None, match=match), Collector(), Metrics())
    with pytest.raises(TransientLinkError) as info:
        async with link:
            pass
    assert info.value.kind == "not_found"
    assert "no serial port matches by_id=usb-Acme_*" in str(info.value)
    assert "`gateway ports`" in str(info.value)

    (tmp_path / "usb-Acme_A").symlink_to(pty.path)
    (tmp_path / "usb-Acme_B").symlink_to(second_pty.path)
    with pytest.raises(TransientLinkError) as info:
        async with link:
            pass
    assert info.value.kind == "ambiguous"
    assert "2 serial ports match" in str(info.value)
    assert "serial_number" in str(info.value)  # the advice


# -- the pipeline on random input ---------------------------------------------------------------

PIPELINE_DEVICES = [
    {},
    {"decoder": "json"},
    {"decoder": "nmea"},
    {"decoder": {"type": "csv", "columns": ["a", "b"]}, "terminator": "\r\n"},
    {
        "decoder": {"type": "regex", "pattern": "(?P<x>[0-9]+)"},
        "framing": {"type": "delimiter", "delimiter": "00"},
    },
    METER,
    {**METER, "framing": {"type": "fixed", "length": 13, "start": "aa", "checksum": "sum"}},
    {
        "framing": {"type": "fixed", "length": 4},
        "decoder": {"type": "struct", "format": "<i", "fields": ["n"]},
    },
]


@settings(max_examples=100, deadline=None)
@given(
    config=st.sampled_from(PIPELINE_DEVICES),
    chunks=st.lists(
        st.binary(max_size=64) | st.sampled_from([METER_QUERY, b"temp=1\n"]), max_size=20
    ),
)
def test_random_bytes_never_raise_out_of_the_pipeline(
    config: dict[str, Any], chunks: list[bytes]
) -> None:
    readings: list[Reading] = []
    pipeline = FramePipeline(device("/dev/null", **config), readings.extend, Metrics())
    for chunk in chunks:
        pipeline.feed(chunk, 1.0)
    for reading in readings:
        assert isinstance(reading.value, bool | int | float | str)


class HangingOpen(SerialLink):
    """A device whose open() blocks in the driver until `release` is set (a wedged USB
    adapter); the port lookup and the rest of the link are real."""

    release = threading.Event()

    def _open_port(self) -> tuple[Any, str, str]:
        self.release.wait(30)
        return super()._open_port()


async def test_hanging_opens_never_hold_up_name_resolution(pty: Pty) -> None:
    """Opens run on their own bounded pool: more wedged devices than the default thread pool
    has workers leave the broker's getaddrinfo (default pool) free."""
    links = [
        HangingOpen(device(pty.path, exclusive=False), Collector(), Metrics()) for _ in range(12)
    ]
    try:
        for link in links:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.01), link:  # the supervisor's open timeout
                    pass
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(5):  # before the fix: never, every worker is wedged
            assert await loop.getaddrinfo("localhost", 1883)
    finally:
        HangingOpen.release.set()


async def test_waiting_for_a_replug_wakes_on_a_changed_node_only(
    pty: Pty, second_pty: Pty, tmp_path: Path
) -> None:
    path = tmp_path / "ttyReplug"
    link = SerialLink(device(str(path)), Collector(), Metrics())
    with pytest.raises(TransientLinkError):
        async with link:  # not there yet
            pass
    waiting = asyncio.create_task(link.wait_replugged())
    path.symlink_to(pty.path)  # plugged in
    async with asyncio.timeout(WAIT):
        await waiting

    async with link:
        pass
    waiting = asyncio.create_task(link.wait_replugged())
    await asyncio.sleep(0.3)  # there and unchanged (a lock, a permission): no retry storm
    assert not waiting.done()
    repoint(path, second_pty.path)  # replugged as another tty
    async with asyncio.timeout(WAIT):
        await waiting
