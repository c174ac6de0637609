"""ReadingQueue: overflow policies counted per device, in-flight accounting, requeue order,
wait_drained and shutdown drops."""

from __future__ import annotations

import asyncio
from typing import Literal

import pytest

from gateway.metrics import Metrics
from gateway.models import Reading
from gateway.queue import ReadingQueue

pytestmark = pytest.mark.timeout(10)


def reading(device: str, seq: int) -> Reading:
    return Reading(device=device, sensor="temp", value=float(seq), unit="°C", ts=1000.0 + seq)


def dropped(metrics: Metrics, device: str, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "gateway_readings_dropped_total", {"device": device, "reason": reason}
    )
    return 0.0 if value is None else value


def gauge(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


def make_queue(
    size: int, overflow: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
) -> tuple[ReadingQueue, Metrics]:
    metrics = Metrics()
    return ReadingQueue(size, overflow, metrics), metrics


async def settle() -> None:
    """Let every ready task run until it blocks again."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_drop_oldest_keeps_fresh_readings_and_counts_the_dropped_device() -> None:
    queue, metrics = make_queue(3, "drop_oldest")
    a1, a2 = reading("a", 1), reading("a", 2)
    b1, b2, b3 = reading("b", 1), reading("b", 2), reading("b", 3)
    for r in (a1, a2, b1, b2, b3):
        queue.put(r)

    assert len(queue) == 3
    assert dropped(metrics, "a", "queue_full") == 2.0  # the two oldest were a's
    assert dropped(metrics, "b", "queue_full") == 0.0
    assert gauge(metrics, "gateway_queue_depth") == 3.0
    assert await queue.take(10) == [b1, b2, b3]


async def test_drop_newest_keeps_queued_readings_and_counts_the_new_device() -> None:
    queue, metrics = make_queue(2, "drop_newest")
    a1, a2, b1, c1 = reading("a", 1), reading("a", 2), reading("b", 1), reading("c", 1)
    for r in (a1, a2, b1, c1):
        queue.put(r)

    assert len(queue) == 2
    assert dropped(metrics, "a", "queue_full") == 0.0
    assert dropped(metrics, "b", "queue_full") == 1.0
    assert dropped(metrics, "c", "queue_full") == 1.0
    assert await queue.take(10) == [a1, a2]


async def test_take_ack_and_inflight_accounting() -> None:
    queue, metrics = make_queue(10)
    items = [reading("a", i) for i in range(5)]
    for r in items:
        queue.put(r)

    assert await queue.take(2) == items[:2]
    assert (len(queue), queue.inflight) == (3, 2)
    assert gauge(metrics, "gateway_mqtt_inflight") == 2.0
    assert gauge(metrics, "gateway_queue_depth") == 3.0

    queue.ack()
    assert queue.inflight == 1
    assert await queue.take(10) == items[2:]
    assert (len(queue), queue.inflight) == (0, 4)
    queue.ack(4)
    assert queue.inflight == 0
    assert gauge(metrics, "gateway_mqtt_inflight") == 0.0
    assert gauge(metrics, "gateway_queue_depth") == 0.0


async def test_requeue_puts_readings_back_in_order_ahead_of_newer_ones() -> None:
    queue, _ = make_queue(10)
    items = [reading("a", i) for i in range(6)]
    for r in items[:4]:
        queue.put(r)

    first = await queue.take(2)
    second = await queue.take(1)
    queue.put(items[4])  # arrives while the batches are in flight
    queue.requeue(second)
    queue.requeue(first)  # the session gives back everything unacknowledged, oldest first
    queue.put(items[5])

    assert queue.inflight == 0
    assert await queue.take(100) == items


async def test_requeue_may_exceed_the_bound_but_drops_nothing() -> None:
    queue, metrics = make_queue(2)
    items = [reading("a", i) for i in range(4)]
    queue.put(items[0])
    queue.put(items[1])
    taken = await queue.take(2)
    queue.put(items[2])
    queue.put(items[3])

    queue.requeue(taken)

    assert len(queue) == 4
    assert dropped(metrics, "a", "queue_full") == 0.0
    assert await queue.take(10) == items


async def test_take_waits_for_a_reading() -> None:
    queue, _ = make_queue(10)
    taker = asyncio.create_task(queue.take(5))
    await settle()
    assert not taker.done()

    r = reading("a", 1)
    queue.put(r)
    async with asyncio.timeout(1.0):
        assert await taker == [r]
    assert queue.inflight == 1


async def test_wait_drained_waits_for_queued_and_inflight_readings() -> None:
    queue, _ = make_queue(10)
    async with asyncio.timeout(1.0):
        await queue.wait_drained()  # empty: returns at once

    queue.put(reading("a", 1))
    queue.put(reading("a", 2))
    waiter = asyncio.create_task(queue.wait_drained())
    await settle()
    assert not waiter.done()

    batch = await queue.take(10)
    await settle()
    assert not waiter.done()  # taken is not published: still in flight

    queue.requeue(batch[1:])
    queue.ack()
    await settle()
    assert not waiter.done()

    await queue.take(10)
    queue.ack()
    async with asyncio.timeout(1.0):
        await waiter


async def test_closed_queue_drops_new_readings_as_shutdown() -> None:
    queue, metrics = make_queue(10)
    kept = reading("a", 1)
    queue.put(kept)

    queue.close()
    queue.put(reading("a", 2))
    queue.put(reading("b", 1))

    assert len(queue) == 1
    assert dropped(metrics, "a", "shutdown") == 1.0
    assert dropped(metrics, "b", "shutdown") == 1.0
    assert dropped(metrics, "a", "queue_full") == 0.0
    # What was accepted before closing can still be drained.
    assert await queue.take(10) == [kept]
    queue.ack()
    async with asyncio.timeout(1.0):
        await queue.wait_drained()
