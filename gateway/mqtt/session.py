"""The MQTT session link: owns one broker connection (client.MqttConnection).

Entering connects (TLS and credentials from config, a last will `offline` on the status topic)
and restores the session's state (`restore_state`: status `online`, command subscriptions,
retained device availability, and any hooks added later such as Home Assistant discovery).
`run()` then runs, in one TaskGroup:

- the publisher: takes records from the durable outbox and keeps up to `mqtt.inflight` of them
  unacknowledged at once; a record leaves the outbox only when the broker acknowledged it
  (PUBACK at QoS 1, PUBCOMP at QoS 2), never because a client library queued it;
- the keepalive: pings a quiet line and fails the session when the broker says nothing for
  1.5 x `mqtt.keepalive` (a frozen broker, a black-holed path);
- the ack watchdog: a publish unacknowledged for `mqtt.publish_timeout` means a half-open
  connection: the session fails and is re-entered (records in flight go back to the outbox);
- the command runner: incoming commands, at most MAX_CONCURRENT_COMMANDS at once;
- the availability publisher: retained `<prefix>/<device>/availability` on every change.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self

from gateway.commands import Command, CommandRouter, parse_topic, result_topic
from gateway.config import MqttSection, default_client_id
from gateway.errors import TransientLinkError
from gateway.metrics import Metrics
from gateway.mqtt import wire
from gateway.mqtt.client import (
    BrokerSilentError,
    ConnectRefusedError,
    MqttConnection,
    MqttError,
    RefusedError,
    ssl_context,
)
from gateway.mqtt.outbox import Outbox, Record
from gateway.mqtt.topics import availability_topic, status_topic

log = logging.getLogger(__name__)

ANNOUNCE_TIMEOUT = 2.0  # seconds for the `offline` announcement on a clean shutdown
MAX_CONCURRENT_COMMANDS = 8  # more wait in the queue; commands are rare and short
QOS2_WINDOW_3_1_1 = 20  # unacknowledged QoS 2 publishes at once over MQTT 3.1.1 (see below)
MAX_QUEUED_COMMANDS = 100  # beyond this a command is answered `error: busy` at once

ConnectHook = Callable[[MqttConnection], Awaitable[None]]


def translate(exc: BaseException, what: str) -> TransientLinkError:
    """Connection errors -> the gateway's, with advice where we can give one."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ConnectRefusedError) and exc.auth:
        return TransientLinkError(
            f"{what}: {text}", kind="auth", advice="check mqtt.username and the password"
        )
    if isinstance(exc, ssl.SSLError) or "certificate" in text.lower():
        return TransientLinkError(
            f"{what}: {text}", kind="tls", advice="check mqtt.tls (CA, client certificate, key)"
        )
    if isinstance(exc, TimeoutError | BrokerSilentError):
        return TransientLinkError(f"{what}: {text}", kind="timeout")
    if isinstance(exc, ConnectionRefusedError):
        return TransientLinkError(
            f"{what}: {text}", kind="refused", advice="is the broker running at mqtt.host:port?"
        )
    return TransientLinkError(f"{what}: {text}", kind="mqtt")


class Availability:
    """Per-device `online`/`offline`, published retained by whichever session is connected."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.changed = asyncio.Event()

    def set(self, device: str, online: bool) -> None:
        state = "online" if online else "offline"
        if self.states.get(device) != state:
            self.states[device] = state
            self.changed.set()

    def forget(self, device: str) -> None:
        self.states.pop(device, None)


def tls_context(cfg: MqttSection) -> ssl.SSLContext | None:
    tls = cfg.tls
    if tls is None:
        return None
    if tls.insecure:
        log.warning(
            "mqtt.tls.insecure is set: the broker's certificate and host name are NOT checked; "
            "anyone on the path can read and change the gateway's traffic"
        )
    try:
        return ssl_context(
            str(tls.ca_file) if tls.ca_file else None,
            str(tls.cert_file) if tls.cert_file else None,
            str(tls.key_file) if tls.key_file else None,
            insecure=tls.insecure,
        )
    except (OSError, ssl.SSLError) as exc:
        raise TransientLinkError(
            f"cannot load the TLS files: {exc}",
            kind="tls",
            advice="check mqtt.tls (CA, client certificate, key)",
        ) from exc


class MqttSession:
    name = "mqtt"

    def __init__(
        self,
        cfg: MqttSection,
        gateway_id: str,
        outbox: Outbox,
        metrics: Metrics,
        *,
        router: CommandRouter | None = None,
        availability: Availability | None = None,
    ) -> None:
        self.cfg = cfg
        self.open_timeout = cfg.connect_timeout + 1.0  # __aenter__ applies connect_timeout
        self.backoff = cfg.backoff.policy()
        self.client_id = cfg.client_id or default_client_id(gateway_id)
        self.status_topic = status_topic(cfg.topic_prefix, gateway_id)
        self.connect_hooks: list[ConnectHook] = []  # e.g. Home Assistant discovery
        self._v5 = cfg.protocol == "5"
        self._outbox = outbox
        self._metrics = metrics
        self._router = router
        self._availability = availability or Availability()
        self._conn: MqttConnection | None = None
        self._by_id: dict[int, tuple[Record, float]] = {}  # in flight: id -> (record, sent)
        self._window = cfg.inflight  # (lowered by the broker's receive maximum in run())
        self._window_open = asyncio.Event()
        self._published: dict[str, Any] = {}  # device -> its readings_published counter
        self._commands: asyncio.Queue[tuple[wire.Message, Command]] = asyncio.Queue(
            MAX_QUEUED_COMMANDS
        )
        self.connected = asyncio.Event()
        # Shutdown shortens this to what is left of gateway.shutdown_timeout.
        self.announce_timeout = ANNOUNCE_TIMEOUT

    # -- connect / disconnect ----------------------------------------------------------------
    async def __aenter__(self) -> Self:
        if self._conn is not None:
            raise RuntimeError("the MQTT session is already connected (not reentrant)")
        cfg = self.cfg
        connect = wire.connect_packet(
            self.client_id,
            keepalive=cfg.keepalive,
            v5=self._v5,
            username=cfg.username,
            password=cfg.password.get_secret_value() if cfg.password else None,
            will=wire.Will(self.status_topic, b"offline", qos=1, retain=True),
        )
        context = tls_context(cfg)
        try:
            async with asyncio.timeout(cfg.connect_timeout):
                conn = await MqttConnection.open(
                    cfg.host,
                    cfg.port,
                    connect,
                    keepalive=cfg.keepalive,
                    v5=self._v5,
                    on_acks=self._on_acks,
                    on_message=self._on_message,
                    ssl_context=context,
                )
        except (MqttError, OSError, TimeoutError) as exc:
            raise translate(exc, f"cannot connect to {cfg.host}:{cfg.port}") from exc
        self._conn = conn
        try:
            await self.restore_state(conn)
        except BaseException:
            await self._close(announce=False)
            raise
        log.info("mqtt: connected to %s:%d as %s", cfg.host, cfg.port, self.client_id)
        self.connected.set()
        return self

    async def restore_state(self, conn: MqttConnection) -> None:
        """Everything a fresh connection needs, in one place: status, command subscriptions,
        retained availability of every device, then the hooks (discovery plugs in here)."""
        cfg = self.cfg
        try:
            async with asyncio.timeout(cfg.publish_timeout):
                await conn.publish_and_wait(self.status_topic, b"online", 1, retain=True)
                if cfg.commands and self._router is not None:
                    await conn.subscribe(f"{cfg.topic_prefix}/+/{cfg.command_verb}/+", 1)
            await self._publish_availability(conn, dict(self._availability.states))
            for hook in self.connect_hooks:
                await hook(conn)
        except (MqttError, TimeoutError) as exc:
            raise translate(exc, "restoring session state") from exc

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # On a clean stop (cancellation) say `offline` ourselves: the broker only sends the will
        # when the connection breaks, not on a clean disconnect.
        await self._close(announce=exc is None or isinstance(exc, asyncio.CancelledError))

    async def _close(self, *, announce: bool) -> None:
        self.connected.clear()
        conn, self._conn = self._conn, None
        self._give_back_inflight()
        if conn is None:
            return
        try:
            async with asyncio.timeout(self.announce_timeout):
                if announce and not conn.is_closed:
                    await conn.publish_and_wait(self.status_topic, b"offline", 1, retain=True)
                await conn.disconnect()
        except (MqttError, TimeoutError) as exc:
            log.debug("mqtt: unclean disconnect: %s", exc)
        finally:
            conn.abort()  # no-op after a clean disconnect

    def _give_back_inflight(self) -> None:
        """Records in flight go back to the outbox. An acknowledgement that still arrives for
        one of them finds no entry in `_by_id` and is ignored."""
        if self._by_id:
            log.info("mqtt: %d unacknowledged reading(s) go back to the outbox", len(self._by_id))
            self._outbox.requeue(record for record, _ in self._by_id.values())
            self._by_id.clear()
        self._window_open.set()

    # -- acknowledgements --------------------------------------------------------------------
    def _on_acks(self, acks: list[tuple[int, int]]) -> None:
        """The acknowledgements that arrived in one read, handled as one batch: the outbox
        forgets the records, the counters move once per device."""
        by_id = self._by_id
        records = []
        for packet_id, code in acks:
            entry = by_id.pop(packet_id, None)
            if entry is None:
                continue
            if code >= 0x80:
                self._refused(entry[0], code)
            else:
                records.append(entry[0])
        self._acknowledged(records)
        conn = self._conn
        if conn is not None and self._outbox.on_ready is not None:
            self._fill_soon(conn)  # the window has room again: no need to wait a loop turn

    def _acknowledged(self, records: list[Record]) -> None:
        self._outbox.ack_many(records)
        now, observe = time.time(), self._metrics.publish_latency.observe
        counts: dict[str, int] = {}
        for record in records:
            counts[record.device] = counts.get(record.device, 0) + 1
            observe(max(0.0, now - record.ts))
        for device, count in counts.items():
            counter = self._published.get(device)
            if counter is None:  # labels() costs more than the increment: look it up once
                counter = self._published[device] = self._metrics.readings_published.labels(device)
            counter.inc(count)
        self._window_open.set()

    def _refused(self, record: Record, code: int) -> None:
        """MQTT 5: the broker refused the reading (e.g. not authorized): retrying cannot help;
        it leaves the outbox like a delivered one, counted as dropped."""
        log.warning("mqtt: broker refused %s: %s", record.topic, wire.reason_text(code, v5=True))
        self._outbox.ack(record)
        self._metrics.readings_dropped.labels(record.device, "refused").inc()

    # -- run ---------------------------------------------------------------------------------
    async def run(self) -> None:
        conn = self._conn
        if conn is None:
            raise RuntimeError("run() outside the session's context")
        window = min(self.cfg.inflight, conn.receive_maximum)
        if self.cfg.qos == 2 and not self._v5:
            # MQTT 3.1.1 cannot tell us the broker's limit, and mosquitto answers a QoS 2
            # publish beyond its max_inflight_messages (default 20) with a PUBREC that looks
            # like success, then drops the message.
            window = min(window, QOS2_WINDOW_3_1_1)
        self._window = window
        self._outbox.on_ready = lambda: self._fill_soon(conn)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._watch(conn), name="mqtt-watch")
                tg.create_task(conn.keepalive(), name="mqtt-keepalive")
                tg.create_task(self._publish_loop(conn), name="mqtt-publish")
                tg.create_task(self._ack_watchdog(), name="mqtt-ack-watchdog")
                tg.create_task(self._command_loop(conn, tg), name="mqtt-commands")
                tg.create_task(self._availability_loop(conn), name="mqtt-availability")
        except* MqttError as group:
            first = group.exceptions[0]
            raise translate(first, "connection lost") from first
        finally:
            self._outbox.on_ready = None

    @staticmethod
    async def _watch(conn: MqttConnection) -> None:
        """Raises as soon as the connection is gone, whatever the other tasks are doing."""
        await conn.wait_closed()
        raise MqttError("connection closed")

    async def _publish_loop(self, conn: MqttConnection) -> None:
        """Keeps the window full: publishes whenever there is room and records are ready.
        Most publishes happen synchronously instead, in `_fill_soon` (right after the commit
        that made records ready, and right after acknowledgements opened the window); this
        loop covers the rest (the backlog after a reconnect, a socket that was full)."""
        window = self._window
        while True:
            while len(self._by_id) >= window:
                self._window_open.clear()
                await self._window_open.wait()
            await conn.wait_writable()
            await self._outbox.wait_ready()
            self._fill_window(conn)

    def _fill_window(self, conn: MqttConnection) -> None:
        """Publish ready records while the window has room; raises MqttError if the connection
        is gone (what was taken goes back to the outbox first)."""
        by_id = self._by_id
        batch = self._outbox.take_nowait(self._window - len(by_id))
        now = time.monotonic()
        best_effort = []
        for i, record in enumerate(batch):
            try:
                packet_id = conn.publish(record.topic, record.payload, record.qos)
            except RefusedError as exc:  # over the broker's maximum packet size
                log.warning("mqtt: %s; reading dropped", exc)
                self._metrics.readings_dropped.labels(record.device, "too_large").inc()
                self._outbox.ack(record)
                continue
            except MqttError:
                self._outbox.requeue(batch[i:])
                raise
            if packet_id:
                by_id[packet_id] = (record, now)
            else:  # QoS 0: best effort, done once written
                best_effort.append(record)
        if best_effort:
            self._acknowledged(best_effort)

    def _fill_soon(self, conn: MqttConnection) -> None:
        """`_fill_window` from a callback (the outbox's commit, the connection's read): never
        raises into its caller; a dead connection is the watcher's to report."""
        if conn.is_closed or not conn.writable or len(self._by_id) >= self._window:
            return
        try:
            self._fill_window(conn)
        except MqttError as exc:
            log.debug("mqtt: publishing right away failed: %s", exc)

    async def _ack_watchdog(self) -> None:
        """A publish that waits longer than publish_timeout means the connection is dead even if
        TCP has not noticed (a frozen broker, a black-holed path)."""
        timeout = self.cfg.publish_timeout
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            if self._by_id:
                oldest = min(sent for _, sent in self._by_id.values())
                if time.monotonic() - oldest > timeout:
                    raise BrokerSilentError(
                        f"no acknowledgement for {timeout:g}s: connection presumed dead"
                    )

    # -- commands ----------------------------------------------------------------------------
    def _on_message(self, message: wire.Message) -> None:
        """From the connection, for every incoming message: queue commands, ignore the rest."""
        parsed = parse_topic(message.topic, self.cfg.topic_prefix, self.cfg.command_verb)
        if parsed is None or self._router is None:
            return
        command = Command(parsed[0], parsed[1], message.payload)
        try:
            self._commands.put_nowait((message, command))
        except asyncio.QueueFull:
            log.warning("mqtt: %d commands waiting; %s refused", MAX_QUEUED_COMMANDS, message.topic)
            self._metrics.commands.labels(command.device, "error").inc()
            self._reply_soon(message, "error: busy, too many commands waiting")

    async def _command_loop(self, conn: MqttConnection, tg: asyncio.TaskGroup) -> None:
        slots = asyncio.Semaphore(MAX_CONCURRENT_COMMANDS)
        while True:
            message, command = await self._commands.get()
            await slots.acquire()
            tg.create_task(self._run_command(conn, message, command, slots), name="mqtt-cmd")

    async def _run_command(
        self,
        conn: MqttConnection,
        message: wire.Message,
        command: Command,
        slots: asyncio.Semaphore,
    ) -> None:
        try:
            assert self._router is not None
            reply = await self._router.handle(command)
            self._metrics.commands.labels(command.device, "ok" if reply == "ok" else "error").inc()
            topic, props = self._reply_address(message)
            async with asyncio.timeout(self.cfg.publish_timeout):
                await conn.publish_and_wait(topic, reply.encode(), 1, properties=props)
        finally:
            slots.release()

    @staticmethod
    def _reply_address(message: wire.Message) -> tuple[str, dict[int, Any]]:
        """`<command topic>/result`, or (MQTT 5) where the requester asked, with its
        correlation data."""
        response_topic = message.properties.get(wire.RESPONSE_TOPIC)
        if not response_topic:
            return result_topic(message.topic), {}
        props: dict[int, Any] = {}
        if correlation := message.properties.get(wire.CORRELATION_DATA):
            props[wire.CORRELATION_DATA] = correlation
        return response_topic, props

    def _reply_soon(self, message: wire.Message, reply: str) -> None:
        conn = self._conn
        if conn is not None and not conn.is_closed:
            topic, props = self._reply_address(message)
            conn.publish(topic, reply.encode(), 0, properties=props)

    # -- availability ------------------------------------------------------------------------
    async def _availability_loop(self, conn: MqttConnection) -> None:
        published = dict(self._availability.states)
        while True:
            await self._availability.changed.wait()
            self._availability.changed.clear()
            current = dict(self._availability.states)
            changes = {d: s for d, s in current.items() if published.get(d) != s}
            await self._publish_availability(conn, changes)
            published = current

    async def _publish_availability(self, conn: MqttConnection, states: dict[str, str]) -> None:
        async with asyncio.timeout(self.cfg.publish_timeout):
            for device, state in states.items():
                await conn.publish_and_wait(
                    availability_topic(self.cfg.topic_prefix, device),
                    state.encode(),
                    1,
                    retain=True,
                )
