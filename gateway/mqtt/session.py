"""The MQTT session link: owns one aiomqtt client (one broker connection).

Entering connects (with a last will `offline` on the status topic) and announces `online`;
`run()` publishes queued readings with a window of unacknowledged publishes in flight, while a
second task iterates the client's messages so a dead connection is noticed even when nothing is
being published. Readings leave the queue only when the broker acknowledged them; whatever is in
flight when the connection fails goes back to the front of the queue.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Self

import aiomqtt
from paho.mqtt.client import MQTTv5, MQTTv311

from gateway.config import MqttSection, default_client_id
from gateway.errors import TransientLinkError
from gateway.metrics import Metrics
from gateway.models import Reading
from gateway.mqtt.topics import reading_payload, reading_topic, status_topic
from gateway.queue import ReadingQueue

log = logging.getLogger(__name__)

ANNOUNCE_TIMEOUT = 2.0  # seconds for the `offline` announcement on a clean shutdown


def translate(exc: aiomqtt.MqttError, what: str) -> TransientLinkError:
    text = str(exc)
    kind = "timeout" if "timed out" in text.lower() else "mqtt"
    if isinstance(exc, aiomqtt.MqttCodeError) and exc.rc in (4, 5, 134, 135):
        kind = "auth"
        return TransientLinkError(
            f"{what}: {text}", kind=kind, advice="check mqtt.username and the password"
        )
    return TransientLinkError(f"{what}: {text}", kind=kind)


class MqttSession:
    name = "mqtt"

    def __init__(
        self, cfg: MqttSection, gateway_id: str, queue: ReadingQueue, metrics: Metrics
    ) -> None:
        self.cfg = cfg
        self.open_timeout = cfg.connect_timeout + 1.0  # aiomqtt applies connect_timeout itself
        self.backoff = cfg.backoff.policy()
        self.client_id = cfg.client_id or default_client_id(gateway_id)
        self.status_topic = status_topic(cfg.topic_prefix, gateway_id)
        self._queue = queue
        self._metrics = metrics
        self._client: aiomqtt.Client | None = None
        # Readings handed to the client and not yet acknowledged, in the order they were taken.
        self._inflight: dict[int, Reading] = {}
        self._next_id = 0
        self.connected = asyncio.Event()
        # Shutdown shortens this to what is left of gateway.shutdown_timeout.
        self.announce_timeout = ANNOUNCE_TIMEOUT

    async def __aenter__(self) -> Self:
        cfg = self.cfg
        client = aiomqtt.Client(
            cfg.host,
            cfg.port,
            identifier=self.client_id,
            username=cfg.username,
            password=cfg.password.get_secret_value() if cfg.password else None,
            protocol=aiomqtt.ProtocolVersion(MQTTv5 if cfg.protocol == "5" else MQTTv311),
            keepalive=cfg.keepalive,
            timeout=cfg.connect_timeout,
            will=aiomqtt.Will(self.status_topic, b"offline", qos=1, retain=True),
            max_inflight_messages=cfg.inflight,
        )
        # aiomqtt warns about "pending calls" past a threshold; our window is deliberate.
        client.pending_calls_threshold = cfg.inflight + 16
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            _force_close(client)  # aiomqtt leaves the socket open when CONNACK never comes
            raise translate(exc, f"cannot connect to {cfg.host}:{cfg.port}") from exc
        except BaseException:  # cancelled by the supervisor's deadline
            _force_close(client)
            raise
        self._client = client
        try:
            await self._on_connected(client)
        except BaseException:
            await self._close(announce=False)
            raise
        log.info("mqtt: connected to %s:%d as %s", cfg.host, cfg.port, self.client_id)
        self.connected.set()
        return self

    async def _on_connected(self, client: aiomqtt.Client) -> None:
        """Restore session state after every (re)connect. One place for everything a fresh
        connection needs (status now; command subscriptions and discovery plug in here)."""
        try:
            await client.publish(
                self.status_topic, b"online", qos=1, retain=True, timeout=self.cfg.publish_timeout
            )
        except aiomqtt.MqttError as exc:
            raise translate(exc, "announcing online") from exc

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
        if self._inflight:
            log.info("mqtt: %d unacknowledged readings go back to the queue", len(self._inflight))
            self._queue.requeue(self._inflight.values())
            self._inflight.clear()

    async def run(self) -> None:
        client = self._client
        if client is None:
            raise RuntimeError("run() outside the session's context")
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._watch(client), name="mqtt-watch")
                tg.create_task(self._publish_loop(client, tg), name="mqtt-publish")
        except* aiomqtt.MqttError as group:
            first = group.exceptions[0]
            assert isinstance(first, aiomqtt.MqttError)
            raise translate(first, "connection lost") from first

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Iterating messages raises as soon as the connection drops (keepalive included)."""
        async for message in client.messages:
            log.debug("mqtt: ignoring message on %s", message.topic)
        raise aiomqtt.MqttError("message stream ended")

    async def _publish_loop(self, client: aiomqtt.Client, tg: asyncio.TaskGroup) -> None:
        window = asyncio.Semaphore(self.cfg.inflight)
        while True:
            batch = await self._queue.take(self.cfg.inflight)
            # Track the whole batch at once: if we are cancelled while waiting for the window,
            # the readings not yet handed to the client still go back to the queue.
            first = self._next_id
            self._next_id += len(batch)
            self._inflight.update(zip(range(first, self._next_id), batch, strict=True))
            for rid, reading in enumerate(batch, start=first):
                await window.acquire()
                tg.create_task(self._publish_one(client, rid, reading, window))

    async def _publish_one(
        self, client: aiomqtt.Client, rid: int, reading: Reading, window: asyncio.Semaphore
    ) -> None:
        try:
            await client.publish(
                reading_topic(self.cfg.topic_prefix, reading),
                reading_payload(reading),
                qos=self.cfg.qos,
                timeout=self.cfg.publish_timeout,
            )
        finally:
            window.release()
        # Acknowledged (or, at QoS 0, written): only now does the reading leave the gateway.
        del self._inflight[rid]
        self._queue.ack()
        self._metrics.readings_published.labels(reading.device).inc()


def _force_close(client: aiomqtt.Client) -> None:
    """Close the client's socket (and stop its reader) whatever state the protocol is in."""
    paho = client._client
    if paho.socket() is not None:
        paho._sock_close()
