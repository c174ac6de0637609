"""The MQTT session link: owns one aiomqtt client (one broker connection).

Entering connects (TLS and credentials from config, a last will `offline` on the status topic)
and restores the session's state (`restore_state`: status `online`, command subscriptions,
retained device availability, and any hooks added later such as Home Assistant discovery).
`run()` then runs, in one TaskGroup:

- the publisher: takes records from the durable outbox and keeps up to `mqtt.inflight` of them
  unacknowledged at once; a record leaves the outbox only when the broker acknowledged it
  (PUBACK at QoS 1), never because the client library queued it;
- the watcher: iterates incoming messages (commands), which is also what notices a dropped
  connection while nothing is being published;
- the ack watchdog: a publish unacknowledged for `mqtt.publish_timeout` means a half-open
  connection: the session fails and is re-entered (records in flight go back to the outbox);
- the availability publisher: retained `<prefix>/<device>/availability` on every change.

Publishing goes straight to paho's `publish` with our own window and acknowledgement tracking:
aiomqtt's awaited `publish` adds an Event, a `wait_for` and a scan of every pending call to each
message, which at thousands of readings a second costs more than the rest of the pipeline.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self, cast

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.commands import Command, CommandRouter, parse_topic, result_topic
from gateway.config import MqttSection, default_client_id
from gateway.errors import TransientLinkError
from gateway.metrics import Metrics
from gateway.mqtt.outbox import Outbox, Record
from gateway.mqtt.topics import availability_topic, status_topic

log = logging.getLogger(__name__)

ANNOUNCE_TIMEOUT = 2.0  # seconds for the `offline` announcement on a clean shutdown
MAX_CONCURRENT_COMMANDS = 8  # more wait; commands are rare and short

ConnectHook = Callable[[aiomqtt.Client], Awaitable[None]]


def translate(exc: aiomqtt.MqttError, what: str) -> TransientLinkError:
    """aiomqtt/paho errors -> the gateway's, with advice where we can give one."""
    text = str(exc)
    if isinstance(exc, aiomqtt.MqttCodeError) and exc.rc in (4, 5, 134, 135):
        return TransientLinkError(
            f"{what}: {text}", kind="auth", advice="check mqtt.username and the password"
        )
    if "certificate" in text.lower() or "ssl" in text.lower():
        return TransientLinkError(
            f"{what}: {text}", kind="tls", advice="check mqtt.tls (CA, client certificate, key)"
        )
    kind = "timeout" if "timed out" in text.lower() else "mqtt"
    return TransientLinkError(f"{what}: {text}", kind=kind)


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


def tls_parameters(cfg: MqttSection) -> tuple[aiomqtt.TLSParameters | None, bool | None]:
    tls = cfg.tls
    if tls is None:
        return None, None
    if tls.insecure:
        log.warning(
            "mqtt.tls.insecure is set: the broker's certificate and host name are NOT checked; "
            "anyone on the path can read and change the gateway's traffic"
        )
    params = aiomqtt.TLSParameters(
        ca_certs=str(tls.ca_file) if tls.ca_file else None,
        certfile=str(tls.cert_file) if tls.cert_file else None,
        keyfile=str(tls.key_file) if tls.key_file else None,
        cert_reqs=ssl.CERT_NONE if tls.insecure else ssl.CERT_REQUIRED,
    )
    return params, (True if tls.insecure else None)


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
        self.open_timeout = cfg.connect_timeout + 1.0  # aiomqtt applies connect_timeout itself
        self.backoff = cfg.backoff.policy()
        self.client_id = cfg.client_id or default_client_id(gateway_id)
        self.status_topic = status_topic(cfg.topic_prefix, gateway_id)
        self.connect_hooks: list[ConnectHook] = []  # e.g. Home Assistant discovery
        self._outbox = outbox
        self._metrics = metrics
        self._router = router
        self._availability = availability or Availability()
        self._client: aiomqtt.Client | None = None
        self._by_mid: dict[int, tuple[Record, float]] = {}  # in flight: mid -> (record, sent)
        self._window_open = asyncio.Event()
        self._published: dict[str, Any] = {}  # device -> its readings_published counter
        self._failed: asyncio.Future[None] | None = None
        self.connected = asyncio.Event()
        # Shutdown shortens this to what is left of gateway.shutdown_timeout.
        self.announce_timeout = ANNOUNCE_TIMEOUT

    # -- connect / disconnect ----------------------------------------------------------------
    async def __aenter__(self) -> Self:
        cfg = self.cfg
        tls_params, tls_insecure = tls_parameters(cfg)
        client = aiomqtt.Client(
            cfg.host,
            cfg.port,
            identifier=self.client_id,
            username=cfg.username,
            password=cfg.password.get_secret_value() if cfg.password else None,
            protocol=aiomqtt.ProtocolVersion(paho.MQTTv5 if cfg.protocol == "5" else paho.MQTTv311),
            keepalive=cfg.keepalive,
            timeout=cfg.connect_timeout,
            will=aiomqtt.Will(self.status_topic, b"offline", qos=1, retain=True),
            # Unlimited in paho: our own window bounds what is in flight (paho's own limit
            # rescans every queued message on each acknowledgement).
            max_inflight_messages=0,
            tls_params=tls_params,
            tls_insecure=tls_insecure,
        )
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            _force_close(client)  # aiomqtt leaves the socket open when CONNACK never comes
            raise translate(exc, f"cannot connect to {cfg.host}:{cfg.port}") from exc
        except BaseException:  # cancelled by the supervisor's deadline
            _force_close(client)
            raise
        self._client = client
        self._install_ack_handler(client)
        _write_from_the_loop(client)
        try:
            await self.restore_state(client)
        except BaseException:
            await self._close(announce=False)
            raise
        log.info("mqtt: connected to %s:%d as %s", cfg.host, cfg.port, self.client_id)
        self.connected.set()
        return self

    async def restore_state(self, client: aiomqtt.Client) -> None:
        """Everything a fresh connection needs, in one place: status, command subscriptions,
        retained availability of every device, then the hooks (discovery plugs in here)."""
        cfg = self.cfg
        try:
            await client.publish(
                self.status_topic, b"online", qos=1, retain=True, timeout=cfg.publish_timeout
            )
            if cfg.commands and self._router is not None:
                topic = f"{cfg.topic_prefix}/+/{cfg.command_verb}/+"
                await client.subscribe(topic, qos=1, timeout=cfg.publish_timeout)
            await self._publish_availability(client, dict(self._availability.states))
            for hook in self.connect_hooks:
                await hook(client)
        except aiomqtt.MqttError as exc:
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
        client, self._client = self._client, None
        self._give_back_inflight()
        if client is None:
            return
        try:
            async with asyncio.timeout(self.announce_timeout):
                if announce:
                    await client.publish(self.status_topic, b"offline", qos=1, retain=True)
                await client.__aexit__(None, None, None)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            log.debug("mqtt: unclean disconnect: %s", exc)
        finally:
            _force_close(client)  # no-op after a clean disconnect

    def _give_back_inflight(self) -> None:
        if self._by_mid:
            log.info("mqtt: %d unacknowledged reading(s) go back to the outbox", len(self._by_mid))
            self._outbox.requeue(record for record, _ in self._by_mid.values())
            self._by_mid.clear()

    # -- acknowledgements --------------------------------------------------------------------
    def _install_ack_handler(self, client: aiomqtt.Client) -> None:
        """Route paho's on_publish for our own mids to the outbox, the rest to aiomqtt."""
        inner = client._client
        # aiomqtt registers a VERSION2 callback: (client, userdata, mid, reason, properties).
        aiomqtt_handler = cast("Callable[..., None] | None", inner.on_publish)

        def on_publish(
            c: paho.Client, userdata: Any, mid: int, rc: ReasonCode, props: Properties
        ) -> None:
            entry = self._by_mid.pop(mid, None)
            if entry is None:
                if aiomqtt_handler is not None:
                    aiomqtt_handler(c, userdata, mid, rc, props)
                return
            self._acknowledged(entry[0], rc)

        inner.on_publish = on_publish

    def _acknowledged(self, record: Record, rc: ReasonCode | int) -> None:
        self._outbox.ack(record)
        if isinstance(rc, ReasonCode) and rc.is_failure:
            # MQTT 5 broker refused it (e.g. not authorized): retrying cannot help.
            log.warning("mqtt: broker refused %s: %s", record.topic, rc)
            self._metrics.readings_dropped.labels(record.device, "refused").inc()
        else:
            counter = self._published.get(record.device)
            if counter is None:  # labels() costs more than the increment: look it up once
                counter = self._published[record.device] = self._metrics.readings_published.labels(
                    record.device
                )
            counter.inc()
            self._metrics.publish_latency.observe(max(0.0, time.time() - record.ts))
        self._window_open.set()

    # -- run ---------------------------------------------------------------------------------
    async def run(self) -> None:
        client = self._client
        if client is None:
            raise RuntimeError("run() outside the session's context")
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._watch(client, tg), name="mqtt-watch")
                tg.create_task(self._publish_loop(client), name="mqtt-publish")
                tg.create_task(self._ack_watchdog(), name="mqtt-ack-watchdog")
                tg.create_task(self._availability_loop(client), name="mqtt-availability")
        except* aiomqtt.MqttError as group:
            first = group.exceptions[0]
            assert isinstance(first, aiomqtt.MqttError)
            raise translate(first, "connection lost") from first

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        inner = client._client
        window = self.cfg.inflight
        while True:
            while len(self._by_mid) >= window:
                self._window_open.clear()
                await self._window_open.wait()
            batch = await self._outbox.take(window - len(self._by_mid))
            now = time.monotonic()
            for i, record in enumerate(batch):
                info = inner.publish(record.topic, record.payload, record.qos)
                if info.rc != paho.MQTT_ERR_SUCCESS:
                    self._outbox.requeue(batch[i:])
                    raise aiomqtt.MqttCodeError(info.rc, "could not publish")
                if info.is_published():  # (QoS 0 written at once)
                    self._acknowledged(record, 0)
                else:
                    self._by_mid[info.mid] = (record, now)

    async def _ack_watchdog(self) -> None:
        """A publish that waits longer than publish_timeout means the connection is dead even if
        TCP has not noticed (a frozen broker, a black-holed path)."""
        timeout = self.cfg.publish_timeout
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            if self._by_mid:
                oldest = min(sent for _, sent in self._by_mid.values())
                if time.monotonic() - oldest > timeout:
                    raise aiomqtt.MqttError(
                        f"no acknowledgement for {timeout:g}s: connection presumed dead"
                    )

    async def _watch(self, client: aiomqtt.Client, tg: asyncio.TaskGroup) -> None:
        """Iterate incoming messages: commands. Raises as soon as the connection drops."""
        slots = asyncio.Semaphore(MAX_CONCURRENT_COMMANDS)
        async for message in client.messages:
            command = self._parse_command(message)
            if command is None:
                continue
            await slots.acquire()
            tg.create_task(self._run_command(client, message, command, slots), name="mqtt-cmd")
        raise aiomqtt.MqttError("message stream ended")

    def _parse_command(self, message: aiomqtt.Message) -> Command | None:
        parsed = parse_topic(message.topic.value, self.cfg.topic_prefix, self.cfg.command_verb)
        if parsed is None:
            return None
        payload = message.payload
        if isinstance(payload, str):
            payload = payload.encode()
        elif not isinstance(payload, bytes | bytearray):
            payload = b"" if payload is None else str(payload).encode()
        return Command(parsed[0], parsed[1], bytes(payload))

    async def _run_command(
        self,
        client: aiomqtt.Client,
        message: aiomqtt.Message,
        command: Command,
        slots: asyncio.Semaphore,
    ) -> None:
        try:
            assert self._router is not None
            reply = await self._router.handle(command)
            self._metrics.commands.labels(command.device, "ok" if reply == "ok" else "error").inc()
            topic, props = result_topic(message.topic.value), None
            request = message.properties
            # MQTT 5: answer where the requester asked, with its correlation data.
            response_topic = getattr(request, "ResponseTopic", None)
            if isinstance(response_topic, str) and response_topic:
                topic = response_topic
                props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                correlation = getattr(request, "CorrelationData", None)
                if correlation:
                    props.CorrelationData = correlation
            await client.publish(
                topic, reply.encode(), qos=1, properties=props, timeout=self.cfg.publish_timeout
            )
        finally:
            slots.release()

    async def _availability_loop(self, client: aiomqtt.Client) -> None:
        published = dict(self._availability.states)
        while True:
            await self._availability.changed.wait()
            self._availability.changed.clear()
            current = dict(self._availability.states)
            changes = {d: s for d, s in current.items() if published.get(d) != s}
            await self._publish_availability(client, changes)
            published = current

    async def _publish_availability(self, client: aiomqtt.Client, states: dict[str, str]) -> None:
        for device, state in states.items():
            await client.publish(
                availability_topic(self.cfg.topic_prefix, device),
                state.encode(),
                qos=1,
                retain=True,
                timeout=self.cfg.publish_timeout,
            )


def _write_from_the_loop(client: aiomqtt.Client) -> None:
    """Register paho's socket for writing directly on the event loop.

    aiomqtt does it with `call_soon_threadsafe` because paho may call from its connect thread;
    once connected, paho is only called from the loop. The thread-safe path wakes the loop
    through its self-pipe for every burst of publishes (two more syscalls and a loop iteration
    each) and, when the connection breaks before the callback runs, registers a closed fd."""
    inner = client._client
    loop = asyncio.get_running_loop()

    def register(c: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        if fd < 0:
            return

        def writable() -> None:
            try:
                c.loop_write()
            except Exception as exc:  # a broken socket: fail the session, as aiomqtt does
                disconnected = client._disconnected
                if not disconnected.done():
                    disconnected.set_exception(exc)

        loop.add_writer(fd, writable)

    def unregister(c: paho.Client, userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        if fd >= 0:
            loop.remove_writer(fd)

    inner.on_socket_register_write = register
    inner.on_socket_unregister_write = unregister


def _force_close(client: aiomqtt.Client) -> None:
    """Close the client's socket (and stop its reader) whatever state the protocol is in."""
    inner = client._client
    if inner.socket() is not None:
        inner._sock_close()
