"""restore_state against a broker far away, in-process (real mosquitto behind a delaying TCP
proxy): the state messages of many devices go out together and are awaited together, and a
control publish that times out is a TransientLinkError, never a crash."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from faultproxy import ThreadedFaultProxy
from helpers import Broker, SubscriberFactory, wait_until

from gateway.config import MqttSection
from gateway.errors import TransientLinkError
from gateway.metrics import Metrics
from gateway.mqtt.session import Availability, MqttSession
from gateway.outbox import Outbox

pytestmark = pytest.mark.timeout(60)
ONE_WAY = 0.05  # seconds each way: a broker 100 ms away


@pytest.fixture
def far_proxy(broker: Broker) -> Iterator[ThreadedFaultProxy]:
    proxy = ThreadedFaultProxy(broker.host, broker.port, delay=ONE_WAY)
    try:
        yield proxy
    finally:
        proxy.close()


def session(port: int, outbox: Outbox, availability: Availability, **mqtt: object) -> MqttSession:
    cfg = MqttSection.model_validate({"port": port, "connect_timeout": 5.0, **mqtt})
    return MqttSession(cfg, "gw1", outbox, Metrics(), availability=availability)


async def test_two_hundred_devices_connect_in_a_few_round_trips(
    far_proxy: ThreadedFaultProxy, outbox: Outbox, make_subscriber: SubscriberFactory
) -> None:
    sub = make_subscriber("gateway/+/availability")
    availability = Availability()
    for i in range(200):
        availability.set(f"dev{i:03d}", online=i % 2 == 0)
    began = time.monotonic()
    async with session(far_proxy.port, outbox, availability):
        took = time.monotonic() - began
    print(f"connect + restore_state of 200 devices, 100 ms round trip: {took:.2f}s")
    # One by one it would be 200 round trips (20 s); together it is about three.
    assert took < 2.0
    wait_until(lambda: len(sub.messages) >= 200 or None, 10, "200 availability messages")
    got = {m.topic.split("/")[1]: m.text for m in sub.messages}
    assert got == {f"dev{i:03d}": "online" if i % 2 == 0 else "offline" for i in range(200)}


async def test_a_control_publish_that_times_out_is_a_transient_link_error(
    broker: Broker, outbox: Outbox
) -> None:
    """The state messages are not acknowledged within publish_timeout (a 0.6 s round trip
    against 0.3 s): the session says `timeout`, as any broker trouble, not a bug."""
    proxy = ThreadedFaultProxy(broker.host, broker.port, delay=0.3)
    try:
        availability = Availability()
        availability.set("boiler", online=True)
        with pytest.raises(TransientLinkError) as caught:
            async with session(proxy.port, outbox, availability, publish_timeout=0.3):
                pass
    finally:
        proxy.close()
    assert caught.value.kind == "timeout"
    assert "restoring session state" in str(caught.value)
