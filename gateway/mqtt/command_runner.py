"""Incoming commands on one connection: queue, run at most MAX_CONCURRENT at once, reply.

`<prefix>/<device>/<verb>/<command>` -> the router (gateway/commands.py) -> the reply text to
`<command topic>/result`, or (MQTT 5) to the requester's Response Topic with its Correlation
Data. A Response Topic inside the gateway's own command space (e.g. another device's
`.../set/raw`, which would write the reply into that device's port) or with a wildcard is
refused: the reply goes to the default result topic instead, counted, logged once per topic.
"""

from __future__ import annotations

import asyncio
import logging

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.commands import Command, CommandRouter, parse_topic, result_topic
from gateway.limits import COMMANDS_CONCURRENT as MAX_CONCURRENT
from gateway.limits import COMMANDS_QUEUED as MAX_QUEUED
from gateway.limits import MAX_WARNED_TOPICS
from gateway.metrics import Metrics
from gateway.mqtt.aioclient import GatewayClient

log = logging.getLogger(__name__)


class CommandRunner:
    def __init__(
        self,
        router: CommandRouter,
        metrics: Metrics,
        *,
        prefix: str,
        verb: str,
        reply_timeout: float,
    ) -> None:
        self._router = router
        self._metrics = metrics
        self._prefix = prefix
        self._verb = verb
        self._timeout = reply_timeout
        self._queue: asyncio.Queue[tuple[aiomqtt.Message, Command]] = asyncio.Queue(MAX_QUEUED)
        self._warned: set[str] = set()

    @property
    def subscription(self) -> str:
        return f"{self._prefix}/+/{self._verb}/+"

    def offer(self, client: GatewayClient, message: aiomqtt.Message) -> None:
        """From the message loop, for every incoming message: queue commands, ignore the rest
        (our own `.../result` replies included)."""
        parsed = parse_topic(message.topic.value, self._prefix, self._verb)
        if parsed is None:
            return
        payload = message.payload if isinstance(message.payload, bytes) else b""
        command = Command(parsed[0], parsed[1], payload)
        try:
            self._queue.put_nowait((message, command))
        except asyncio.QueueFull:
            log.warning("mqtt: %d commands waiting; %s refused", MAX_QUEUED, message.topic)
            self._metrics.commands.labels(command.device, "error").inc()
            topic, props = self.reply_address(message)
            client.publish_control(
                topic, b"error: busy, too many commands waiting", 0, properties=props
            )

    async def run(self, client: GatewayClient) -> None:
        """Runs for one connection; commands still running end with it (their TaskGroup)."""
        slots = asyncio.Semaphore(MAX_CONCURRENT)
        async with asyncio.TaskGroup() as tg:
            while True:
                message, command = await self._queue.get()
                await slots.acquire()
                tg.create_task(self._run_one(client, message, command, slots), name="mqtt-cmd")

    async def _run_one(
        self,
        client: GatewayClient,
        message: aiomqtt.Message,
        command: Command,
        slots: asyncio.Semaphore,
    ) -> None:
        try:
            reply = await self._router.handle(command)
            self._metrics.commands.labels(command.device, "ok" if reply == "ok" else "error").inc()
            topic, props = self.reply_address(message)
            async with asyncio.timeout(self._timeout):
                await client.publish_control(topic, reply.encode(), 1, properties=props)
        finally:
            slots.release()

    def reply_address(self, message: aiomqtt.Message) -> tuple[str, Properties | None]:
        """`<command topic>/result`, or (MQTT 5) where the requester asked, with its
        correlation data, if that topic is not one a reply must never go to."""
        default = result_topic(message.topic.value)
        asked = getattr(message.properties, "ResponseTopic", None) if message.properties else None
        if not asked:
            return default, None
        if not self._allowed(asked):
            parsed = parse_topic(message.topic.value, self._prefix, self._verb)
            device = parsed[0] if parsed else "unknown"
            self._metrics.commands.labels(device, "refused_response_topic").inc()
            if asked not in self._warned and len(self._warned) < MAX_WARNED_TOPICS:
                self._warned.add(asked)
                log.warning(
                    "mqtt: response topic %r refused (a wildcard, or inside the gateway's own "
                    "topics); replying to %s instead",
                    asked,
                    default,
                )
            return default, None
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        correlation = getattr(message.properties, "CorrelationData", None)
        if correlation:
            props.CorrelationData = correlation
        return asked, props

    def _allowed(self, topic: str) -> bool:
        """Outside `<prefix>/`, anywhere without wildcards; inside it (readings, availability,
        commands that reach the devices), only a command's own `.../result` topic."""
        if not topic or "+" in topic or "#" in topic:
            return False
        head = f"{self._prefix}/"
        if not topic.startswith(head):
            return True
        levels = topic[len(head) :].split("/")
        return len(levels) == 4 and levels[1] == self._verb and levels[3] == "result"
