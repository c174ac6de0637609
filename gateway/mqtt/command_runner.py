"""Incoming commands on one connection: queue, run them (the router bounds how many at once),
reply.

`<prefix>/<device>/<verb>/<command>` -> the router (gateway/commands.py) -> the reply text to
`<command topic>/result`, or (MQTT 5) to the requester's Response Topic with its Correlation
Data. What comes from outside is bounded and contained here:

- a command with the retain flag is ignored (a retained command would run again on every
  reconnect, and clearing it would run an empty one); over MQTT 5 the subscription keeps the
  flag of live publishes too (`retain as published`);
- a payload over COMMAND_MAX_PAYLOAD is answered at once, never queued;
- COMMANDS_QUEUED wait in the queue and as many are in progress; more are `error: busy`;
- a Response Topic that is a command topic (`.../<verb>/<command>`, of this gateway or any
  other: the reply would be written into a device's port), inside the gateway's own topics,
  or with a wildcard is refused: the reply goes to the default result topic;
- no exception from one command ends the session, only the connection's own errors do.

Every outcome is counted in `gateway_commands_total{device, result}` (the device label is
`unknown` for ids that take no commands); refusals are logged at most once a minute per
device and reason.
"""

from __future__ import annotations

import asyncio
import logging

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.commands import (
    BUSY,
    TOO_LARGE,
    Command,
    CommandRouter,
    parse_topic,
    result_of,
    result_topic,
)
from gateway.limits import COMMAND_MAX_PAYLOAD as MAX_PAYLOAD
from gateway.limits import COMMANDS_QUEUED as MAX_QUEUED
from gateway.metrics import Metrics
from gateway.mqtt.aioclient import GatewayClient
from gateway.mqtt.errors import CONNECTION_ERRORS, PacketTooLargeError
from gateway.throttle import LogThrottle

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
        self._logs = LogThrottle(log)

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
        label = self._router.label(command.device)
        if message.retain:
            self._count(label, "retained")
            self._logs.info(
                (label, "retained"),
                "mqtt: command %r ignored: it has the retain flag (a retained command would "
                "run again at every reconnect; publish commands without retain)",
                message.topic.value[:200],
            )
        elif len(payload) > MAX_PAYLOAD:
            self._count(label, "too_large")
            self._reply_now(client, message, label, TOO_LARGE)
        else:
            try:
                self._queue.put_nowait((message, command))
            except asyncio.QueueFull:
                self._count(label, "busy")
                self._logs.warning(
                    ("commands", "busy"), "mqtt: %d commands waiting; more refused", MAX_QUEUED
                )
                self._reply_now(client, message, label, f"{BUSY}, too many commands waiting")

    async def run(self, client: GatewayClient) -> None:
        """Runs for one connection; commands still running end with it (their TaskGroup)."""
        in_progress = asyncio.Semaphore(MAX_QUEUED)
        async with asyncio.TaskGroup() as tg:
            while True:
                message, command = await self._queue.get()
                await in_progress.acquire()
                tg.create_task(
                    self._run_one(client, message, command, in_progress), name="mqtt-cmd"
                )

    async def _run_one(
        self,
        client: GatewayClient,
        message: aiomqtt.Message,
        command: Command,
        in_progress: asyncio.Semaphore,
    ) -> None:
        label = self._router.label(command.device)
        try:
            reply = await self._router.handle(command)
            self._count(label, result_of(reply))
            future = self._reply_now(client, message, label, reply)
            async with asyncio.timeout(self._timeout):
                await future
        except CONNECTION_ERRORS:
            raise  # the connection is gone: the session ends and reconnects
        except Exception:  # a bug here must not end the session either
            self._count(label, "bug")
            self._logs.error(
                (label, "bug"), "mqtt: replying to a command: a bug in the gateway", exc_info=True
            )
        finally:
            in_progress.release()

    def _count(self, label: str, result: str) -> None:
        self._metrics.commands.labels(label, result).inc()

    def _reply_now(
        self, client: GatewayClient, message: aiomqtt.Message, label: str, reply: str
    ) -> asyncio.Future[int]:
        """Queue the reply; its future (failed with the connection) is the caller's to await.
        A reply over the broker's maximum packet size (a long response topic) is dropped."""
        topic, props = self.reply_address(message, label)
        try:
            return client.publish_control(topic, reply.encode(), 1, properties=props)
        except PacketTooLargeError as exc:
            self._logs.warning((label, "reply_too_large"), "mqtt: reply dropped: %s", exc)
            done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            done.set_result(0)
            return done

    def reply_address(
        self, message: aiomqtt.Message, label: str = "unknown"
    ) -> tuple[str, Properties | None]:
        """`<command topic>/result`, or (MQTT 5) where the requester asked, with its
        correlation data, if that topic is not one a reply must never go to."""
        default = result_topic(message.topic.value)
        asked = getattr(message.properties, "ResponseTopic", None) if message.properties else None
        if not asked:
            return default, None
        if not self.allowed(asked):
            self._count(label, "refused_response_topic")
            self._logs.warning(
                (label, "refused_response_topic"),
                "mqtt: response topic %r refused (a wildcard, a command topic, or inside the "
                "gateway's own topics); replying to %r instead",
                asked[:200],
                default,
            )
            return default, None
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        correlation = getattr(message.properties, "CorrelationData", None)
        if correlation:
            props.CorrelationData = correlation
        return asked, props

    def allowed(self, topic: str) -> bool:
        """Where a reply may go: no wildcards; no command topic of any prefix (a `<verb>`
        level followed by anything but `<command>/result`: the reply would be a command to
        some gateway's device); inside `<prefix>/` (readings, availability), only a
        command's own `.../result` topic."""
        if not topic or "+" in topic or "#" in topic:
            return False
        levels = topic.split("/")
        for i, level in enumerate(levels[:-1]):
            if level == self._verb and (len(levels) != i + 3 or levels[-1] != "result"):
                return False
        head = f"{self._prefix}/"
        if not topic.startswith(head):
            return True
        inner = topic[len(head) :].split("/")
        return len(inner) == 4 and inner[1] == self._verb and inner[3] == "result"
