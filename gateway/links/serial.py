"""A serial device link: owns one serial port (fd), frames and decodes what it reads.

The port is found (by path, or by USB identity / by-id name, looked up afresh at every open) and
opened in a worker thread of its own bounded pool (`hardware.py`: a USB-serial device can block
in open(), and must not hold up the default executor, name resolution included) under the
supervisor's timeout; if that timeout fires while the thread is still opening, the port is
closed as soon as the open returns, so no fd is ever orphaned. Reading is event driven: the
protocol's `data_received` feeds the frame pipeline synchronously and hands readings to the
outbox, which never blocks, so reading never waits on publishing. A polled device gets its
queries from a `Poller` task that lives inside `run()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import termios
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import serial
import serial_asyncio
from serial.serialposix import CMSPAR

from gateway.config import SerialDevice, SerialPortOptions, hex_bytes
from gateway.controls import accept_payload, from_specs
from gateway.errors import CommandRefusedError, FatalLinkError, LinkDownError, TransientLinkError
from gateway.limits import SERIAL_CLOSE_TIMEOUT as CLOSE_TIMEOUT
from gateway.limits import SERIAL_REPLUG_POLL as REPLUG_POLL
from gateway.limits import SERIAL_WRITE_HIGH_WATER as WRITE_HIGH_WATER
from gateway.limits import SERIAL_WRITE_LOW_WATER as WRITE_LOW_WATER
from gateway.linknames import link_name
from gateway.links.hardware import hardware_executor
from gateway.links.pipeline import FramePipeline
from gateway.links.polling import Poller
from gateway.links.serial_commands import render_command
from gateway.links.serial_ports import describe, details, list_ports, matching
from gateway.metrics import Metrics
from gateway.models import Submit
from gateway.throttle import LogThrottle

log = logging.getLogger(__name__)


def _lock_holders(path: str) -> str:
    """`pid 1234 (minicom)` for the processes holding an flock on `path`, from /proc/locks
    (pyserial's `exclusive` is an flock; best effort, empty if anything is unreadable)."""
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii") as locks:
            lines = locks.read().splitlines()
    except OSError:
        return ""
    # /proc/locks names a file as MAJOR:MINOR:INODE of the filesystem it is on (hex:hex:dec).
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == inode:
            pid = fields[4]
            try:
                with open(f"/proc/{pid}/comm", encoding="utf-8") as comm:
                    holders.append(f"pid {pid} ({comm.read().strip()})")
            except OSError:
                holders.append(f"pid {pid}")
    return ", ".join(dict.fromkeys(holders))


def translate_open_error(port: str, exc: BaseException) -> Exception:
    """pyserial/OS errors from opening a port -> the gateway's errors, with advice."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if isinstance(exc, ValueError):
        return FatalLinkError(f"invalid serial settings for {port}: {text}", kind="config")
    if isinstance(exc, termios.error):
        # tcsetattr outside pyserial's own checks (it is not an OSError): the driver refused
        # the settings as a whole; retrying the same ones cannot help.
        return FatalLinkError(
            f"{port} refuses these serial settings: {exc.args[-1] if exc.args else exc}",
            kind="config",
            advice="check baudrate, bytesize, parity and stopbits against what the port supports",
        )
    if code == errno.ENOENT or "No such file" in text:
        return TransientLinkError(
            f"{port} not found", kind="not_found", advice="is the device plugged in?"
        )
    if code in (errno.EACCES, errno.EPERM):
        return TransientLinkError(
            f"permission denied opening {port}",
            kind="permission",
            advice="add the gateway's user to the dialout group",
        )
    if "exclusively lock" in text or code in (errno.EBUSY, errno.EAGAIN):
        holders = _lock_holders(port)
        return TransientLinkError(
            f"{port} is in use by another program{f': {holders}' if holders else ''}",
            kind="busy",
            advice="stop the other program or set exclusive: false",
        )
    return TransientLinkError(f"cannot open {port}: {text}", kind="open")


def find_port(options: SerialPortOptions) -> tuple[str, str]:
    """(path to open, how it was found). Blocking (it may list the ports): call it in the
    opening thread. A match lists the ports again at every open, so a device that came back
    under a new tty name is found."""
    if options.match is None:
        assert options.port is not None  # the config requires port or match
        return options.port, ""
    try:
        ports = list_ports(options.match.by_id_dir)
    except OSError as exc:  # sysfs or the by-id directory unreadable
        raise TransientLinkError(f"cannot list serial ports: {exc}", kind="open") from exc
    found = matching(options.match, ports)
    if len(found) == 1:
        return found[0].device, f" (match {options.match_text}: {details(found[0])})"
    if not found:
        raise TransientLinkError(
            f"no serial port matches {options.match_text}",
            kind="not_found",
            advice="is the device plugged in? `gateway ports` lists the ports there are",
        )
    raise TransientLinkError(
        f"{len(found)} serial ports match {options.match_text}: "
        + ", ".join(describe(p) for p in found),
        kind="ambiguous",
        advice="add serial_number or by_id to the match",
    )


def check_parity(port: Any, path: str, parity: str) -> None:
    """Refuse a parity the port dropped. A pty, or an adapter without mark/space parity, may
    clear the bits it cannot do instead of failing, and the device would then see garbage;
    what the port reports back after the open is what it really does. Blocking: the opening
    thread calls it."""
    fd = getattr(port, "fd", None)  # an URL port (socket://, rfc2217://) has no termios
    if parity == "N" or not isinstance(fd, int):
        return
    try:
        cflag = termios.tcgetattr(fd)[2]
    except termios.error:
        return  # not a tty after all: pyserial's own errors say so at the next call
    if cflag & termios.PARENB and (parity not in "MS" or cflag & CMSPAR):
        return
    raise FatalLinkError(
        f"{path} does not support parity {parity}",
        kind="config",
        advice="set parity: N, or E/O if the device needs parity and the adapter cannot do "
        "mark/space (a pseudo-terminal can do none)",
    )


def _stat_key(path: str | os.PathLike[str], *, follow: bool) -> tuple[int, ...] | None:
    try:
        st = os.stat(path, follow_symlinks=follow)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_rdev, st.st_ctime_ns, st.st_mtime_ns)


def node_signature(options: SerialPortOptions) -> tuple[object, ...] | None:
    """What changes when the port's device comes back: the node (and the symlink to it: a new
    pty may reuse the number of the old one) for a `port`; for a `match`, the by-id directory
    and /dev, whose entries change when a device appears. None: not there."""
    if options.match is None:
        assert options.port is not None
        target = _stat_key(options.port, follow=True)
        return None if target is None else (target, _stat_key(options.port, follow=False))
    return (_stat_key(options.match.by_id_dir, follow=True), _stat_key("/dev", follow=True))


class _PortProtocol(asyncio.Protocol):
    """Bridges the serial transport's callbacks to the link."""

    def __init__(self, on_data: Callable[[bytes], None]) -> None:
        self.on_data = on_data
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        # Cleared while the transport holds more than its high-water mark of unwritten bytes.
        self.writable = asyncio.Event()
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        self.on_data(data)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.writable.set()  # writers waiting for room find the link down instead
        if not self.lost.done():
            self.lost.set_result(exc)


class SerialLink:
    def __init__(self, device: SerialDevice, submit: Submit, metrics: Metrics) -> None:
        self.device = device
        self.name = link_name(device)
        self.open_timeout = device.open_timeout
        self.backoff = device.backoff.policy()
        self._metrics = metrics
        self._pipeline = FramePipeline(device, submit, metrics, self.name)
        self._transport: serial_asyncio.SerialTransport | None = None
        self._protocol: _PortProtocol | None = None
        self._path = device.port or ""  # the tty opened last (a match resolves to one)
        self._up = asyncio.Event()
        self._throttle = LogThrottle(log)  # refused commands: once a minute per reason
        self._controls = from_specs(device.controls)  # Home Assistant's payloads -> the device's
        self._tried_node: tuple[object, ...] | None = None  # the port's node at the last open

    @property
    def is_up(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    @property
    def write_backlog(self) -> int:
        """Bytes written to the port that the device has not taken yet (0 while down)."""
        return 0 if self._transport is None else self._transport.get_write_buffer_size()

    async def wait_up(self) -> None:
        await self._up.wait()

    async def wait_replugged(self) -> None:
        """Return once the port's device node changed since the call began: it appeared, was
        recreated, or its symlink was repointed. The supervisor waits on it while backing off,
        so a replug is retried at once, not after a delay grown by earlier failures (or by a
        device replugged too often to stay up for `reset_after`). A cheap stat poll; a node
        that is there and unchanged since the last open began (a permission or lock problem)
        never wakes it."""
        before = self._tried_node
        while True:
            await asyncio.sleep(REPLUG_POLL)
            now = node_signature(self.device)
            if now is not None and now != before:
                return
            before = now

    def _find_port(self) -> tuple[str, str]:
        return find_port(self.device)

    def _open_port(self) -> tuple[Any, str, str]:
        d = self.device
        path, how = self._find_port()
        try:
            port = serial.serial_for_url(
                path,
                baudrate=d.baudrate,
                bytesize=d.bytesize,
                parity=d.parity,
                stopbits=d.stopbits,
                rtscts=d.rtscts,
                xonxoff=d.xonxoff,
                exclusive=d.exclusive or None,
            )
        except (serial.SerialException, OSError, ValueError, termios.error) as exc:
            raise translate_open_error(path, exc) from exc
        try:
            check_parity(port, path, d.parity)
        except FatalLinkError:
            port.close()
            raise
        return port, path, how

    async def __aenter__(self) -> Self:
        if self._transport is not None:
            raise RuntimeError(f"{self.name} is already open (links are not reentrant)")
        loop = asyncio.get_running_loop()
        # Before the open: a node that changes while it fails is a change to wake up for.
        self._tried_node = node_signature(self.device)
        opening = loop.run_in_executor(hardware_executor(), self._open_port)
        try:
            port, self._path, how = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # Our deadline passed while the thread still opens: close the port when it is open.
            opening.add_done_callback(_close_when_opened)
            raise
        self._pipeline.restart()
        self._protocol = _PortProtocol(self._on_data)
        try:
            # It sets the port non-blocking: one more tcsetattr, which a port may refuse.
            self._transport, _ = await serial_asyncio.connection_for_serial(
                loop, lambda: self._protocol, port
            )
        except (serial.SerialException, OSError, ValueError, termios.error) as exc:
            port.close()
            raise translate_open_error(self._path, exc) from exc
        self._transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        log.info("%s: opened %s%s at %d baud", self.name, self._path, how, self.device.baudrate)
        self._up.set()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._up.clear()
        transport, protocol = self._transport, self._protocol
        self._transport = self._protocol = None
        if transport is None or protocol is None:
            return
        transport.close()  # flushes pending writes, then closes the fd
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.shield(protocol.lost)
        except TimeoutError:
            # A device that does not drain its writes (flow control, dead UART): drop them,
            # so that pyserial's close does not block the event loop waiting for the drain.
            with contextlib.suppress(serial.SerialException, OSError, termios.error):
                transport.serial.reset_output_buffer()
            transport.abort()
            await asyncio.sleep(0)  # the transport closes the fd on the next loop iteration
        finally:
            if not protocol.lost.done():
                transport.abort()

    async def run(self) -> None:
        if self._protocol is None:
            raise RuntimeError("run() outside the link's context")
        lost = self._protocol.lost
        # Shielded: cancelling run() (stop, shutdown) must not cancel the shared future that
        # __aexit__ waits on for the port to be closed.
        if self.device.poll is None:
            exc = await asyncio.shield(lost)
        else:
            async with asyncio.TaskGroup() as tg:
                poller = tg.create_task(self._make_poller().run(), name=f"poll[{self.name}]")
                exc = await asyncio.shield(lost)
                poller.cancel()
        raise TransientLinkError(
            f"{self._path} went away: {exc or 'end of file'}",
            kind="unplugged",
            advice="reopening with backoff until it is back",
        ) from exc

    def _make_poller(self) -> Poller:
        spec = self.device.poll
        assert spec is not None
        query = (
            hex_bytes(spec.query_hex)
            if spec.query_hex is not None
            else (spec.query or "").encode(self.device.encoding)
        )
        return Poller(spec, query, self._write_query, self._pipeline, self._metrics)

    def _write_now(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise LinkDownError(f"{self.name} is not connected")
        self._transport.write(data)

    def _write_query(self, data: bytes) -> None:
        # A device that has not taken the last queries will not answer this one either: it is
        # not written (the poll counts as missed) rather than piled up behind them.
        if self._protocol is not None and not self._protocol.writable.is_set():
            log.debug("%s: %d bytes not taken yet; poll skipped", self.name, self.write_backlog)
            return
        self._write_now(data)

    async def write(self, data: bytes) -> None:
        """Write to the device (MQTT commands). Fails clearly while the port is down; while the
        port holds more than its high-water mark the write waits `write_timeout` for room, then
        is refused as busy (the transport's own flow control: pause/resume_writing)."""
        protocol = self._protocol
        if protocol is not None and not protocol.writable.is_set():
            try:
                async with asyncio.timeout(self.device.write_timeout):
                    while not protocol.writable.is_set():  # another waiter may fill it again
                        await protocol.writable.wait()
            except TimeoutError:
                message = (
                    f"busy: the device has not taken the {self.write_backlog} bytes written "
                    f"before within {self.device.write_timeout:g}s; try again later"
                )
                self._refused("busy", message)
                raise CommandRefusedError(message, reason="busy") from None
        self._write_now(data)

    async def execute(self, command: str, payload: bytes) -> None:
        """An MQTT command: the device's `commands` template filled with the payload (or the
        payload itself for `raw`, if the device takes it), checked before anything is written
        (`serial_commands.py`)."""
        try:
            payload = accept_payload(self._controls, command, payload)
            data = render_command(self.device, command, payload)
        except CommandRefusedError as exc:
            self._refused(exc.reason, str(exc))
            raise
        await self.write(data)

    def _refused(self, reason: str, message: str) -> None:
        self._metrics.refused.labels("serial", reason).inc()
        self._throttle.warning(reason, "%s: command refused: %s", self.name, message)

    def _on_data(self, data: bytes) -> None:
        # Called by the transport for every chunk read: the pipeline never raises.
        self._pipeline.feed(data, time.time())


def _close_when_opened(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        fut.result()[0].close()
