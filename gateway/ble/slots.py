"""A per-adapter limit on simultaneous GATT connections. Links wait for a free slot (as long as
it takes) instead of failing: adapters typically manage only a handful of connections, and
BlueZ reports an exhausted controller with obscure errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from gateway.metrics import Metrics

log = logging.getLogger(__name__)


class ConnectionSlots:
    def __init__(self, adapter: str, limit: int, metrics: Metrics) -> None:
        self.adapter = adapter
        self.limit = limit
        self._free = asyncio.Semaphore(limit)
        self._in_use = metrics.ble_slots_in_use.labels(adapter)
        self._waiters = metrics.ble_slot_waiters.labels(adapter)
        self.holders: set[str] = set()

    @contextlib.asynccontextmanager
    async def hold(self, who: str) -> AsyncIterator[None]:
        if self._free.locked():
            log.info(
                "%s: waiting for a connection slot on %s (%d in use: %s)",
                who,
                self.adapter,
                len(self.holders),
                ", ".join(sorted(self.holders)),
            )
        self._waiters.inc()
        try:
            await self._free.acquire()
        finally:
            self._waiters.dec()
        self.holders.add(who)
        self._in_use.inc()
        try:
            yield
        finally:
            self.holders.discard(who)
            self._in_use.dec()
            self._free.release()
