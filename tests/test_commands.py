"""The command router: topic parsing and replies, with a small in-test target (no MQTT)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.commands import Command, CommandRouter, parse_topic, result_of, result_topic
from gateway.errors import LinkDownError
from gateway.limits import COMMANDS_CONCURRENT, COMMANDS_WAITING_PER_DEVICE


class Target:
    """A command target the way links implement it: up/down, a wait, an execute that records."""

    def __init__(self, up: bool = True) -> None:
        self.up = asyncio.Event()
        if up:
            self.up.set()
        self.executed: list[tuple[str, bytes]] = []

    @property
    def is_up(self) -> bool:
        return self.up.is_set()

    async def wait_up(self) -> None:
        await self.up.wait()

    async def execute(self, command: str, payload: bytes) -> None:
        if not self.is_up:
            raise LinkDownError("down")
        if command == "boom":
            raise ValueError("bad value for boom")
        self.executed.append((command, payload))


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("gw/boiler/set/raw", ("boiler", "raw")),
        ("gw/boiler/set/raw/result", None),  # our own replies are not commands
        ("gw/boiler/get/raw", None),
        ("gw/boiler/set/", None),
        ("gw//set/raw", None),
        ("other/boiler/set/raw", None),
        ("gw/set/raw", None),
    ],
)
def test_parse_topic(topic: str, expected: tuple[str, str] | None) -> None:
    assert parse_topic(topic, "gw", "set") == expected


def test_parse_topic_with_a_multi_level_prefix() -> None:
    assert parse_topic("site/a/gw/boiler/set/raw", "site/a/gw", "set") == ("boiler", "raw")
    assert result_topic("site/a/gw/boiler/set/raw") == "site/a/gw/boiler/set/raw/result"


async def test_routes_to_the_device_and_replies_ok() -> None:
    target = Target()
    router = CommandRouter(lambda d: target if d == "boiler" else None, ttl=0)
    assert await router.handle(Command("boiler", "raw", b"PING")) == "ok"
    assert target.executed == [("raw", b"PING")]


async def test_errors_become_replies_never_exceptions() -> None:
    target = Target()
    router = CommandRouter(lambda d: target if d == "boiler" else None, ttl=0)
    assert (await router.handle(Command("nope", "raw", b""))).startswith("error: no device")
    assert await router.handle(Command("boiler", "boom", b"")) == "error: bad value for boom"
    big = await router.handle(Command("boiler", "raw", b"x" * 5000))
    assert big.startswith("error: payload larger than")
    assert target.executed == []


async def test_down_device_gets_an_error_or_waits_for_its_ttl() -> None:
    target = Target(up=False)
    now = CommandRouter(lambda _d: target, ttl=0)
    assert (
        await now.handle(Command("boiler", "raw", b"x")) == "error: device boiler is not connected"
    )

    patient = CommandRouter(lambda _d: target, ttl=5)
    pending = asyncio.ensure_future(patient.handle(Command("boiler", "raw", b"later")))
    await asyncio.sleep(0.05)
    assert not pending.done()
    target.up.set()
    assert await pending == "ok"

    target.up.clear()
    short = CommandRouter(lambda _d: target, ttl=0.05)
    reply = await short.handle(Command("boiler", "raw", b"x"))
    assert reply == "error: device boiler did not come back within 0.05s"


class Buggy(Target):
    """A target with a bug: an exception that is neither GatewayError nor ValueError."""

    async def execute(self, command: str, payload: bytes) -> None:
        raise ZeroDivisionError("a bug, not a refusal")


async def test_an_unexpected_exception_is_an_internal_error_reply_never_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 21 (1): an exception outside (GatewayError, ValueError) escaped the router and
    ended the MQTT session. Now it is `error: internal`, its traceback logged once."""
    target = Buggy()
    router = CommandRouter(lambda _d: target, ttl=0)
    with caplog.at_level(logging.ERROR, logger="gateway.commands"):
        for _ in range(3):
            assert await router.handle(Command("boiler", "raw", b"x")) == "error: internal"
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert len(tracebacks) == 1
    assert "ZeroDivisionError" in caplog.text


async def test_waiters_for_a_down_device_are_bounded_and_hold_no_slot() -> None:
    """Issue 21 (14): commands waiting (command_ttl) for a device that is down took every slot;
    now they wait outside the slots, at most COMMANDS_WAITING_PER_DEVICE per device."""
    down, up = Target(up=False), Target()
    router = CommandRouter({"down": down, "up": up}.get, ttl=3600)
    async with asyncio.timeout(10):
        waiting = [
            asyncio.create_task(router.handle(Command("down", "raw", b"w%d" % i)))
            for i in range(COMMANDS_WAITING_PER_DEVICE)
        ]
        await asyncio.sleep(0)  # every one is waiting for its device now
        over = await router.handle(Command("down", "raw", b"one too many"))
        assert over.startswith("error: busy")
        for _ in range(COMMANDS_CONCURRENT + 1):  # more than the slots: none is held
            assert await router.handle(Command("up", "raw", b"now")) == "ok"
        down.up.set()
        assert await asyncio.gather(*waiting) == ["ok"] * COMMANDS_WAITING_PER_DEVICE
    assert len(down.executed) == COMMANDS_WAITING_PER_DEVICE


def test_metric_labels_are_configured_devices_or_unknown() -> None:
    """Issue 21 (6): a label per made-up device id grew /metrics without bound."""
    target = Target()
    router = CommandRouter(lambda d: target if d == "boiler" else None, ttl=0)
    assert router.label("boiler") == "boiler"
    assert router.label("made-up-17") == "unknown"
    assert result_of("ok") == result_of("ok: relay = 1 (device answered on)") == "ok"
    assert result_of("error: internal") == "bug"
    assert result_of("error: busy, too many commands waiting") == "busy"
    assert result_of("error: no device 'x' accepts commands") == "error"


@pytest.mark.parametrize("device", ["a\nINFO forged line", "\x1b[2J\x1b[31mred", "x\u202eevil"])
async def test_a_command_topic_cannot_write_control_characters_into_the_log(
    caplog: pytest.LogCaptureFixture, device: str
) -> None:
    """A device id or command name comes from the topic, which anyone with publish rights
    chooses: printed raw, a newline forges a log line and an ANSI escape rewrites the
    operator's terminal. The log shows them escaped."""
    target = Buggy()
    router = CommandRouter(lambda d: target if d == "boiler" else None, ttl=0)
    with caplog.at_level(logging.INFO, logger="gateway.commands"):
        await router.handle(Command(device, "raw", b"x"))
        await router.handle(Command("boiler", device, b"x"))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    for message in messages:
        assert message.isprintable(), message
