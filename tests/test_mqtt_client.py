"""The MQTT connection (gateway/mqtt/client.py) against a real mosquitto, checked by an
independent client (paho, in tests/helpers.Subscriber)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from helpers import Broker, Subscriber

from gateway.mqtt import wire
from gateway.mqtt.client import (
    BrokerSilentError,
    ConnectionClosedError,
    ConnectRefusedError,
    MqttConnection,
    RefusedError,
)

Acks = list[tuple[int, int]]


class Inbox:
    """What the connection hands to its owner: acknowledgements and messages."""

    def __init__(self) -> None:
        self.acks: Acks = []
        self.reads = 0  # on_acks calls: one per read with acknowledgements in it
        self.messages: list[wire.Message] = []
        self.changed = asyncio.Event()

    def on_acks(self, acks: Acks) -> None:
        self.acks += acks
        self.reads += 1
        self.changed.set()

    def on_message(self, message: wire.Message) -> None:
        self.messages.append(message)
        self.changed.set()

    async def wait(self, done: Callable[[], bool], within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while not done():
                self.changed.clear()
                await self.changed.wait()


async def connect(
    broker: Broker, inbox: Inbox, *, v5: bool = False, keepalive: int = 30, client_id: str = "t"
) -> MqttConnection:
    packet = wire.connect_packet(client_id, keepalive=keepalive, v5=v5)
    async with asyncio.timeout(10):
        return await MqttConnection.open(
            broker.host,
            broker.port,
            packet,
            keepalive=keepalive,
            v5=v5,
            on_acks=inbox.on_acks,
            on_message=inbox.on_message,
        )


async def publish_all(
    conn: MqttConnection, inbox: Inbox, count: int, qos: int, window: int
) -> list[int]:
    """Publish `w/0`..: keeps `window` unacknowledged, as the session does (mosquitto's
    default receive maximum is 20; beyond it, it drops QoS 2 messages of MQTT 3.1.1 clients)."""
    ids: list[int] = []
    for i in range(count):
        if qos:
            await inbox.wait(lambda: len(ids) - len(inbox.acks) < window)
        ids.append(conn.publish(f"w/{i}", b"%d" % i, qos))
    return ids


@pytest.fixture
async def inbox() -> Inbox:
    return Inbox()  # (made on the test's event loop)


@pytest.mark.parametrize(("v5", "qos"), [(False, 1), (True, 1), (False, 2), (True, 0)])
async def test_a_window_of_publishes_is_acknowledged_and_delivered(
    broker: Broker, subscriber: Subscriber, inbox: Inbox, v5: bool, qos: int
) -> None:
    conn = await connect(broker, inbox, v5=v5)
    try:
        ids = await publish_all(conn, inbox, 1000, qos, window=20)
        if qos:
            assert len(set(ids)) == 1000
            await inbox.wait(lambda: len(inbox.acks) == 1000)
            assert sorted(pid for pid, _ in inbox.acks) == sorted(ids)
            assert all(code == 0 for _, code in inbox.acks)
            # Acknowledgements arrive in bulk: far fewer reads than packets.
            assert inbox.reads < 1000
            assert conn.outstanding == 0
        else:
            assert ids == [0] * 1000
        await asyncio.to_thread(
            subscriber.wait_for, lambda m: m.topic == "w/999", 10, "the last publish"
        )
        assert len({m.topic for m in subscriber.messages if m.topic.startswith("w/")}) == 1000
    finally:
        await conn.disconnect()


async def test_control_publish_subscribe_and_an_incoming_message(
    broker: Broker, subscriber: Subscriber, inbox: Inbox
) -> None:
    conn = await connect(broker, inbox, v5=True)
    try:
        assert await conn.subscribe("cmd/#", 1) == 1
        await conn.publish_and_wait("status", b"online", 1, retain=True)
        await asyncio.to_thread(subscriber.wait_for, lambda m: m.topic == "status", 5, "status")
        props = {wire.RESPONSE_TOPIC: "reply/1", wire.CORRELATION_DATA: b"\x01\x02"}
        await conn.publish_and_wait("cmd/x", b"go", 1, properties=props)
        await inbox.wait(lambda: bool(inbox.messages))
        message = inbox.messages[0]
        assert (message.topic, message.payload, message.qos) == ("cmd/x", b"go", 1)
        assert message.properties == props
    finally:
        await conn.disconnect()


async def test_a_quiet_line_is_kept_alive_by_pings(broker: Broker, inbox: Inbox) -> None:
    conn = await connect(broker, inbox, keepalive=1)
    try:
        opened = conn.last_in
        async with asyncio.TaskGroup() as tg:
            pinger = tg.create_task(conn.keepalive())
            await asyncio.sleep(3.5)  # > 1.5 x keepalive: the broker would have dropped us
            assert not pinger.done()
            pinger.cancel()
        assert not conn.is_closed
        assert conn.last_in > opened  # PINGRESPs came back
        await conn.publish_and_wait("still/here", b"1")
    finally:
        await conn.disconnect()


async def test_a_frozen_broker_is_detected_by_keepalive(broker: Broker, inbox: Inbox) -> None:
    conn = await connect(broker, inbox, keepalive=1)
    try:
        broker.freeze()
        began = time.monotonic()
        with pytest.raises(BrokerSilentError, match="nothing from the broker"):
            async with asyncio.timeout(10):
                await conn.keepalive()
        # 1.5 x keepalive after the last packet; the bound only guards against "never".
        assert time.monotonic() - began < 5
    finally:
        broker.thaw()
        conn.abort()


async def test_a_killed_broker_fails_waiters_and_closes(broker: Broker, inbox: Inbox) -> None:
    conn = await connect(broker, inbox)
    broker.freeze()
    waiting = asyncio.create_task(conn.publish_and_wait("a", b"1"))
    await asyncio.sleep(0.1)
    broker.kill()  # (SIGKILL ends the frozen process: the socket closes)
    with pytest.raises(ConnectionClosedError, match="connection lost"):
        await waiting
    with pytest.raises(ConnectionClosedError):
        await conn.wait_closed()
    with pytest.raises(ConnectionClosedError, match="closed"):
        conn.publish("a", b"2", 1)


async def test_the_broker_limits_of_mqtt_5_are_honoured(broker: Broker, inbox: Inbox) -> None:
    broker.reconfigure("max_inflight_messages 5", "max_packet_size 200")
    conn = await connect(broker, inbox, v5=True)
    try:
        assert conn.receive_maximum == 5
        assert conn.maximum_packet_size == 200
        with pytest.raises(RefusedError, match="maximum packet size"):
            conn.publish("big", b"x" * 300, 1)
        assert conn.outstanding == 0  # the refused publish holds no packet id
        await conn.publish_and_wait("small", b"x" * 50)  # the connection is fine
    finally:
        await conn.disconnect()


@pytest.mark.parametrize("v5", [False, True])
async def test_a_refused_connect_says_why(broker: Broker, inbox: Inbox, v5: bool) -> None:
    broker.reconfigure("allow_anonymous false")
    with pytest.raises(ConnectRefusedError, match="not authorized") as caught:
        await connect(broker, inbox, v5=v5)
    assert caught.value.auth


async def test_malformed_bytes_from_the_broker_close_the_connection(inbox: Inbox) -> None:
    """A fake broker that accepts, then sends a packet type a broker never sends."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)  # CONNECT
        writer.write(b"\x20\x02\x00\x00")  # CONNACK, accepted
        await asyncio.sleep(0.1)
        writer.write(b"\x10\x00")  # a CONNECT, from the broker
        await writer.drain()
        await reader.read(100)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        packet = wire.connect_packet("t", keepalive=30, v5=False)
        conn = await MqttConnection.open(
            "127.0.0.1",
            port,
            packet,
            keepalive=30,
            v5=False,
            on_acks=inbox.on_acks,
            on_message=inbox.on_message,
        )
        with pytest.raises(ConnectionClosedError, match="malformed packet"):
            async with asyncio.timeout(5):
                await conn.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
