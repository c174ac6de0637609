"""The bounded queue between device links and the MQTT session.

Overflow policy: links must never wait on publishing (a reader that waits stops reading its port
and the kernel drops bytes instead), so `put` never blocks. When the queue is full the oldest
queued reading is dropped (default: fresh data matters more for sensors) or the new one, and the
drop is counted per device (`gateway_readings_dropped_total{reason="queue_full"}`).

Readings taken by the session stay "in flight" until acknowledged; a session that loses its
connection gives them back with `requeue`, in their original order, so nothing taken is lost.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import Literal

from gateway.metrics import Metrics
from gateway.models import Reading


class ReadingQueue:
    def __init__(
        self,
        size: int,
        overflow: Literal["drop_oldest", "drop_newest"],
        metrics: Metrics,
    ) -> None:
        self._items: deque[Reading] = deque()
        self._size = size
        self._overflow = overflow
        self._metrics = metrics
        self._inflight = 0
        self._nonempty = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def inflight(self) -> int:
        return self._inflight

    def put(self, reading: Reading) -> None:
        """Accept a reading without ever waiting."""
        if self._closed:
            self._drop(reading, "shutdown")
            return
        if len(self._items) >= self._size:
            if self._overflow == "drop_newest":
                self._drop(reading, "queue_full")
                return
            self._drop(self._items.popleft(), "queue_full")
        self._items.append(reading)
        self._changed()

    def close(self) -> None:
        """Stop intake (shutdown): later puts are dropped and counted."""
        self._closed = True

    async def take(self, limit: int) -> list[Reading]:
        """Wait for at least one reading; take up to `limit`, which become in flight."""
        while not self._items:
            await self._nonempty.wait()
        n = min(limit, len(self._items))
        batch = [self._items.popleft() for _ in range(n)]
        self._inflight += n
        self._changed()
        return batch

    def ack(self, count: int = 1) -> None:
        self._inflight -= count
        self._changed()

    def requeue(self, readings: Iterable[Reading]) -> None:
        """Give unacknowledged readings back, ahead of newer ones, keeping their order. The bound
        may be exceeded briefly here: these readings were already accepted."""
        items = list(readings)
        self._items.extendleft(reversed(items))
        self._inflight -= len(items)
        self._changed()

    async def wait_drained(self) -> None:
        """Wait until nothing is queued or in flight."""
        await self._drained.wait()

    def _drop(self, reading: Reading, reason: str) -> None:
        self._metrics.readings_dropped.labels(reading.device, reason).inc()

    def _changed(self) -> None:
        if self._items:
            self._nonempty.set()
        else:
            self._nonempty.clear()
        if self._items or self._inflight:
            self._drained.clear()
        else:
            self._drained.set()
        self._metrics.queue_depth.set(len(self._items))
        self._metrics.inflight.set(self._inflight)
