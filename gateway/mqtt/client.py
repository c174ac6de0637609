"""One MQTT connection to a broker, as an asyncio protocol: the session's transport.

Why our own and not aiomqtt/paho: the session publishes thousands of readings a second through a
window of unacknowledged publishes. paho reads each packet with three `recv` calls, builds a
Properties and a ReasonCode object per PUBACK and sends each PUBLISH with its own `send`; at QoS 1
that capped the whole gateway near 7,000 readings/s. Here publishes made in one event-loop
iteration go out in one write, and the acknowledgements in one read are cut apart in one pass
(wire.PacketReader). The codec is pure and lives in wire.py; this module owns the socket.

What the connection does on its own: the CONNECT/CONNACK handshake, acknowledgements of incoming
messages, PUBREL for QoS 2, and keepalive (`keepalive()`, run by the session: PINGREQ when the
line is quiet, and the connection is declared dead when the broker says nothing for 1.5 x the
keepalive). Everything else (what to publish, retries, the window) is the session's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any

from gateway.mqtt import wire
from gateway.mqtt.wire import Message

log = logging.getLogger(__name__)

# The acknowledgements of fire-and-forget publishes that arrived in one read:
# [(packet id, reason code)], reason >= 0x80 a refusal (MQTT 5).
AckHandler = Callable[[list[tuple[int, int]]], None]
MessageHandler = Callable[[Message], None]


class MqttError(Exception):
    """Base of the connection's errors (the session turns them into TransientLinkError)."""


class ConnectRefusedError(MqttError):
    def __init__(self, code: int, *, v5: bool) -> None:
        super().__init__(f"broker refused the connection: {wire.reason_text(code, v5=v5)}")
        self.code = code
        self.v5 = v5

    @property
    def auth(self) -> bool:
        return self.code in ((0x86, 0x87) if self.v5 else (4, 5))


class ConnectionClosedError(MqttError):
    """The connection is gone (or going): lost, closed by the broker, or closed by us."""


class BrokerSilentError(ConnectionClosedError):
    """Nothing from the broker for 1.5 x keepalive: a frozen broker or a black-holed path."""


class RefusedError(MqttError):
    """The broker refused one request (a SUBSCRIBE, or an acknowledgement with a failure code)."""


class MqttConnection(asyncio.Protocol):
    """Create with `open()`; it returns once the broker accepted the CONNECT."""

    def __init__(self, *, v5: bool, on_acks: AckHandler, on_message: MessageHandler) -> None:
        self.v5 = v5
        self.on_acks = on_acks
        self.on_message = on_message
        self.receive_maximum = 65535  # publishes the broker takes unacknowledged (MQTT 5)
        self.maximum_packet_size = wire.MAX_REMAINING
        self.keepalive_interval = 0.0
        self.last_in = self.last_out = time.monotonic()
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._reader = wire.PacketReader()
        self._connack: asyncio.Future[wire.Connack] = self._loop.create_future()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._closing = False
        # Outstanding packet ids: None = a publish whose acknowledgement goes to on_ack; a
        # Future = someone awaits it (control publishes, SUBSCRIBE).
        self._pending: dict[int, asyncio.Future[Any] | None] = {}
        self._next_id = 0
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._ping_sent = 0.0  # when the unanswered PINGREQ went out; 0 = none
        self._props = b"\x00" if v5 else b""  # "no properties", encoded once

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        connect: bytes,
        *,
        keepalive: float,
        v5: bool,
        on_acks: AckHandler,
        on_message: MessageHandler,
        ssl_context: ssl.SSLContext | None = None,
    ) -> MqttConnection:
        """Connect and wait for CONNACK. The caller bounds it with asyncio.timeout()."""
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            lambda: cls(v5=v5, on_acks=on_acks, on_message=on_message),
            host,
            port,
            ssl=ssl_context,
            server_hostname=host if ssl_context is not None else None,
        )
        try:
            conn.keepalive_interval = keepalive
            conn._send(connect)
            conn._accept(await conn._connack)
        except BaseException:
            conn.abort()
            raise
        return conn

    def _accept(self, connack: wire.Connack) -> None:
        if connack.code >= (0x80 if self.v5 else 1):
            raise ConnectRefusedError(connack.code, v5=self.v5)
        props = connack.properties
        self.receive_maximum = props.get(wire.RECEIVE_MAXIMUM, 65535)
        self.maximum_packet_size = props.get(wire.MAXIMUM_PACKET_SIZE, wire.MAX_REMAINING)
        if wire.SERVER_KEEP_ALIVE in props:  # MQTT 5: the broker may impose its own
            self.keepalive_interval = props[wire.SERVER_KEEP_ALIVE]

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closing and exc is None:
            error: ConnectionClosedError = ConnectionClosedError("connection closed")
        else:
            error = ConnectionClosedError(f"connection lost: {exc or 'closed by the broker'}")
        self._fail(error)

    def eof_received(self) -> bool:
        return False  # the broker hung up: close our side too

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def data_received(self, data: bytes) -> None:
        self.last_in = time.monotonic()
        self._ping_sent = 0.0  # anything from the broker proves it alive
        acks: list[tuple[int, int]] = []
        try:
            for kind, flags, body in self._reader.feed(data):
                if kind == wire.PUBACK and len(body) == 2:  # the hot path: one per reading
                    self._complete((body[0] << 8) | body[1], 0, acks)
                else:
                    self._dispatch(kind, flags, body, acks)
        except wire.MalformedPacketError as exc:
            log.warning("mqtt: malformed packet from the broker: %s", exc)
            self._fail(ConnectionClosedError(f"malformed packet from the broker: {exc}"))
        finally:
            if acks:  # (those before a malformed packet were real)
                self.on_acks(acks)

    def _dispatch(self, kind: int, flags: int, body: bytes, acks: list[tuple[int, int]]) -> None:
        if kind in (wire.PUBACK, wire.PUBCOMP):
            self._complete(*wire.parse_ack(body), acks)
        elif kind == wire.PUBREC:
            packet_id, code = wire.parse_ack(body)
            if code >= 0x80:
                self._complete(packet_id, code, acks)
            else:
                self._send(wire.ack_packet(wire.PUBREL, packet_id))
        elif kind == wire.PUBLISH:
            self._received(wire.parse_publish(flags, body, v5=self.v5))
        elif kind == wire.PUBREL:
            self._send(wire.ack_packet(wire.PUBCOMP, wire.parse_ack(body)[0]))
        elif kind == wire.SUBACK:
            packet_id, codes = wire.parse_suback(body, v5=self.v5)
            self._complete(packet_id, codes, acks)
        elif kind == wire.CONNACK:
            if not self._connack.done():
                self._connack.set_result(wire.parse_connack(body, v5=self.v5))
        elif kind == wire.DISCONNECT:
            code, reason = wire.parse_disconnect(body, v5=self.v5)
            text = wire.reason_text(code, v5=True) + (f": {reason}" if reason else "")
            self._fail(ConnectionClosedError(f"the broker disconnected us: {text}"))
        elif kind != wire.PINGRESP:
            raise wire.MalformedPacketError(f"unexpected packet type {kind}")

    def _received(self, message: Message) -> None:
        try:
            self.on_message(message)
        except Exception:  # the handler's bug must not take the connection down
            log.exception("mqtt: handling a message on %s failed", message.topic)
        if message.qos == 1:
            self._send(wire.ack_packet(wire.PUBACK, message.packet_id))
        elif message.qos == 2:
            self._send(wire.ack_packet(wire.PUBREC, message.packet_id))

    def _complete(self, packet_id: int, result: Any, acks: list[tuple[int, int]]) -> None:
        if packet_id not in self._pending:
            return  # a stale acknowledgement (e.g. of a publish we already gave up)
        waiter = self._pending.pop(packet_id)
        if waiter is None:
            acks.append((packet_id, result))
        elif not waiter.done():
            waiter.set_result(result)

    def _fail(self, error: ConnectionClosedError) -> None:
        if not self._connack.done():
            self._connack.set_exception(error)
            self._connack.exception()  # retrieved: open() may be gone already
        for waiter in self._pending.values():
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)
        if not self._closed.done():
            self._closed.set_exception(error)
            self._closed.exception()  # retrieved: not every owner waits on it
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()

    # -- sending -----------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        """Queue bytes; everything queued in one loop iteration leaves in one write."""
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(out))
            self.last_out = time.monotonic()

    def _packet_id(self, waiter: asyncio.Future[Any] | None) -> int:
        if len(self._pending) >= 65535:
            raise MqttError("all 65535 packet ids are in use")
        packet_id = self._next_id
        while True:
            packet_id = packet_id % 65535 + 1
            if packet_id not in self._pending:
                break
        self._next_id = packet_id
        self._pending[packet_id] = waiter
        return packet_id

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        *,
        retain: bool = False,
        properties: Mapping[int, Any] | None = None,
    ) -> int:
        """Queue a PUBLISH; its acknowledgement goes to on_acks. Returns the packet id (0 at
        QoS 0, which is done once written)."""
        self._check_open()
        packet_id = self._packet_id(None) if qos else 0
        self._send(self._publish_bytes(topic, payload, qos, packet_id, retain, properties))
        return packet_id

    def _publish_bytes(  # noqa: PLR0917 (internal, called in two places)
        self,
        topic: str,
        payload: bytes,
        qos: int,
        packet_id: int,
        retain: bool,
        properties: Mapping[int, Any] | None,
    ) -> bytes:
        props = wire.encode_properties(properties) if self.v5 and properties else self._props
        data = wire.publish_packet(
            topic.encode(), payload, qos, packet_id, retain=retain, properties=props
        )
        if len(data) > self.maximum_packet_size:
            if packet_id:
                del self._pending[packet_id]
            raise RefusedError(
                f"a {len(data)}-byte message to {topic} is over the broker's maximum packet "
                f"size ({self.maximum_packet_size})"
            )
        return data

    async def publish_and_wait(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        *,
        retain: bool = False,
        properties: Mapping[int, Any] | None = None,
    ) -> None:
        """Publish and wait for its acknowledgement (control messages, not readings)."""
        self._check_open()
        if not qos:
            self._send(self._publish_bytes(topic, payload, 0, 0, retain, properties))
            return
        waiter: asyncio.Future[int] = self._loop.create_future()
        packet_id = self._packet_id(waiter)
        self._send(self._publish_bytes(topic, payload, qos, packet_id, retain, properties))
        try:
            code = await waiter
        finally:
            self._pending.pop(packet_id, None)
        if code >= 0x80:
            raise RefusedError(f"publish to {topic} refused: {wire.reason_text(code, v5=True)}")

    async def subscribe(self, topic: str, qos: int) -> int:
        """Subscribe and return the granted QoS; a refusal raises RefusedError."""
        self._check_open()
        waiter: asyncio.Future[list[int]] = self._loop.create_future()
        packet_id = self._packet_id(waiter)
        self._send(wire.subscribe_packet(packet_id, [(topic, qos)], v5=self.v5))
        try:
            codes = await waiter
        finally:
            self._pending.pop(packet_id, None)
        if not codes or codes[0] >= 0x80:
            code = codes[0] if codes else 0x80
            raise RefusedError(f"subscription to {topic} refused (code {code:#04x})")
        return codes[0]

    @property
    def writable(self) -> bool:
        """False while the socket's buffer is over its high-water mark (flow control)."""
        return self._writable.is_set()

    async def wait_writable(self) -> None:
        """While the socket's buffer is over its high-water mark, wait (flow control)."""
        await self._writable.wait()

    def _check_open(self) -> None:
        if self._closed.done() or self._closing:
            raise ConnectionClosedError("the connection is closed")

    # -- keepalive ---------------------------------------------------------------------------
    async def keepalive(self) -> None:
        """Ping when the line is quiet; raise BrokerSilentError when the broker stops talking.
        Runs until cancelled (the session's TaskGroup owns it)."""
        interval = self.keepalive_interval
        if interval <= 0:
            await asyncio.Future()  # keepalive off: nothing to do until cancelled
        while True:
            now = time.monotonic()
            silent_for = now - self.last_in
            if silent_for >= 1.5 * interval:
                raise BrokerSilentError(
                    f"nothing from the broker for {silent_for:.1f}s (keepalive {interval:g}s): "
                    "connection presumed dead"
                )
            if not self._ping_sent and (
                silent_for >= interval / 2 or now - self.last_out >= 0.75 * interval
            ):
                self._ping_sent = now
                self._send(wire.PINGREQ_PACKET)
            wake = self.last_in + 1.5 * interval
            if not self._ping_sent:
                wake = min(wake, self.last_in + interval / 2, self.last_out + 0.75 * interval)
            await asyncio.sleep(max(0.01, wake - time.monotonic()))

    # -- closing -----------------------------------------------------------------------------
    async def disconnect(self) -> None:
        """Send DISCONNECT and close; waits for the socket to close (bound it by the caller)."""
        if self._transport is None or self._transport.is_closing():
            return
        self._send(wire.DISCONNECT_PACKET)
        self._flush()
        self._closing = True
        self._transport.close()
        with contextlib.suppress(ConnectionClosedError):
            await self.wait_closed()

    def abort(self) -> None:
        """Drop the connection now, without a goodbye. Idempotent."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()
        self._fail(ConnectionClosedError("connection aborted"))

    async def wait_closed(self) -> None:
        """Wait until the connection is gone; raises the ConnectionClosedError saying why.
        (Shielded: a cancelled waiter must not cancel the connection's own future.)"""
        await asyncio.shield(self._closed)

    @property
    def is_closed(self) -> bool:
        return self._closed.done()

    @property
    def outstanding(self) -> int:
        return len(self._pending)


def ssl_context(
    ca_file: str | None, cert_file: str | None, key_file: str | None, *, insecure: bool
) -> ssl.SSLContext:
    """TLS settings -> a client context (the system's CAs unless a CA file is given)."""
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
