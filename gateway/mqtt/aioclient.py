"""aiomqtt underneath the session: the one module that touches aiomqtt's and paho's internals.

`aiomqtt.Client` connects, keeps the connection alive (paho's keepalive), delivers incoming
messages (`client.messages`) and subscribes. What the session needs beyond its public API is
here, in `GatewayClient`, and nowhere else:

- `publish_nowait()`: a PUBLISH that does not wait and returns paho's message id, so the session
  keeps its own window (`mqtt.inflight`) and its own acknowledgement tracking. paho's in-flight
  limit (20 by default, fixed once connected) is lifted: the window bounds what is in flight.
- The acknowledgements of one event-loop turn go to `on_acks` as one batch of
  `(message id, reason code)`; a reason code >= 0x80 (MQTT 5) is a refusal, not a delivery.
  (aiomqtt's own `publish()` drops the reason code and waits on an Event per message.)
- `publish_control()`: a publish whose acknowledgement is a Future, failed at once when the
  connection drops (aiomqtt's pending `publish()` calls would wait out their timeout instead).
- The broker's CONNACK `receive_maximum` and `maximum_packet_size` (MQTT 5), which aiomqtt does
  not keep.
- `abort()` for the ack watchdog, and a failed `__aenter__` that leaves no socket open.

Everything used here that is not aiomqtt's or paho's public API is listed in `INTERNALS`, and
`tests/test_mqtt_aioclient.py` fails loudly if a release moves any of it.

Make a new `GatewayClient` for every connection: a reused paho client resends its old
unacknowledged messages at the next CONNACK, behind the session's back.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, Literal, Self

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.limits import MQTT_READ_CHUNK
from gateway.mqtt.errors import ConnectionLostError, PacketTooLargeError

# [(message id, reason code)] of the reading publishes acknowledged in one loop turn.
AckHandler = Callable[[list[tuple[int, int]]], None]

MAX_PACKET_SIZE = 268_435_460  # MQTT's own limit: 1 + 4 + 268,435,455
MAX_RECEIVE = 65535  # what a broker that does not say takes unacknowledged

#: Attributes this module relies on that are not public API (checked by a test).
INTERNALS: dict[type, tuple[str, ...]] = {
    aiomqtt.Client: (
        "_client",  # the paho client underneath
        "_loop",
        "_on_publish",  # paho's on_publish, as aiomqtt registered it
        "_on_connect",
        "_on_disconnect",
        "_on_socket_open",
        "_on_socket_register_write",
        "_disconnected",  # the future `messages` and __aexit__ watch
    ),
    paho.Client: (
        "_sock_close",
        "_sockpairW",
        "_out_messages",
        "_out_message_mutex",
        "_in_packet",
        "_handle_pubackcomp",  # replaced per instance by _fast_acks
        "_sock_recv",  # replaced per instance by _BufferedReads
        "_do_on_publish",
    ),
}


# One shared "success, no properties" for every two-byte PUBACK/PUBCOMP (see _fast_acks).
_SUCCESS = ReasonCode(PacketTypes.PUBACK, identifier=0)
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]


def _fast_acks(client: paho.Client) -> None:
    """paho decodes every PUBACK into a new ReasonCode and a new Properties (whose constructor
    builds a table of every property name): at one acknowledgement per reading that was the
    largest single cost of the whole gateway. A two-byte PUBACK or PUBCOMP is "success, no
    properties" by the spec (3.1.1, and 5 when the reason code is omitted), so those take one
    shared pair; anything longer goes through paho's own decoder, unchanged."""
    original = client._handle_pubackcomp

    def handle(cmd: Literal["PUBACK", "PUBCOMP"]) -> MQTTErrorCode:
        packet = client._in_packet["packet"]
        if len(packet) != 2:
            return original(cmd)
        mid = (packet[0] << 8) | packet[1]
        with client._out_message_mutex:
            if mid in client._out_messages:
                return client._do_on_publish(mid, _SUCCESS, _NO_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    client._handle_pubackcomp = handle  # type: ignore[method-assign]


class _BufferedReads:
    """paho reads a packet a byte or two at a time (`_sock_recv(1)` for the type, each length
    byte, then the rest): a PUBACK cost three recv() system calls and a fourth that found the
    socket empty. This reads up to MQTT_READ_CHUNK at once and hands paho its bytes from the
    buffer; `pending` says whether bytes are left (the reader must call paho again then: the
    socket will not wake it for bytes it already read)."""

    def __init__(self, client: paho.Client) -> None:
        self._recv = client._sock_recv
        self._data = b""
        self._pos = 0
        client._sock_recv = self  # type: ignore[method-assign]

    def __call__(self, bufsize: int) -> bytes:
        data, pos = self._data, self._pos
        if pos >= len(data):
            data = self._recv(MQTT_READ_CHUNK)  # BlockingIOError when empty, b"" when closed
            if not data:
                return data
            self._data, pos = data, 0
        end = pos + bufsize
        self._pos = end
        return data[pos:end]

    @property
    def pending(self) -> bool:
        return self._pos < len(self._data)


def _retrieved(future: asyncio.Future[Any]) -> None:
    """A control publish nobody awaits any more must not log 'exception never retrieved'."""
    if not future.cancelled():
        future.exception()


class GatewayClient(aiomqtt.Client):
    """`aiomqtt.Client` plus what the session needs (see the module docstring)."""

    def __init__(
        self,
        hostname: str,
        port: int,
        *,
        on_acks: AckHandler,
        connect_timeout: float,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("max_inflight_messages", 0)  # 0 = no limit: our window is the limit
        super().__init__(hostname, port, **kwargs)
        # aiomqtt warns on every call once more than this many are pending: our controls run
        # beside hundreds of readings in flight, and the warning alone cost ~14 us a message.
        self.pending_calls_threshold = 2**31
        # paho's own TCP/TLS connect runs in a thread; bound it inside the session's deadline.
        self._client.connect_timeout = connect_timeout
        # paho logs every packet at DEBUG through aiomqtt's logger: two calls per message for
        # lines nobody reads (connection errors reach the session as exceptions instead).
        self._client.disable_logger()
        _fast_acks(self._client)
        self._acks_per_read()
        self.on_acks = on_acks
        self.receive_maximum = MAX_RECEIVE
        self.maximum_packet_size = MAX_PACKET_SIZE
        self.session_present = False  # CONNACK: the broker resumed a session it kept for us
        self.disconnect_reason: int | None = None  # MQTT 5: the broker's DISCONNECT reason code
        self._readings: set[int] = set()  # ids whose acknowledgement goes to on_acks
        self._controls: dict[int, asyncio.Future[int]] = {}  # ids someone awaits
        self._acks: list[tuple[int, int]] = []
        self._flush_scheduled = False
        self._abandoned = False  # __aenter__ failed: a late socket from the thread is closed
        self._loop_thread = threading.get_ident()
        self._write_scheduled = False
        self._reading = False  # inside paho's loop_read: acks go out at its end
        self._burst = False  # inside `burst()`: the write waits for its end
        self._burst_wrote = False  # a publish in the burst asked for a write
        self._lost: BaseException | None = None

    # -- connecting --------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        try:
            await super().__aenter__()
        except BaseException:  # refused, timed out or cancelled: no socket may stay open
            self._abandon()
            raise
        # paho writes a byte into a socket pair on every publish to wake a select() loop we do
        # not run; nobody reads it. Closing it saves a system call per message.
        pair = self._client._sockpairW
        if pair is not None:
            pair.close()
            self._client._sockpairW = None
        return self

    def _abandon(self) -> None:
        self._abandoned = True
        if self._client.socket() is not None:
            self._client._sock_close()  # (aiomqtt's socket-close hook removes the reader)
        self._fail_controls(ConnectionLostError("the connection attempt was given up"))

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # Called from the connect thread; if the attempt was given up meanwhile, close the
        # socket instead of registering it with the loop.
        if self._abandoned:
            with contextlib.suppress(OSError):
                sock.close()
            return
        super()._on_socket_open(client, userdata, sock)

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if self._abandoned:
            return
        if threading.get_ident() != self._loop_thread:  # the connect thread: aiomqtt's way
            super()._on_socket_register_write(client, userdata, sock)
            return
        # On the loop (every publish burst): write what this loop turn queued at the end of
        # the turn. aiomqtt's way registers a writer through its thread-safe path (a self-pipe
        # wakeup), then epoll reports the socket writable and the writer is removed again: two
        # epoll_ctl calls, a wakeup and a poll per burst for a socket that is nearly always
        # writable. The writer is registered only when the socket is really full.
        if self._burst:
            self._burst_wrote = True
        elif not self._write_scheduled:
            self._write_scheduled = True
            self._loop.call_soon(self._write_soon)

    @contextlib.contextmanager
    def burst(self) -> Iterator[None]:
        """Publishes in this block are written together at its end, in this loop turn (the
        publisher's fill: one turn less per message than a write at the end of the turn)."""
        self._burst = True
        try:
            yield
        finally:
            self._burst = False
            if self._burst_wrote:
                self._burst_wrote = False
                self._write_soon()

    def _write_soon(self) -> None:
        self._write_scheduled = False
        self._write_ready()
        sock = self._client.socket()
        if sock is not None and self._client.want_write():  # the socket is full: wait for it
            self._loop.add_writer(sock.fileno(), self._write_ready)

    def _write_ready(self) -> None:
        try:
            self._client.loop_write()
        except Exception as exc:  # a broken socket: the connection is gone (as aiomqtt does)
            if not self._disconnected.done():
                self._disconnected.set_exception(exc)

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        if properties is not None:  # MQTT 5: the broker's limits (absent = MQTT's own)
            self.receive_maximum = getattr(properties, "ReceiveMaximum", MAX_RECEIVE)
            self.maximum_packet_size = getattr(properties, "MaximumPacketSize", MAX_PACKET_SIZE)
        self.session_present = bool(flags.session_present)
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        text = str(reason_code) if reason_code else "closed"
        if flags.is_disconnect_packet_from_server and isinstance(reason_code, ReasonCode):
            # The broker's own reason (MQTT 5), not paho's stand-in for a closed socket.
            self.disconnect_reason = int(reason_code.value)
        self._fail_controls(ConnectionLostError(f"connection lost: {text}"))
        super()._on_disconnect(client, userdata, flags, reason_code, properties)

    # -- publishing --------------------------------------------------------------------------
    def publish_nowait(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        *,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> int:
        """Queue a PUBLISH; returns its message id. Its acknowledgement (for QoS 0: the moment
        it was written) goes to `on_acks`. Raises PacketTooLargeError over the broker's
        maximum packet size, ConnectionLostError when the connection is gone."""
        mid = self._publish(topic, payload, qos, retain, properties)
        self._readings.add(mid)
        return mid

    def publish_control(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        *,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> asyncio.Future[int]:
        """Queue a PUBLISH; the Future resolves with its reason code when acknowledged (QoS 0:
        when written) and fails with ConnectionLostError as soon as the connection drops."""
        future: asyncio.Future[int] = self._loop.create_future()
        future.add_done_callback(_retrieved)
        if self._lost is not None:
            future.set_exception(ConnectionLostError(f"connection lost: {self._lost}"))
            return future
        mid = self._publish(topic, payload, qos, retain, properties)
        self._controls[mid] = future
        return future

    def _publish(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        properties: Properties | None,
    ) -> int:
        # Fixed header (at most 5) + topic (2 + n) + packet id + properties: an upper bound.
        size = (
            9 + len(topic.encode()) + len(payload) + (len(properties.pack()) if properties else 1)  # type: ignore[no-untyped-call]
        )
        if size > self.maximum_packet_size:
            raise PacketTooLargeError(
                f"a {size}-byte message to {topic} is over the broker's maximum packet size "
                f"({self.maximum_packet_size})"
            )
        info = self._client.publish(topic, payload, qos, retain, properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise ConnectionLostError(f"cannot publish: {paho.error_string(info.rc)}")
        return info.mid

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        code = reason_code.value if isinstance(reason_code, ReasonCode) else int(reason_code)
        if mid in self._readings:
            self._readings.discard(mid)
            self._acks.append((mid, code))
            if self._reading:  # all acks of this read as one batch, at its end
                return
            if not self._flush_scheduled:  # (QoS 0, acknowledged when written): the turn's
                self._flush_scheduled = True
                self._loop.call_soon(self._flush_acks)
            return
        future = self._controls.pop(mid, None)
        if future is None:
            super()._on_publish(client, userdata, mid, reason_code, properties)
        elif not future.done():
            future.set_result(code)

    def _acks_per_read(self) -> None:
        """The acknowledgements paho decodes in one read go to `on_acks` at its end, in the
        same loop turn (not in the next: a loop turn per acknowledgement saved); the socket is
        read a chunk at a time (`_BufferedReads`)."""
        read = self._client.loop_read
        buffered = _BufferedReads(self._client)

        def loop_read(max_packets: int = 1) -> MQTTErrorCode:
            self._reading = True
            try:
                rc = read(max_packets)
                while buffered.pending and rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    rc = read(max_packets)  # (paho stops after max_packets packets)
                return rc
            finally:
                self._reading = False
                if self._acks:
                    self._flush_acks()

        self._client.loop_read = loop_read  # type: ignore[method-assign]

    def _flush_acks(self) -> None:
        self._flush_scheduled = False
        acks, self._acks = self._acks, []
        # Not once the connection is gone: the session may already be on a new connection
        # whose message ids start again at 1. (Those records went back to the outbox and are
        # sent again: a duplicate, never a loss.)
        if acks and self._lost is None:
            self.on_acks(acks)

    def _fail_controls(self, error: ConnectionLostError) -> None:
        self._lost = error
        controls, self._controls = self._controls, {}
        for future in controls.values():
            if not future.done():
                future.set_exception(error)

    # -- state and closing -------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self._client.is_connected() and not self._disconnected.done()

    def abort(self) -> None:
        """Drop the connection now, without a goodbye (a half-open connection, a frozen broker):
        paho reads EOF, closes the socket, and `messages` raises. Idempotent."""
        self._fail_controls(ConnectionLostError("connection aborted"))
        sock = self._client.socket()
        if isinstance(sock, socket.socket):  # (an SSLSocket too)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._client.socket() is not None and not self._disconnected.done():
            self._client._sock_close()
            self._disconnected.set_exception(ConnectionLostError("connection aborted"))
            self._disconnected.exception()  # retrieved: nobody may be watching any more
