"""The whole gateway in process: a real mosquitto and real ptys, the lifecycle's phases driven
one by one, and a reload applied through its plan (no subprocess, no SIGHUP)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    MqttBroker,
    SerialPair,
    SerialPairFactory,
    Subscriber,
    gateway_config,
    serial_device,
)

from gateway.config import Config
from gateway.lifecycle import Gateway
from gateway.reload import plan_reload

pytestmark = pytest.mark.timeout(30)

PREFIX = "gateway"


def make_config(broker: MqttBroker, tmp_path: Path, pairs: dict[str, SerialPair]) -> Config:
    raw: dict[str, Any] = gateway_config(
        broker,
        [serial_device(name, pair) for name, pair in pairs.items()],
        state_dir=tmp_path / "state",
    )
    raw["metrics"] = {"enabled": False}
    return Config.model_validate(raw)


async def until(check: Callable[[], object], what: str, within: float = 10.0) -> None:
    """Poll state that has no event to wait on (the subscriber's thread, the links)."""
    try:
        async with asyncio.timeout(within):
            while not check():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def up(gw: Gateway, link: str) -> bool:
    status = gw.links.get(link)
    return status is not None and status.state == "up"


async def delivered(sub: Subscriber, pair: SerialPair, device: str, value: int) -> None:
    """Write a line until its reading arrives at the broker (a fresh pty may drop the first)."""
    topic = f"{PREFIX}/{device}/seq"

    def seen() -> bool:
        return any(m.topic == topic and m.value == value for m in sub.messages)

    for _ in range(50):
        pair.write(f"seq={value}\n".encode())
        try:
            await until(seen, f"{topic}={value}", within=0.2)
        except AssertionError:
            continue
        return
    raise AssertionError(f"{topic}={value} never arrived")


async def test_the_gateway_in_process_starts_reloads_by_plan_and_shuts_down(
    broker: MqttBroker,
    make_serial_pair: SerialPairFactory,
    subscriber: Subscriber,
    tmp_path: Path,
) -> None:
    pairs = {"a": make_serial_pair("A"), "b": make_serial_pair("B")}
    gw = Gateway(make_config(broker, tmp_path, {"a": pairs["a"]}))
    async with AsyncExitStack() as stack:
        await gw.startup(stack, signals=False)
        await until(lambda: up(gw, "mqtt") and up(gw, "serial:a"), "mqtt and serial:a up")
        await delivered(subscriber, pairs["a"], "a", 1)
        starts_a = gw.links["serial:a"].starts

        # Reload: b added, a kept (its port stays open, its link is not re-entered).
        new = make_config(broker, tmp_path, pairs)
        plan = plan_reload(gw.cfg, new)
        assert plan.start == ("serial:b",)
        assert plan.keep == ("mqtt", "serial:a")
        await gw.apply(plan, new)
        await until(lambda: up(gw, "serial:b"), "serial:b up")
        await delivered(subscriber, pairs["b"], "b", 2)
        await delivered(subscriber, pairs["a"], "a", 3)
        assert gw.links["serial:a"].starts == starts_a

        # Reload: a removed; its link stops, b and the session stay.
        new = make_config(broker, tmp_path, {"b": pairs["b"]})
        plan = plan_reload(gw.cfg, new)
        assert plan.stop == ("serial:a",)
        await gw.apply(plan, new)
        assert "serial:a" not in gw.supervisor
        assert gw.links["serial:a"].state == "stopped"
        await delivered(subscriber, pairs["b"], "b", 4)

        await gw.shutdown()
        assert gw.links["mqtt"].state == "stopped"
    assert gw.outbox is not None
    assert len(gw.outbox) == 0  # everything was acknowledged before the session stopped
