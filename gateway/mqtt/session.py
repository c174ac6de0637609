"""The MQTT session link: one broker connection at a time, through aiomqtt.

Entering makes a new `GatewayClient` (aiomqtt underneath; a new one per connection, so paho
never resends a previous connection's messages behind our back), connects (TLS and credentials
from config, a last will `offline` on the status topic) and restores the session's state
(`restore_state`: status `online`, the command subscription, every device's retained
availability, then the parts later features add, such as Home Assistant discovery
(`SessionPart`): all queued at once and awaited together, one round trip however many
devices). `run()` then runs, in one
TaskGroup, the pieces that each have one job:

- the message loop: iterates `client.messages`, hands commands to the CommandRunner, and raises
  as soon as the connection is gone (aiomqtt's prompt signal of a disconnect);
- the Publisher (publisher.py): the window of unacknowledged readings, and its ack watchdog;
- the CommandRunner (command_runner.py): commands to devices and their replies;
- availability (availability.py): retained `<prefix>/<device>/availability` on every change.

paho's keepalive pings a quiet line and drops a connection whose broker stays silent for about
2 x `mqtt.keepalive`; under traffic the ack watchdog notices first (`mqtt.publish_timeout`).

Several brokers (`mqtt.servers`): each entering connects to the current one; a failed connect
or a lost connection moves to the next (in order, round and round), and the supervisor's
backoff before the next attempt is the same as with one broker. The session stays on a broker
that works (no going back to the first). How each connection ended feeds the takeover detector
(takeover.py): another process with our client id is logged once, loudly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.commands import CommandRouter
from gateway.config import MqttSection, MqttServer, default_client_id
from gateway.errors import TransientLinkError
from gateway.limits import ANNOUNCE_TIMEOUT, CONNECT_MARGIN
from gateway.limits import MQTT_MAX_INCOMING_PACKET as MAX_INCOMING_PACKET
from gateway.linknames import SESSION
from gateway.metrics import Metrics
from gateway.mqtt.aioclient import GatewayClient
from gateway.mqtt.availability import Availability, publish_changes, publish_states
from gateway.mqtt.command_runner import CommandRunner
from gateway.mqtt.errors import CONNECTION_ERRORS, ConnectionLostError, RefusedError, translate
from gateway.mqtt.outbox import Outbox
from gateway.mqtt.publisher import BatchLookup, Publisher
from gateway.mqtt.takeover import TakeoverDetector, Verdict
from gateway.mqtt.tls import tls_context
from gateway.mqtt.topics import status_topic

log = logging.getLogger(__name__)

QOS2_WINDOW_3_1_1 = 20  # unacknowledged QoS 2 publishes at once over MQTT 3.1.1 (see run())


class SessionPart(Protocol):
    """A feature that lives on the broker connection (Home Assistant discovery): it subscribes
    to `subscriptions`, restores its retained state on every (re)connect, sees every incoming
    message and runs one task per connection."""

    name: str
    subscriptions: Sequence[str]

    async def restore(self, client: GatewayClient) -> None: ...

    def offer(self, client: GatewayClient, message: aiomqtt.Message) -> None: ...

    async def run(self, client: GatewayClient) -> None: ...


__all__ = ["Availability", "MqttSession", "SessionPart", "SessionStatus", "server_label"]


def server_label(server: MqttServer) -> str:
    """`host:port`, `[v6]:port`: how a server is named in logs, /status, STATUS= and metrics."""
    host = f"[{server.host}]" if ":" in server.host else server.host
    return f"{host}:{server.port}"


async def await_controls(futures: list[asyncio.Future[int]], what: str) -> None:
    """Wait for control publishes queued together; a refusal (MQTT 5) is logged, not fatal."""
    codes = await asyncio.gather(*futures)
    refused = [code for code in codes if code >= 0x80]
    if refused:
        log.warning(
            "mqtt: broker refused %d of %d %s (code %#04x)",
            len(refused),
            len(codes),
            what,
            refused[0],
        )


@dataclass(frozen=True, slots=True)
class SessionStatus:
    """What the session reports of itself (`/status`, readiness, the STATUS= line)."""

    connected: bool
    server: MqttServer  # the broker connected to; while not connected, the one tried next
    connected_to: str | None  # its label (`host:port`) while connected, else None


class MqttSession:
    name = SESSION

    def __init__(
        self,
        cfg: MqttSection,
        gateway_id: str,
        outbox: Outbox,
        metrics: Metrics,
        *,
        router: CommandRouter | None = None,
        availability: Availability | None = None,
        batching: BatchLookup = lambda _device: None,
        parts: Sequence[SessionPart] = (),
    ) -> None:
        self.cfg = cfg
        self.open_timeout = cfg.connect_timeout + CONNECT_MARGIN
        self.backoff = cfg.backoff.policy()
        self.client_id = cfg.client_id or default_client_id(gateway_id)
        self.prefix = cfg.prefix_for(gateway_id)
        self.status_topic = status_topic(self.prefix, gateway_id)
        self.parts: list[SessionPart] = list(parts)  # e.g. Home Assistant discovery
        self.servers = cfg.server_list()
        self._next = 0  # index into servers of the next connection attempt
        self.server: MqttServer | None = None  # the one connected to, while connected
        self._connected_at = 0.0  # monotonic
        self._takeover = TakeoverDetector(reset_after=cfg.backoff.reset_after)
        self._metrics = metrics
        metrics.mqtt_connected.clear()  # a reload may have changed the list
        for server in self.servers:
            metrics.mqtt_connected.labels(server_label(server)).set(0)
        self._v5 = cfg.protocol == "5"
        # The broker keeps our session between connections (MQTT 5 with a session expiry).
        self._resumable = self._v5 and cfg.session_expiry > 0
        # Subscriptions' QoS: 1 only in a session the broker keeps, where it queues commands
        # while we are away. A clean session dies with its connection, so QoS 1 would buy
        # nothing over TCP, and on RabbitMQ it costs a failover: a QoS 1 subscription is a
        # durable queue named after the client id on the node we were connected to, and while
        # that node is down no other node lets the same client id subscribe at QoS 1 (the
        # connection is closed). QoS 0 subscriptions fail over (tests/test_mqtt_cluster.py).
        self._sub_qos = 1 if self._resumable else 0
        self._v5_only_said = False
        self._outbox = outbox
        self._availability = availability or Availability()
        self._publisher = Publisher(
            outbox,
            metrics,
            prefix=self.prefix,
            publish_timeout=cfg.publish_timeout,
            batching=batching,
        )
        self._commands = (
            CommandRunner(
                router,
                metrics,
                prefix=self.prefix,
                verb=cfg.command_verb,
                reply_timeout=cfg.publish_timeout,
            )
            if router is not None and cfg.commands
            else None
        )
        self._client: GatewayClient | None = None
        self._restored: dict[str, str] = {}  # the availability restore_state published
        self.connected = asyncio.Event()
        # Shutdown shortens this to what is left of gateway.shutdown_timeout.
        self.announce_timeout = ANNOUNCE_TIMEOUT

    # -- connect / disconnect ----------------------------------------------------------------
    def _new_client(self, server: MqttServer) -> GatewayClient:
        cfg = self.cfg
        assert server.port is not None  # server_list() fills in mqtt.port
        # A new client per connection: FIRST_ONLY always starts clean. With a session expiry the
        # broker keeps our session (subscriptions, queued commands): resume it.
        clean_start: bool | int = True if self._v5 else paho.MQTT_CLEAN_START_FIRST_ONLY
        connect_properties = None
        if self._v5:
            connect_properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            # The broker drops what is larger instead of sending it (a 150 MB "command" would
            # be read whole before its size could be checked).
            connect_properties.MaximumPacketSize = MAX_INCOMING_PACKET
            if self._resumable:
                clean_start = False
                connect_properties.SessionExpiryInterval = cfg.session_expiry
        return GatewayClient(
            server.host,
            server.port,
            on_acks=self._publisher.on_acks,
            connect_timeout=cfg.connect_timeout,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if self._v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if self._v5 else True,
            clean_start=clean_start,
            properties=connect_properties,
            keepalive=cfg.keepalive,
            username=cfg.username,
            password=cfg.password.get_secret_value() if cfg.password else None,
            will=aiomqtt.Will(self.status_topic, b"offline", qos=1, retain=True),
            tls_context=tls_context(cfg, server.tls_server_name),
            # aiomqtt's own deadline (CONNACK, SUBACK, DISCONNECT); ours are tighter and outside.
            timeout=max(cfg.connect_timeout, cfg.publish_timeout),
        )

    async def __aenter__(self) -> Self:
        if self._client is not None:
            raise RuntimeError("the MQTT session is already connected (not reentrant)")
        server = self.servers[self._next]
        label = server_label(server)
        try:
            client = self._new_client(server)
            try:
                async with asyncio.timeout(self.cfg.connect_timeout):
                    await client.__aenter__()
            except (*CONNECTION_ERRORS,) as exc:
                raise translate(exc, f"cannot connect to {label}") from exc
            self._client = client
            try:
                await self.restore_state(client)
            except BaseException:
                await self._close(announce=False)
                raise
        except BaseException:
            self._rotate("could not connect to")
            raise
        self.server, self._connected_at = server, time.monotonic()
        self._metrics.mqtt_connected.labels(label).set(1)
        resumed = " (session resumed)" if client.session_present else ""
        log.info("mqtt: connected to %s as %s%s", label, self.client_id, resumed)
        self._say_v5_only()
        self.connected.set()
        return self

    def status(self) -> SessionStatus:
        server = self.server
        return SessionStatus(
            connected=self.connected.is_set(),
            server=server or self.servers[self._next],
            connected_to=server_label(server) if server is not None else None,
        )

    def _rotate(self, what: str) -> None:
        """After a failed connect or a lost connection: the next attempt goes to the next
        server (the supervisor's backoff comes first)."""
        if len(self.servers) == 1:
            return
        failed = server_label(self.servers[self._next])
        self._next = (self._next + 1) % len(self.servers)
        log.info(
            "mqtt: %s %s; next: %s (server %d of %d)",
            what,
            failed,
            server_label(self.servers[self._next]),
            self._next + 1,
            len(self.servers),
        )

    def _say_v5_only(self) -> None:
        cfg = self.cfg
        if self._v5 or self._v5_only_said or not (cfg.session_expiry or cfg.message_expiry):
            return
        self._v5_only_said = True
        log.info(
            "mqtt: session_expiry and message_expiry are MQTT 5 settings; ignored on this "
            'MQTT 3.1.1 connection (set mqtt.protocol: "5" if the broker speaks it)'
        )

    async def restore_state(self, client: GatewayClient) -> None:
        """Everything a fresh connection needs, in one place: status, the command subscription,
        retained availability of every device, then the hooks (discovery plugs in here). The
        publishes are queued together and awaited together."""
        cfg = self.cfg
        self._restored = dict(self._availability.states)
        try:
            async with asyncio.timeout(cfg.publish_timeout):
                futures = [client.publish_control(self.status_topic, b"online", 1, retain=True)]
                futures += publish_states(client, self.prefix, self._restored)
                waits: list[Awaitable[object]] = [await_controls(futures, "state messages")]
                if self._commands is not None:
                    # MQTT 5: live retained publishes keep their flag, so that a retained
                    # command (or its clearing) is ignored at once too, not only on reconnect.
                    waits.append(
                        self._subscribe(client, self._commands.subscription, keep_retain=True)
                    )
                waits += [
                    self._subscribe(client, topic)
                    for part in self.parts
                    for topic in part.subscriptions
                ]
                await asyncio.gather(*waits)
                await asyncio.gather(*(part.restore(client) for part in self.parts))
        except CONNECTION_ERRORS as exc:
            raise translate(exc, "restoring session state") from exc

    async def _subscribe(
        self, client: GatewayClient, topic: str, *, keep_retain: bool = False
    ) -> None:
        if self._v5 and keep_retain:
            options = SubscribeOptions(qos=self._sub_qos, retainAsPublished=True)
            granted = await client.subscribe(topic, options=options)
        else:
            granted = await client.subscribe(topic, self._sub_qos)
        code = granted[0] if granted else 0x80
        value = code if isinstance(code, int) else code.value
        if value >= 0x80:
            raise RefusedError(f"subscription to {topic} refused (code {value:#04x})")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # On a clean stop (cancellation) say `offline` ourselves: the broker only sends the will
        # when the connection breaks, not on a clean disconnect.
        clean = exc is None or isinstance(exc, asyncio.CancelledError)
        client = self._client
        if not clean and client is not None:
            self._judge_loss(exc, client.disconnect_reason)
            self._rotate("lost the connection to")
        await self._close(announce=clean)

    def _judge_loss(self, exc: BaseException | None, reason: int | None) -> None:
        """Feed the takeover detector; the first time it says "takeover", say so loudly."""
        up_for = time.monotonic() - self._connected_at
        kind = exc.kind if isinstance(exc, TransientLinkError) else "mqtt"
        verdict = self._takeover.lost(up_for, kind, reason)
        if verdict is not Verdict.TAKEOVER:
            return
        self._metrics.mqtt_takeovers.inc()
        if self._takeover.detected:
            return
        self._takeover.detected = True
        how = (
            "the broker says another client took over the session (reason 0x8e)"
            if reason == 0x8E
            else f"{self._takeover.streak} connections in a row were closed by the broker "
            f"within {self.cfg.backoff.reset_after:g}s of connecting"
        )
        log.error(
            "mqtt: DUPLICATE CLIENT ID? %s: another process is probably connected as %r, and "
            "the broker keeps dropping one of the two. Give every gateway its own gateway.id "
            "(or mqtt.client_id); this is logged once (see gateway_mqtt_takeovers_total)",
            how,
            self.client_id,
        )

    async def _close(self, *, announce: bool) -> None:
        self.connected.clear()
        if self.server is not None:
            self._metrics.mqtt_connected.labels(server_label(self.server)).set(0)
            self.server = None
        client, self._client = self._client, None
        self._publisher.give_back()
        if client is None:
            return
        try:
            async with asyncio.timeout(self.announce_timeout):
                if announce and client.is_connected:
                    await client.publish_control(self.status_topic, b"offline", 1, retain=True)
                await client.__aexit__(None, None, None)
        except (*CONNECTION_ERRORS,) as exc:
            log.debug("mqtt: unclean disconnect: %s", exc)
        finally:
            client.abort()  # no-op after a clean disconnect

    # -- run ---------------------------------------------------------------------------------
    async def run(self) -> None:
        client = self._client
        if client is None:
            raise RuntimeError("run() outside the session's context")
        window = min(self.cfg.inflight, client.receive_maximum)
        if self.cfg.qos == 2 and not self._v5:
            # MQTT 3.1.1 cannot tell us the broker's limit, and mosquitto answers a QoS 2
            # publish beyond its max_inflight_messages (default 20) with a PUBREC that looks
            # like success, then drops the message.
            window = min(window, QOS2_WINDOW_3_1_1)
        publisher = self._publisher
        publisher.attach(client, window, self._reading_properties())
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._messages(client), name="mqtt-messages")
                tg.create_task(publisher.run(), name="mqtt-publish")
                tg.create_task(publisher.watchdog(), name="mqtt-ack-watchdog")
                if self._commands is not None:
                    tg.create_task(self._commands.run(client), name="mqtt-commands")
                tg.create_task(
                    publish_changes(
                        client,
                        self._availability,
                        self.prefix,
                        self.cfg.publish_timeout,
                        self._restored,
                    ),
                    name="mqtt-availability",
                )
                for part in self.parts:
                    tg.create_task(part.run(client), name=f"mqtt-{part.name}")
        except* CONNECTION_ERRORS as group:
            first = group.exceptions[0]
            raise translate(first, "connection lost") from first

    def _reading_properties(self) -> Properties | None:
        """MQTT 5 properties of every reading's PUBLISH: the message expiry, if configured."""
        if not self._v5 or self.cfg.message_expiry is None:
            return None
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.MessageExpiryInterval = self.cfg.message_expiry
        return properties

    async def _messages(self, client: GatewayClient) -> None:
        """Incoming messages to the command runner and the parts; raises as soon as the
        connection is gone."""
        commands, parts = self._commands, self.parts
        async for message in client.messages:
            if commands is not None:
                commands.offer(client, message)
            for part in parts:
                part.offer(client, message)
        raise ConnectionLostError("connection closed")
