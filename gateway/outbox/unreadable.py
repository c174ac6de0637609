"""A backlog the disk cannot read (an I/O error on a read): set aside, retried with backoff.

Without this, new readings waited behind the unreadable rows for as long as the disk failed:
the window publishes nothing newer than a backlog it has not read. Here the backlog's id range
is set aside (`Window.strand`) and newer readings go on as usual (committed first in
`durability: disk`: a read error says nothing about writes, whose own failures switch the mode).
The set-aside rows stay on disk, untouched: a retry every so often (exponential backoff with
jitter, capped at `retry_interval`) reads them back in batches to the front of the ready
queue, so they are delivered late, after newer readings of their device, each with its own `ts`
and `seq`. A restart reads them as an ordinary backlog. Every failed read is counted
(`gateway_outbox_errors_total{kind}`), and while a range waits `/readyz` and `/status` say why
(`Outbox.unreadable_reason`).
"""

from __future__ import annotations

import asyncio
import logging

from gateway.backoff import Backoff, BackoffPolicy
from gateway.limits import BACKLOG_BATCH as READ_BATCH
from gateway.limits import UNREADABLE_FIRST_RETRY as FIRST_RETRY
from gateway.outbox.shared import Shared
from gateway.outbox.store import StoreError

log = logging.getLogger(__name__)


class Unreadable:
    def __init__(self, box: Shared) -> None:
        self.box = box
        interval = box.cfg.retry_interval
        self.backoff = Backoff(BackoffPolicy(initial=interval * FIRST_RETRY, maximum=interval))
        self.reason = ""  # why the last read failed, while a range waits
        self._handle: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> bool:
        return bool(self.box.window.unreadable)

    def failed(self, exc: StoreError) -> None:
        """Reading the backlog failed: set it aside and retry later."""
        box = self.box
        if not self.waiting:
            log.error(
                "outbox: cannot read the backlog from %s (%s); newer readings go on, the "
                "backlog is read again with backoff (up to every %gs)",
                box.path,
                exc,
                box.cfg.retry_interval,
            )
        box.window.strand()
        self.reason = f"{exc.kind}: {exc.why}"
        box._metrics.outbox_errors.labels(exc.kind).inc()
        box.window.settle_tail(box.on_disk, box._publishable)
        box._changed()
        self._schedule(self.backoff.next_delay())

    def _schedule(self, delay: float) -> None:
        if self._handle is None and not self.box._closed:
            self._handle = asyncio.get_running_loop().call_later(delay, self._retry)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _retry(self) -> None:
        self._handle = None
        box, w = self.box, self.box.window
        if not w.unreadable:
            return
        room = min(READ_BATCH, w.room())
        if not room:  # ready is full (the broker is away): no read until it moves
            self._schedule(self.backoff.policy.initial)
            return
        first, last = w.unreadable[0]
        try:
            rows = box.store.read(first, last, room)
        except StoreError as exc:
            if exc.kind == "corrupt":
                box._failed("read", exc)  # the file is set aside: nothing left to read
                return
            self.reason = f"{exc.kind}: {exc.why}"
            box._metrics.outbox_errors.labels(exc.kind).inc()
            self._schedule(self.backoff.next_delay())
            return
        self.backoff.reset()
        w.recovered([r for r in rows if r.id not in box.deletes], complete=len(rows) < room)
        box._changed()  # wakes the publisher
        if w.unreadable:
            self._schedule(0)
        else:
            self.over()

    def over(self) -> None:
        """Nothing set aside any more (read back, or gone with a corrupt file)."""
        self.cancel()
        self.box.window.unreadable.clear()
        if self.reason:
            log.warning("outbox: the backlog on %s is readable again", self.box.path)
        self.reason = ""
        self.backoff.reset()
