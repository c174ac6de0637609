"""Downlink commands: `<prefix>/<device>/set/<command>` -> the device's link -> a result reply.

The router is independent of MQTT: it turns (topic, payload) into a call on the device's link and
always produces a reply text (`ok` or an error), never an exception, so a malformed command can
not disturb the session: what the link refuses (GatewayError, ValueError) is `error: <why>`, any
other exception is a bug, answered `error: internal` with its traceback logged (once a minute).

A command for a link that is down waits up to `command_ttl` for it to come back, then gets an
error reply. Waiting holds none of the COMMANDS_CONCURRENT slots that carrying a command out
takes (a device that stays away must not hold up the others), and at most
COMMANDS_WAITING_PER_DEVICE wait per device (COMMANDS_WAITING in all); more are `error: busy`.

Input from outside is logged at most once a minute per device and reason, and metric labels
name configured devices only (`label()`): made-up device ids are all `unknown`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from gateway.errors import GatewayError, LinkDownError
from gateway.limits import COMMAND_MAX_PAYLOAD as MAX_PAYLOAD
from gateway.limits import COMMAND_MAX_REPLY as MAX_REPLY
from gateway.limits import (
    COMMANDS_CONCURRENT,
    COMMANDS_WAITING,
    COMMANDS_WAITING_PER_DEVICE,
)
from gateway.logs import printable
from gateway.throttle import LogThrottle

log = logging.getLogger(__name__)

UNKNOWN = "unknown"  # the metric label of every device id that is not a command target
INTERNAL = "error: internal"  # the reply to a command whose handling hit a bug
BUSY = "error: busy"  # the start of every reply that says "too many at once, try later"
TOO_LARGE = f"error: payload larger than {MAX_PAYLOAD} bytes"


@runtime_checkable
class CommandTarget(Protocol):
    """A link that accepts commands (serial now, BLE GATT later)."""

    @property
    def is_up(self) -> bool: ...

    async def wait_up(self) -> None: ...

    async def execute(self, command: str, payload: bytes) -> str | None:
        """Carry out `command`; raise GatewayError (or ValueError) with a message for the user.
        A text returned (what the device answered) is the reply: `ok: <text>`."""


@dataclass(frozen=True, slots=True)
class Command:
    device: str
    name: str
    payload: bytes


class BusyError(GatewayError):
    """Too many commands wait already; the reply starts with BUSY."""


def shown(command: Command) -> str:
    """`'boiler/raw'` for a log line: the topic's levels are anyone's choice, so they are cut
    short and quoted with their control characters escaped (a newline would forge a log line,
    an ANSI escape rewrite the operator's terminal)."""
    return repr(f"{command.device[:64]}/{command.name[:64]}")


def parse_topic(topic: str, prefix: str, verb: str) -> tuple[str, str] | None:
    """`gateway/boiler/set/raw` -> ("boiler", "raw"); None when not a command topic (for
    example our own `.../result` replies)."""
    head = f"{prefix}/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head) :].split("/")
    if len(parts) != 3 or parts[1] != verb or not parts[0] or not parts[2]:
        return None
    return parts[0], parts[2]


def result_topic(topic: str) -> str:
    return f"{topic}/result"


def result_of(reply: str) -> str:
    """The `result` label of a reply the router made: ok, busy, bug or error."""
    if reply == "ok" or reply.startswith("ok: "):
        return "ok"
    if reply.startswith(BUSY):
        return "busy"
    return "bug" if reply == INTERNAL else "error"


class CommandRouter:
    def __init__(
        self,
        lookup: Callable[[str], CommandTarget | None],
        ttl: float,
        *,
        concurrent: int = COMMANDS_CONCURRENT,
        waiting_per_device: int = COMMANDS_WAITING_PER_DEVICE,
        waiting: int = COMMANDS_WAITING,
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._slots = asyncio.Semaphore(concurrent)
        self._per_device = waiting_per_device
        self._max_waiting = waiting
        self._waiting: dict[str, int] = {}  # device -> commands waiting for it (configured ids)
        self._logs = LogThrottle(log)

    def label(self, device: str) -> str:
        """The device's metric label: its id if it takes commands, else `unknown` (ids from
        outside would grow a series each, forever)."""
        return device if self._lookup(device) is not None else UNKNOWN

    async def handle(self, command: Command) -> str:
        """Run a command; returns the reply text (`ok`, `ok: <answer>` or `error: ...`, at most
        COMMAND_MAX_REPLY characters). Never raises, but cancellation."""
        try:
            reply = await self._handle(command)
        except Exception:  # a bug: the session must go on, the traceback must be seen
            self._logs.error(
                (self.label(command.device), "bug"),
                "command %s: a bug in the gateway (replied %r)",
                shown(command),
                INTERNAL,
                exc_info=True,
            )
            return INTERNAL
        return reply if len(reply) <= MAX_REPLY else reply[: MAX_REPLY - 1] + "…"

    async def _handle(self, command: Command) -> str:
        if len(command.payload) > MAX_PAYLOAD:
            self._refused(command, "too_large", TOO_LARGE)
            return TOO_LARGE
        target = self._lookup(command.device)
        if target is None:
            reply = f"error: no device {command.device[:64]!r} accepts commands"
            self._refused(command, "unknown_device", reply)
            return reply
        try:
            if not target.is_up:
                await self._wait_for(command.device, target)
            async with self._slots:
                answer = await target.execute(command.name, command.payload)
        except (GatewayError, ValueError) as exc:
            reply = f"error: {exc}"
            self._refused(command, "busy" if isinstance(exc, BusyError) else "failed", reply)
            return reply
        return f"ok: {answer}" if answer else "ok"

    async def _wait_for(self, device: str, target: CommandTarget) -> None:
        """Up to `ttl` for the device to come back, without a slot, among a bounded few."""
        if self._ttl <= 0:
            raise LinkDownError(f"device {device} is not connected")
        waiting, everyone = self._waiting.get(device, 0), sum(self._waiting.values())
        if waiting >= self._per_device:
            raise BusyError(f"busy, {waiting} commands already wait for device {device}")
        if everyone >= self._max_waiting:
            raise BusyError(f"busy, {everyone} commands already wait for their devices")
        self._waiting[device] = waiting + 1
        try:
            async with asyncio.timeout(self._ttl):
                await target.wait_up()
        except TimeoutError:
            raise LinkDownError(
                f"device {device} did not come back within {self._ttl:g}s"
            ) from None
        finally:
            self._done_waiting(device)

    def _done_waiting(self, device: str) -> None:
        left = self._waiting[device] - 1
        if left:
            self._waiting[device] = left
        else:
            del self._waiting[device]

    def _refused(self, command: Command, reason: str, reply: str) -> None:
        """Logged at most once a minute per device label and reason (the metric counts all)."""
        self._logs.info(
            (self.label(command.device), reason),
            "command %s: %s",
            shown(command),
            printable(reply),
        )
