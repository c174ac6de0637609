"""The outbox's bounds: `max_bytes` (drop the oldest, or the newest) and `max_age`.

Nothing here scans the table: the oldest records are at the front of the window's lists and at
the front of the backlog's id range on disk, which SQLite finds by its primary key. (The expiry
and the age gauge used to scan: 54 and 48 ms at 400k rows, a stall of every link each time.)
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable

from gateway.limits import AGE_CHECK_INTERVAL, DROP_BATCH
from gateway.outbox.records import Record
from gateway.outbox.shared import Shared
from gateway.outbox.store import StoreError

log = logging.getLogger(__name__)


class Bounds:
    def __init__(self, box: Shared) -> None:
        self.box = box
        self._last_age_check = 0.0
        self._first_ts: tuple[int, float | None] = (0, None)  # (backlog first id, its ts)

    def make_room(self, size: int, device: str) -> bool:
        """Apply the overflow policy; False when the new record must be dropped."""
        box = self.box
        if box.cfg.overflow == "drop_newest":
            box._metrics.readings_dropped.labels(device, "outbox_full").inc()
            return False
        # At least 1% of max_bytes at a time, so a full outbox does not search per reading.
        need = max(box.total + size - box.cfg.max_bytes, box.cfg.max_bytes // 100)
        freed = 0

        def enough(record: Record) -> bool:
            nonlocal freed
            if freed >= need:
                return False
            freed += record.size
            return True

        dropped = list(itertools.takewhile(enough, box.window.ready))
        dropped += self._backlog_front(enough)
        dropped += itertools.takewhile(enough, list(box.window.tail.values()))
        self.forget(dropped, "outbox_full")
        return True

    def expire(self) -> None:
        """Drop records older than max_age (checked at most once a second)."""
        box = self.box
        now = box._clock()
        if now - self._last_age_check < AGE_CHECK_INTERVAL:
            return
        self._last_age_check = now
        cutoff = now - box.cfg.max_age

        def old(record: Record) -> bool:
            return record.ts < cutoff

        expired = list(itertools.takewhile(old, box.window.ready))
        first_ts = self._backlog_ts()
        if first_ts is not None and first_ts < cutoff:
            expired += self._backlog_front(old)
        expired += itertools.takewhile(old, list(box.window.tail.values()))
        self.forget(expired, "max_age")

    def _backlog_front(self, keep_going: Callable[[Record], bool]) -> list[Record]:
        """Records from the front of the backlog while `keep_going` says so; they leave it."""
        box, w = self.box, self.box.window
        taken: list[Record] = []
        while w.backlog:
            try:
                rows = box.store.read(w.first, w.last, DROP_BATCH)
            except StoreError as exc:
                log.warning("outbox: cannot read the backlog to apply a bound: %s", exc)
                break
            for row in rows:
                if row.id in box.deletes:
                    continue
                if not keep_going(row):
                    return taken
                taken.append(row)
                w.advance_backlog(row.id)
            if len(rows) < DROP_BATCH:
                w.end_backlog()
        return taken

    def forget(self, dropped: Iterable[Record], reason: str) -> None:
        """Drop records for good: count them, delete them from disk with a later flush."""
        box = self.box
        dropped = list(dropped)
        if not dropped:
            return
        box.window.remove({r.id for r in dropped})
        counter = box._metrics.readings_dropped
        for r in dropped:
            counter.labels(r.device, reason).inc()
            box.total -= r.size
            box.count -= 1
            if box.unwritten.pop(r.id, None) is None:
                box.deletes.add(r.id)  # on disk: delete it like an acknowledged record
        log.warning("outbox: dropped %d oldest reading(s) (%s)", len(dropped), reason)
        box._schedule_deletes(soon=True)
        box._changed()

    def _backlog_ts(self) -> float | None:
        """`ts` of the backlog's first row, looked up once per position of its front."""
        box, w = self.box, self.box.window
        if not w.backlog or not box.store.is_open:
            return None
        if self._first_ts[0] != w.first:
            try:
                self._first_ts = (w.first, box.store.first_ts(w.first, w.last))
            except StoreError:
                return None
        return self._first_ts[1]

    def oldest_ts(self) -> float | None:
        w = self.box.window
        candidates = [r.ts for r in w.inflight.values()]
        if w.ready:
            candidates.append(w.ready[0].ts)
        if (ts := self._backlog_ts()) is not None:
            candidates.append(ts)
        if w.tail:
            candidates.append(next(iter(w.tail.values())).ts)
        return min(candidates) if candidates else None
