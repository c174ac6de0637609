"""The outbox's bounds: `max_bytes` (drop the oldest, or the newest) and `max_age`.

The bounds say what to drop; the outbox drops it (counts it, forgets it, deletes it from disk).
They read the window and the store, and change only where the backlog starts (the rows they
return leave it). Nothing here scans the table: the oldest records are at the front of the
window's lists and at the front of the backlog's id range on disk, which SQLite finds by its
primary key. (The expiry and the age gauge used to scan: 54 and 48 ms at 400k rows, a stall of
every link each time.)
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Container

from gateway.config import OutboxConfig
from gateway.limits import AGE_CHECK_INTERVAL, DROP_BATCH
from gateway.outbox.records import Record
from gateway.outbox.store import Store, StoreError
from gateway.outbox.window import Window

log = logging.getLogger(__name__)


class Bounds:
    def __init__(
        self, cfg: OutboxConfig, clock: Callable[[], float], store: Store, window: Window
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.store = store
        self.window = window
        self._last_age_check = 0.0
        self._first_ts: tuple[int, float | None] = (0, None)  # (backlog first id, its ts)

    def make_room(self, size: int, total: int, deletes: Container[int]) -> list[Record] | None:
        """What to drop so that a record of `size` fits; None: the new record is dropped."""
        cfg = self.cfg
        if cfg.overflow == "drop_newest":
            return None
        # At least 1% of max_bytes at a time, so a full outbox does not search per reading.
        need = max(total + size - cfg.max_bytes, cfg.max_bytes // 100)
        freed = 0

        def enough(record: Record) -> bool:
            nonlocal freed
            if freed >= need:
                return False
            freed += record.size
            return True

        w = self.window
        dropped = list(itertools.takewhile(enough, w.ready))
        dropped += self._backlog_front(enough, deletes)
        dropped += itertools.takewhile(enough, list(w.tail.values()))
        return dropped

    def expired(self, deletes: Container[int]) -> list[Record]:
        """What is older than max_age (looked at most once a second)."""
        now = self.clock()
        if now - self._last_age_check < AGE_CHECK_INTERVAL:
            return []
        self._last_age_check = now
        cutoff = now - self.cfg.max_age

        def old(record: Record) -> bool:
            return record.ts < cutoff

        w = self.window
        expired = list(itertools.takewhile(old, w.ready))
        first_ts = self._backlog_ts()
        if first_ts is not None and first_ts < cutoff:
            expired += self._backlog_front(old, deletes)
        expired += itertools.takewhile(old, list(w.tail.values()))
        return expired

    def _backlog_front(
        self, keep_going: Callable[[Record], bool], deletes: Container[int]
    ) -> list[Record]:
        """Records from the front of the backlog while `keep_going` says so; they leave it."""
        w = self.window
        taken: list[Record] = []
        while w.backlog:
            try:
                rows = self.store.read(w.first, w.last, DROP_BATCH)
            except StoreError as exc:
                log.warning("outbox: cannot read the backlog to apply a bound: %s", exc)
                break
            for row in rows:
                if row.id in deletes:
                    continue
                if not keep_going(row):
                    return taken
                taken.append(row)
                w.advance_backlog(row.id)
            if len(rows) < DROP_BATCH:
                w.end_backlog()
        return taken

    def _backlog_ts(self) -> float | None:
        """`ts` of the backlog's first row, looked up once per position of its front."""
        w = self.window
        if not w.backlog or not self.store.is_open:
            return None
        if self._first_ts[0] != w.first:
            try:
                self._first_ts = (w.first, self.store.first_ts(w.first, w.last))
            except StoreError:
                return None
        return self._first_ts[1]

    def oldest_ts(self) -> float | None:
        w = self.window
        candidates = [r.ts for r in w.inflight.values()]
        if w.ready:
            candidates.append(w.ready[0].ts)
        if (ts := self._backlog_ts()) is not None:
            candidates.append(ts)
        if w.tail:
            candidates.append(next(iter(w.tail.values())).ts)
        return min(candidates) if candidates else None
