"""Downlink commands: `<prefix>/<device>/set/<command>` -> the device's link -> a result reply.

The router is independent of MQTT: it turns (topic, payload) into a call on the device's link and
always produces a reply text (`ok` or an error), never an exception, so a malformed command can
not disturb the session. A command for a link that is down waits up to `command_ttl` for it to
come back, then gets an error reply.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from gateway.errors import GatewayError, LinkDownError
from gateway.limits import COMMAND_MAX_PAYLOAD as MAX_PAYLOAD

log = logging.getLogger(__name__)


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


class CommandRouter:
    def __init__(self, lookup: Callable[[str], CommandTarget | None], ttl: float) -> None:
        self._lookup = lookup
        self._ttl = ttl

    async def handle(self, command: Command) -> str:
        """Run a command; returns the reply text (`ok`, `ok: <answer>` or `error: ...`)."""
        if len(command.payload) > MAX_PAYLOAD:
            return f"error: payload larger than {MAX_PAYLOAD} bytes"
        target = self._lookup(command.device)
        if target is None:
            return f"error: no device {command.device!r} accepts commands"
        try:
            if not target.is_up:
                if self._ttl <= 0:
                    raise LinkDownError(f"device {command.device} is not connected")
                try:
                    async with asyncio.timeout(self._ttl):
                        await target.wait_up()
                except TimeoutError:
                    raise LinkDownError(
                        f"device {command.device} did not come back within {self._ttl:g}s"
                    ) from None
            answer = await target.execute(command.name, command.payload)
        except (GatewayError, ValueError) as exc:
            log.info("command %s/%s failed: %s", command.device, command.name, exc)
            return f"error: {exc}"
        return f"ok: {answer}" if answer else "ok"
