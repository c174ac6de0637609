"""The session in-process against real mosquitto, checked by an independent paho subscriber:
every QoS on both protocol versions, the window against the broker's limits, batches, a
refused connect, and a silent broker on an idle line."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from helpers import Broker, Subscriber, SubscriberFactory, put_reading, wait_until

from gateway.commands import CommandRouter
from gateway.config import BatchConfig, MqttSection
from gateway.errors import TransientLinkError
from gateway.metrics import Metrics
from gateway.models import Reading
from gateway.mqtt.session import MqttSession
from gateway.mqtt.topics import reading_topic
from gateway.outbox import Outbox

pytestmark = pytest.mark.timeout(60)


def make_session(
    broker: Broker, outbox: Outbox, batches: dict[str, BatchConfig] | None = None, **mqtt: object
) -> MqttSession:
    cfg = MqttSection.model_validate(
        {"host": broker.host, "port": broker.port, "connect_timeout": 5, **mqtt}
    )
    return MqttSession(cfg, "gw1", outbox, Metrics(), batches=batches)


@asynccontextmanager
async def running(session: MqttSession) -> AsyncIterator[asyncio.Task[None]]:
    async with session:
        task = asyncio.create_task(session.run(), name="test-session-run")
        try:
            yield task
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


def put(outbox: Outbox, n: int, qos: int, device: str = "dev") -> None:
    """Accept n readings and commit them now (so that wait_drained waits for them)."""
    for i in range(1, n + 1):
        reading = Reading(device, "n", i, None, time.time())
        put_reading(outbox, reading, reading_topic("gateway", reading), qos)
    outbox.flush()


def values(sub: Subscriber, device: str = "dev") -> list[int]:
    return [json.loads(m.payload)["value"] for m in sub.on_topic(f"gateway/{device}/n")]


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_every_qos_on_both_protocols_delivers_in_order(
    broker: Broker,
    outbox: Outbox,
    make_subscriber: SubscriberFactory,
    protocol: str,
    qos: int,
) -> None:
    sub = make_subscriber("gateway/dev/n")
    session = make_session(broker, outbox, protocol=protocol, qos=qos)
    async with running(session):
        put(outbox, 1000, qos)
        async with asyncio.timeout(20):
            await outbox.wait_drained()
    wait_until(lambda: len(values(sub)) >= 1000 or None, 10, "1000 readings")
    assert values(sub) == list(range(1, 1001))


async def test_qos2_over_3_1_1_stays_within_what_mosquitto_takes(
    broker: Broker, outbox: Outbox, make_subscriber: SubscriberFactory
) -> None:
    """mosquitto answers a QoS 2 publish beyond its max_inflight_messages (20) with a PUBREC
    that looks like success and drops it; over 3.1.1 it cannot tell us the limit, so the
    session keeps at most 20 in flight and nothing is lost."""
    sub = make_subscriber("gateway/dev/n")
    async with running(make_session(broker, outbox, qos=2, inflight=256)):
        put(outbox, 2000, 2)
        async with asyncio.timeout(30):
            await outbox.wait_drained()
    wait_until(lambda: len(values(sub)) >= 2000 or None, 10, "2000 readings")
    assert values(sub) == list(range(1, 2001))


async def test_the_mqtt5_receive_maximum_lowers_the_window(
    broker: Broker, outbox: Outbox, make_subscriber: SubscriberFactory
) -> None:
    broker.reconfigure("max_inflight_messages 5")
    sub = make_subscriber("gateway/dev/n")
    session = make_session(broker, outbox, protocol="5", inflight=256)
    async with running(session):
        put(outbox, 500, 1)
        most = 0
        async with asyncio.timeout(20):
            while len(outbox):
                most = max(most, session._publisher.inflight)
                await asyncio.sleep(0)
    assert 0 < most <= 5
    wait_until(lambda: len(values(sub)) >= 500 or None, 10, "500 readings")
    assert values(sub) == list(range(1, 501))


async def test_batches_carry_every_reading_and_one_ack_deletes_them_all(
    broker: Broker, outbox: Outbox, make_subscriber: SubscriberFactory
) -> None:
    sub = make_subscriber("gateway/dev/batch")
    batch = BatchConfig(max_items=100, max_delay=0.05)
    session = make_session(broker, outbox, batches={"dev": batch})
    async with running(session):
        put(outbox, 1050, 1)
        async with asyncio.timeout(20):
            await outbox.wait_drained()
    wait_until(
        lambda: sum(len(json.loads(m.payload)) for m in sub.messages) >= 1050 or None,
        10,
        "1050 batched readings",
    )
    arrays = [json.loads(m.payload) for m in sub.messages]
    assert [item["value"] for array in arrays for item in array] == list(range(1, 1051))
    assert all(1 <= len(array) <= 100 for array in arrays)
    assert len(arrays) <= 1050 // 100 + 3  # full batches, and the rest after max_delay


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_a_refused_connect_is_an_auth_error_with_advice(
    broker: Broker, outbox: Outbox, protocol: str
) -> None:
    broker.reconfigure("allow_anonymous false")
    session = make_session(broker, outbox, protocol=protocol, username="who", password="x")
    with pytest.raises(TransientLinkError) as caught:
        async with session:
            pass
    assert caught.value.kind == "auth"
    assert "mqtt.username" in str(caught.value)


async def test_a_refused_port_says_so(outbox: Outbox, tmp_path: Path) -> None:
    from helpers import free_port  # noqa: PLC0415

    cfg = MqttSection.model_validate({"port": free_port(), "connect_timeout": 2})
    with pytest.raises(TransientLinkError) as caught:
        async with MqttSession(cfg, "gw1", outbox, Metrics()):
            pass
    assert caught.value.kind == "refused"


async def test_a_silent_broker_on_an_idle_line_is_noticed_by_keepalive(
    broker: Broker, outbox: Outbox
) -> None:
    """No reading in flight, so the ack watchdog has nothing to wait for: paho's keepalive
    pings, gets no answer and drops the connection after about 2 x keepalive."""
    session = make_session(broker, outbox, keepalive=1)
    async with session:
        broker.freeze()
        began = time.monotonic()
        try:
            with pytest.raises(TransientLinkError) as caught:
                async with asyncio.timeout(15):
                    await session.run()
            noticed = time.monotonic() - began
        finally:
            broker.thaw()
    print(f"silent broker noticed after {noticed:.2f}s with keepalive 1 s")
    assert caught.value.kind in ("timeout", "mqtt")


async def test_a_batch_over_the_brokers_maximum_packet_size_is_split(
    broker: Broker, outbox: Outbox, make_subscriber: SubscriberFactory
) -> None:
    """100 readings of ~75 bytes do not fit mosquitto's 1,000-byte limit: the batch goes out
    in halves (of halves) that do, and every reading arrives once, in order."""
    broker.reconfigure("max_packet_size 1000")
    sub = make_subscriber("gateway/dev/batch")
    batch = BatchConfig(max_items=100, max_delay=0.05)
    session = make_session(broker, outbox, batches={"dev": batch}, protocol="5")
    async with running(session):
        put(outbox, 300, 1)
        async with asyncio.timeout(20):
            await outbox.wait_drained()
    wait_until(
        lambda: sum(len(json.loads(m.payload)) for m in sub.messages) >= 300 or None,
        10,
        "300 batched readings",
    )
    assert all(len(m.payload) <= 1000 for m in sub.messages)
    arrays = [json.loads(m.payload) for m in sub.messages]
    assert [item["value"] for array in arrays for item in array] == list(range(1, 301))


class BuggyTarget:
    """A command target whose `boom` command hits a bug (not a GatewayError or ValueError)."""

    is_up = True

    async def wait_up(self) -> None:
        return None

    async def execute(self, command: str, payload: bytes) -> str | None:
        if command == "boom":
            raise KeyError("a bug in a link")
        return None


async def test_a_bug_in_one_command_is_answered_and_the_session_stays_up(
    broker: Broker, outbox: Outbox, subscriber: Subscriber
) -> None:
    """Issue 21 (1): an exception from one command escaped the command runner's TaskGroup and
    crashed the session ("link mqtt crashed (a bug)"); a retained one crash-looped it. Now it
    is answered `error: internal`, counted `result="bug"`, and the session goes on."""
    target = BuggyTarget()
    router = CommandRouter(lambda d: target if d == "dev" else None, ttl=0)
    cfg = MqttSection.model_validate(
        {"host": broker.host, "port": broker.port, "connect_timeout": 5}
    )
    metrics = Metrics()
    session = MqttSession(cfg, "gw1", outbox, metrics, router=router)

    async def ask(command: str) -> str:
        subscriber._client.publish(f"gateway/dev/set/{command}", b"1", qos=1)
        topic = f"gateway/dev/set/{command}/result"
        reply = await asyncio.to_thread(subscriber.wait_for, lambda m: m.topic == topic)
        return reply.text

    async with running(session) as task:
        assert await ask("boom") == "error: internal"
        assert await ask("fine") == "ok"
        assert not task.done()
    sample = metrics.registry.get_sample_value
    assert sample("gateway_commands_total", {"device": "dev", "result": "bug"}) == 1
    assert sample("gateway_commands_total", {"device": "dev", "result": "ok"}) == 1
