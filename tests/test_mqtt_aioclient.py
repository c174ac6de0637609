"""GatewayClient (gateway/mqtt/aioclient.py): aiomqtt plus what the session needs, against real
mosquitto. The first test fails loudly when an aiomqtt or paho release moves an internal the
adapter relies on; the rest check each addition in behaviour."""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import pytest
from helpers import Broker
from paho.mqtt.enums import CallbackAPIVersion

from gateway.mqtt.aioclient import INTERNALS, GatewayClient
from gateway.mqtt.errors import ConnectionLostError, PacketTooLargeError

pytestmark = pytest.mark.timeout(30)


async def test_every_internal_the_adapter_uses_is_still_there() -> None:
    """If this fails, aiomqtt or paho changed underneath gateway/mqtt/aioclient.py: read their
    new source, adapt the adapter, and move the pins in pyproject.toml."""
    client = aiomqtt.Client("127.0.0.1", 1)
    instances: dict[type, object] = {aiomqtt.Client: client, paho.Client: client._client}
    for cls, names in INTERNALS.items():
        missing = [n for n in names if not hasattr(instances[cls], n)]
        assert not missing, f"{cls.__module__}.{cls.__qualname__} no longer has {missing}"
    # The callbacks the adapter overrides must keep the parameters it passes on.
    for name in ("_on_publish", "_on_connect", "_on_disconnect", "_on_socket_open"):
        ours = inspect.signature(getattr(GatewayClient, name)).parameters
        theirs = inspect.signature(getattr(aiomqtt.Client, name)).parameters
        assert list(ours) == list(theirs), name
    assert paho.Client(CallbackAPIVersion.VERSION2).max_inflight_messages == 20


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Acks:
    """What on_acks was given, one list per call; `wait(n)` until n acknowledgements came."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []
        self._more = asyncio.Event()

    def __call__(self, batch: list[tuple[int, int]]) -> None:
        self.batches.append(batch)
        self._more.set()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def total(self) -> int:
        return sum(map(len, self.batches))

    async def wait(self, n: int, seconds: float = 10.0) -> None:
        async with asyncio.timeout(seconds):
            while self.total < n:
                self._more.clear()
                await self._more.wait()


async def iterate_messages(client: GatewayClient) -> None:
    """Iterate `client.messages` until it raises (the disconnect signal), at most 5 s."""
    async with asyncio.timeout(5):
        async for _ in client.messages:
            pass


@asynccontextmanager
async def connected(broker: Broker, acks: Acks, **kw: Any) -> AsyncIterator[GatewayClient]:
    client = GatewayClient(
        broker.host, broker.port, on_acks=acks, connect_timeout=5.0, timeout=5.0, **kw
    )
    async with client:
        yield client


async def test_publishes_do_not_wait_and_their_acks_arrive_in_batches(broker: Broker) -> None:
    acks = Acks()
    async with connected(broker, acks) as client:
        mids = [client.publish_nowait("t/x", b"%d" % i, 1) for i in range(2000)]
        assert len(set(mids)) == 2000  # beyond paho's default in-flight limit of 20
        await acks.wait(2000, seconds=20)
    got = [mid for batch in acks for mid, _ in batch]
    assert sorted(got) == sorted(mids)
    assert all(code == 0 for batch in acks for _, code in batch)
    assert len(acks) < 2000 / 4  # many per loop turn, not one callback per message


async def test_qos0_counts_as_acknowledged_once_written(broker: Broker) -> None:
    acks = Acks()
    async with connected(broker, acks) as client:
        mids = {client.publish_nowait("t/x", b"v", 0) for _ in range(50)}
        await acks.wait(50, seconds=10)
    assert {mid for batch in acks for mid, _ in batch} == mids


async def test_mqtt5_connack_limits_are_kept_and_honoured(broker: Broker) -> None:
    broker.reconfigure("max_inflight_messages 7", "max_packet_size 1000")
    acks = Acks()
    async with connected(broker, acks, protocol=aiomqtt.ProtocolVersion.V5) as client:
        assert client.receive_maximum == 7
        assert client.maximum_packet_size == 1000
        with pytest.raises(PacketTooLargeError, match="maximum packet size"):
            client.publish_nowait("t/x", b"x" * 2000, 1)
        client.publish_nowait("t/x", b"x" * 100, 1)  # a small one still goes
        await acks.wait(1)


async def test_a_refusal_reaches_on_acks_with_its_reason_code(
    broker: Broker, tmp_path: Path
) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite allowed/#\n")
    broker.reconfigure(f"acl_file {acl}")
    acks = Acks()
    async with connected(broker, acks, protocol=aiomqtt.ProtocolVersion.V5) as client:
        ok = client.publish_nowait("allowed/x", b"1", 1)
        denied = client.publish_nowait("denied/x", b"1", 1)
        await acks.wait(2, seconds=10)
    codes = dict(pair for batch in acks for pair in batch)
    assert codes[ok] < 0x80  # 0x10 "no matching subscribers" is a success
    assert codes[denied] >= 0x80  # not a delivery: 0x87 not authorized


async def test_control_publishes_fail_at_once_when_the_broker_dies(broker: Broker) -> None:
    acks = Acks()
    # aiomqtt's own timeout is long: a pending control must not wait for it.
    async with connected(broker, acks) as client:
        assert await client.publish_control("t/c", b"1", 1) == 0
        broker.freeze()  # nothing will acknowledge these
        try:
            pending = [client.publish_control("t/c", b"%d" % i, 1) for i in range(100)]
            await asyncio.sleep(0.2)
            assert not any(f.done() for f in pending)
            client.abort()  # what the ack watchdog does
            done, _ = await asyncio.wait(pending, timeout=5)
        finally:
            broker.thaw()
        assert len(done) == 100
        assert all(isinstance(f.exception(), ConnectionLostError) for f in pending)
        with pytest.raises(aiomqtt.MqttError):
            await iterate_messages(client)


async def test_a_killed_broker_ends_the_message_loop_promptly(broker: Broker) -> None:
    acks = Acks()
    async with connected(broker, acks) as client:
        control = client.publish_control("t/c", b"1", 1)
        await control
        broker.kill()
        with pytest.raises(aiomqtt.MqttError):
            await iterate_messages(client)
        later = client.publish_control("t/c", b"2", 1)
        with pytest.raises(ConnectionLostError):
            await later
        with pytest.raises(ConnectionLostError):
            client.publish_nowait("t/x", b"1", 1)


async def test_a_failed_connect_leaves_no_socket_open() -> None:
    """A broker that accepts TCP and never answers CONNECT: the attempt times out, and the
    socket paho opened is closed (aiomqtt alone leaves it open)."""
    held: list[asyncio.StreamWriter] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    before = _fds()
    for _ in range(3):
        client = GatewayClient("127.0.0.1", port, on_acks=lambda _a: None, connect_timeout=2.0)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await client.__aenter__()
        await asyncio.sleep(0.05)
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()
    await asyncio.sleep(0.05)
    assert _fds() <= before, "a socket stayed open after failed connects"
