"""A serial device link: owns one serial port (fd), frames and decodes what it reads.

The port is opened in a worker thread (a USB-serial device can block in open()) under the
supervisor's timeout; if that timeout fires while the thread is still opening, the port is closed
as soon as the open returns, so no fd is ever orphaned. Reading is event driven: the protocol's
`data_received` feeds the framer and decoder synchronously and hands readings to the queue, which
never blocks, so reading never waits on publishing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import termios
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import serial
import serial_asyncio

from gateway.config import SerialDevice
from gateway.decoders import make_decoder, to_readings
from gateway.errors import DecodeError, FatalLinkError, LinkDownError, TransientLinkError
from gateway.framing import LineFramer
from gateway.metrics import Metrics
from gateway.models import Reading

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 2.0  # seconds to flush pending writes on close before aborting


def translate_open_error(port: str, exc: BaseException) -> Exception:
    """pyserial/OS errors from opening a port -> the gateway's errors, with advice."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if isinstance(exc, ValueError):
        return FatalLinkError(f"invalid serial settings for {port}: {text}", kind="config")
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
        return TransientLinkError(
            f"{port} is in use by another program",
            kind="busy",
            advice="stop the other program or set exclusive: false",
        )
    return TransientLinkError(f"cannot open {port}: {text}", kind="open")


class _PortProtocol(asyncio.Protocol):
    """Bridges the serial transport's callbacks to the link."""

    def __init__(self, on_data: Callable[[bytes], None]) -> None:
        self.on_data = on_data
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.on_data(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


class SerialLink:
    def __init__(
        self, device: SerialDevice, submit: Callable[[Reading], None], metrics: Metrics
    ) -> None:
        self.device = device
        self.name = f"serial:{device.id}"
        self.open_timeout = device.open_timeout
        self.backoff = device.backoff.policy()
        self._submit = submit
        self._metrics = metrics
        self._decode = make_decoder(device)
        self._framer: LineFramer | None = None
        self._transport: serial_asyncio.SerialTransport | None = None
        self._protocol: _PortProtocol | None = None
        self._received = metrics.readings_received.labels(device.id)

    @property
    def is_up(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def _open_port(self) -> Any:
        d = self.device
        return serial.serial_for_url(
            d.port,
            baudrate=d.baudrate,
            bytesize=d.bytesize,
            parity=d.parity,
            stopbits=d.stopbits,
            exclusive=d.exclusive or None,
        )

    async def __aenter__(self) -> Self:
        if self._transport is not None:
            raise RuntimeError(f"{self.name} is already open (links are not reentrant)")
        loop = asyncio.get_running_loop()
        opening = loop.run_in_executor(None, self._open_port)
        try:
            port = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # Our deadline passed while the thread still opens: close the port when it is open.
            opening.add_done_callback(_close_when_opened)
            raise
        except (serial.SerialException, OSError, ValueError) as exc:
            raise translate_open_error(self.device.port, exc) from exc
        self._framer = LineFramer(
            self.device.terminator.encode(self.device.encoding), self.device.max_line
        )
        self._protocol = _PortProtocol(self._on_data)
        self._transport, _ = await serial_asyncio.connection_for_serial(
            loop, lambda: self._protocol, port
        )
        log.info("%s: opened %s at %d baud", self.name, self.device.port, self.device.baudrate)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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
        # Shielded: cancelling run() (stop, shutdown) must not cancel the shared future that
        # __aexit__ waits on for the port to be closed.
        exc = await asyncio.shield(self._protocol.lost)
        raise TransientLinkError(
            f"{self.device.port} went away: {exc or 'end of file'}",
            kind="unplugged",
            advice="reopening with backoff until it is back",
        ) from exc

    async def write(self, data: bytes) -> None:
        """Write to the device (MQTT commands). Fails clearly while the port is down."""
        if self._transport is None or self._transport.is_closing():
            raise LinkDownError(f"{self.name} is not connected")
        self._transport.write(data)

    def _on_data(self, data: bytes) -> None:
        # Called by the transport for every chunk read: must never raise.
        framer = self._framer
        assert framer is not None
        before = framer.oversized
        ts = time.time()
        for frame in framer.feed(data):
            self._on_frame(frame, ts)
        if framer.oversized != before:
            self._frame_error("oversized", framer.oversized - before, "frame longer than max_line")

    def _on_frame(self, frame: bytes, ts: float) -> None:
        d = self.device
        try:
            readings = to_readings(d.id, self._decode(frame), d.sensors, ts)
        except DecodeError as exc:
            self._frame_error("decode", 1, f"{exc}; frame {frame[:60]!r}")
            return
        except Exception:  # a decoder bug must not kill the link: count, log, skip
            log.exception("%s: decoder crashed on %r", self.name, frame[:60])
            self._frame_error("decoder_bug", 1, "decoder crashed")
            return
        self._received.inc(len(readings))
        for reading in readings:
            self._submit(reading)

    def _frame_error(self, reason: str, count: int, detail: str) -> None:
        self._metrics.frame_errors.labels(self.device.id, reason).inc(count)
        log.debug("%s: skipped %d frame(s) (%s): %s", self.name, count, reason, detail)


def _close_when_opened(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        fut.result().close()
