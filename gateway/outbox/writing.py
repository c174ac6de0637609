"""The outbox's write path: when to commit, what is due, what a failure and a recovery do.

`Outbox` (outbox.py) is this plus the intake and the session's side; the parts it uses are in
their own modules. Deletes of acknowledged records wait up to `ACK_FLUSH_DELAY` to go together
(or go with the next commit once `MAX_LAZY_DELETES` piled up); after a disk failure, what memory
held is written back `RECOVERY_BATCH` records per loop turn. When a write of records fails, its
deletes and seqs rows go alone (a light write, `_write_light`): a full disk still takes them, so
a reading dropped by a bound is not brought back by a restart, and reservations let readings go
out from memory without a seq a restart could repeat (numbering.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from gateway.config import OutboxConfig
from gateway.limits import ACK_FLUSH_DELAY, COMMIT_WAIT, MAX_LAZY_DELETES, RECOVERY_BATCH
from gateway.links.hardware import HardwareExecutor
from gateway.metrics import Metrics
from gateway.outbox.bounds import Bounds
from gateway.outbox.grouping import CommitGroup
from gateway.outbox.mode import DiskState, Mode
from gateway.outbox.numbering import Numbering
from gateway.outbox.records import Record
from gateway.outbox.store import Store, StoreError
from gateway.outbox.unreadable import Unreadable
from gateway.outbox.window import Window

log = logging.getLogger(__name__)


class Writing:
    """State the write path shares with `Outbox`, which sets it up."""

    path: Path
    cfg: OutboxConfig
    _metrics: Metrics
    _clock: Callable[[], float]
    spill: bool
    store: Store
    window: Window
    numbering: Numbering
    disk: DiskState
    bounds: Bounds
    unreadable: Unreadable
    unwritten: dict[int, Record]
    deletes: set[int]
    count: int
    total: int
    _closed: bool
    _group: CommitGroup
    _flush_handle: asyncio.Handle | None
    _delete_handle: asyncio.TimerHandle | None
    _retry_handle: asyncio.TimerHandle | None
    _spill_handle: asyncio.TimerHandle | None
    _committer: HardwareExecutor | None  # sync: full: commits run in its one thread
    _commit: tuple[Future[None], list[Record], set[int], list[tuple[str, int]], bool] | None

    def _open_store(self) -> None:
        raise NotImplementedError

    def _set_aside(self, exc: StoreError) -> None:
        raise NotImplementedError

    def _changed(self) -> None:
        raise NotImplementedError

    def on_disk(self, record: Record) -> bool:
        return record.id not in self.unwritten

    def _publishable(self, record: Record) -> bool:
        """On disk, or (while records go out at once) with a seq a restart starts past."""
        if record.id not in self.unwritten:
            return True
        return self.at_once and self.numbering.covers(record.device, record.seq)

    @property
    def at_once(self) -> bool:
        """New records are publishable before they are written."""
        return self.spill or self.disk.mode is not Mode.DISK

    # -- writing -----------------------------------------------------------------------------
    @property
    def degraded(self) -> bool:
        return self.disk.mode is not Mode.DISK

    @property
    def mode(self) -> Mode:
        return self.disk.mode

    @property
    def mode_reason(self) -> str:
        return self.disk.reason

    def _schedule_flush(self, *, now: bool = False) -> None:
        """New records: commit them as the group says (`now`: at the end of this turn). In
        MEMORY only a light write is tried, for records held for a reservation (in the tail)."""
        if self._closed:
            return
        if self.disk.mode is Mode.MEMORY:
            if self.disk.light and self.window.tail and self._flush_handle is None:
                self._flush_handle = asyncio.get_running_loop().call_soon(self._flush_new)
            return
        if now or self.disk.mode is Mode.RECOVERING:
            if self._flush_handle is None:
                self._flush_handle = asyncio.get_running_loop().call_soon(self._flush_new)
            return
        self._group.added()

    def _schedule_deletes(self, *, soon: bool = False) -> None:
        """Deletes of acknowledged records wait up to ACK_FLUSH_DELAY to go together (a crash
        meanwhile repeats them); dropped ones go `soon`: a drop is rare, and a dropped reading
        that came back after a crash would be both dropped and delivered."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        if soon:
            if self._delete_handle is not None and self._delete_handle.when() > loop.time():
                self._delete_handle.cancel()
            self._delete_handle = loop.call_later(0, self._flush_deletes)
        elif self._delete_handle is None:
            self._delete_handle = loop.call_later(ACK_FLUSH_DELAY, self._flush_deletes)

    def _schedule_spill(self) -> None:
        if not self._closed and self._spill_handle is None:
            self._spill_handle = asyncio.get_running_loop().call_later(
                self.cfg.spill_after, self._spill_due
            )

    def _flush_new(self) -> None:
        self._flush_handle = None
        self.flush()

    def _flush_deletes(self) -> None:
        self._delete_handle = None
        self.flush(deletes=True)

    def _spill_due(self) -> None:
        self._spill_handle = None
        self.flush()
        if self.unwritten:
            self._schedule_spill()

    def _cancel_timers(self) -> None:
        self._group.cancel()
        self.unreadable.cancel()
        for h in (self._flush_handle, self._delete_handle, self._retry_handle, self._spill_handle):
            if h is not None:
                h.cancel()
        self._flush_handle = self._delete_handle = self._retry_handle = self._spill_handle = None

    def _due(self, everything: bool) -> tuple[list[Record], bool]:
        """The records to write now, and whether more are due than that."""
        if everything:
            return list(self.unwritten.values()), False
        if self.spill and self.disk.mode is Mode.DISK:
            cutoff = self._clock() - self.cfg.spill_after
            tail = self.window.tail
            due = [r for r in self.unwritten.values() if r.ts <= cutoff or r.id in tail]
            return due, False
        records = list(self.unwritten.values())
        if self.disk.mode is Mode.DISK:
            return records, False
        return records[:RECOVERY_BATCH], len(records) > RECOVERY_BATCH

    def flush(self, *, deletes: bool | None = None, everything: bool = False) -> None:
        """Write what is due and (now and then) delete acknowledged records, in one
        transaction (if the disk refuses it, the deletes and seqs rows try alone; while it
        rests, only they do). `everything`: all that is only in memory, the disk tried even if
        resting (close)."""
        if self._commit is not None:
            return  # one in the thread: its completion flushes again
        if self.disk.resting() and not everything:
            if self.disk.light:
                self._write_light()
            return
        if not self.store.is_open and not self._retry_open():
            return
        self.bounds.expire()
        if deletes is None:
            deletes = len(self.deletes) >= MAX_LAZY_DELETES or self.degraded
        records, more = self._due(everything)
        dels = set(self.deletes) if deletes or everything else set()
        seqs = self._seq_rows(bool(dels), everything)
        if not records and not dels and not seqs:
            return
        if self._committer is not None and not everything:
            self._commit_in_thread(records, dels, seqs, more)
            return
        try:
            self.store.write(records, dels, seqs, exact_seqs=everything)
        except StoreError as exc:
            self._failed("write", exc)
            if records:
                self._write_light(exact=everything)
            else:
                self.disk.light = False  # that was a light write
            return
        self._written(records, dels, seqs, more, exact=everything)
        if more:
            self._schedule_flush(now=True)

    def _seq_rows(self, with_deletes: bool, everything: bool) -> list[tuple[str, int]]:
        """The seqs rows of a write: exact ones at the close; with deletes (the table covers
        the rows they delete) and while degraded; ahead while records go out from memory."""
        if everything:
            return self.numbering.exact_rows()
        if with_deletes or self.degraded:
            return self.numbering.rows(ahead=self.at_once)
        return []

    def _write_light(self, *, exact: bool = False) -> None:
        """Deletes and seqs rows alone, in MEMORY or after a write of records failed: they
        need no new space, so a full disk still takes them (a dead one does not: then they
        wait for the next retry). `exact`: the close's final values."""
        if not self.store.is_open or self._commit is not None:
            return
        dels = set(self.deletes)
        seqs = self.numbering.exact_rows() if exact else self.numbering.rows(ahead=True)
        if not dels and not seqs:
            return
        try:
            self.store.write((), dels, seqs, exact_seqs=exact)
        except StoreError as exc:
            self.disk.light = False
            self._failed("write", exc)
            return
        self.disk.light = True
        self.deletes -= dels
        self.numbering.written(seqs, exact=exact)
        self.window.settle_tail(self.on_disk, self._publishable)
        self._changed()

    def _commit_in_thread(
        self, records: list[Record], dels: set[int], seqs: list[tuple[str, int]], more: bool
    ) -> None:
        """`sync: full`: the commit (an fsync) runs in the committer's thread; its result comes
        back to the loop. One commit at a time: what is due meanwhile goes in the next."""
        assert self._committer is not None
        loop = asyncio.get_running_loop()
        future = self._committer.submit(self.store.write, records, dels, seqs)
        self._commit = (future, records, dels, seqs, more)

        def done(_: Future[None]) -> None:
            loop.call_soon_threadsafe(self._committed_in_thread, future)

        future.add_done_callback(done)

    def _committed_in_thread(self, future: Future[None]) -> None:
        if self._commit is None or self._commit[0] is not future:
            return  # (close() waited for it and handled it already)
        _, records, dels, seqs, more = self._commit
        self._commit = None
        exc = future.exception()
        if isinstance(exc, StoreError):
            self._failed("write", exc)
        elif exc is not None:
            self._failed("write", StoreError("io", str(exc)))
        else:
            self._written(records, dels, seqs, more)
        if self.unwritten or self.deletes:
            self._schedule_flush(now=True)

    def _finish_commit(self) -> None:
        """Wait (bounded) for a commit in the thread, and handle it (close)."""
        if self._commit is not None:
            future = self._commit[0]
            with contextlib.suppress(TimeoutError, concurrent.futures.TimeoutError):
                future.result(COMMIT_WAIT)
            if future.done():
                self._committed_in_thread(future)

    def _written(
        self,
        records: list[Record],
        dels: set[int],
        seqs: list[tuple[str, int]],
        more: bool,
        *,
        exact: bool = False,
    ) -> None:
        for record in records:
            if self.unwritten.pop(record.id, None) is None:
                # Acknowledged (or dropped) while its commit ran in the thread: now it is on
                # disk after all, and goes with the next deletes.
                self.deletes.add(record.id)
        self.numbering.written(seqs, exact=exact)
        self.deletes -= dels
        if self.deletes:
            self._schedule_deletes()
        before = self.disk.wrote(everything_on_disk=not more)
        if before is not Mode.DISK and self.disk.mode is Mode.DISK:
            log.warning("outbox: disk writes work again; memory mode over")
            self._metrics.outbox_degraded.set(0)
            if self.store.exclusive:  # opened on a full disk: now the -shm file can be made
                self._reopen()
        self.window.settle_tail(self.on_disk, self._publishable)
        self._metrics.outbox_commits.inc()
        self._changed()  # wakes the publisher: what this commit made ready goes out

    def _failed(self, what: str, exc: StoreError) -> None:
        if exc.kind == "corrupt":
            self._lost_the_file(exc)
        if self.disk.failed(exc.kind, exc.why, self.cfg.retry_interval):
            log.error(
                "outbox: cannot %s %s (%s); keeping readings in memory (bounded by max_bytes) "
                "and retrying every %gs",
                what,
                self.path,
                exc,
                self.cfg.retry_interval,
            )
        self._metrics.outbox_errors.labels(exc.kind).inc()
        self._metrics.outbox_degraded.set(1)
        # Everything accepted but not written is publishable from memory from now on.
        self.window.settle_tail(self.on_disk, self._publishable)
        self._changed()
        if self._retry_handle is None and not self._closed:
            with_loop = _running_loop()
            if with_loop is not None:
                self._retry_handle = with_loop.call_later(self.cfg.retry_interval, self._retry)

    def _lost_the_file(self, exc: StoreError) -> None:
        """A corrupt file mid-run: what only it held is gone; memory is all there is."""
        self._set_aside(exc)
        w = self.window
        w.end_backlog()
        self.unreadable.over()
        held = [*w.inflight.values(), *w.ready, *w.tail.values()]
        lost = self.count - len(held)
        if lost:
            log.error("outbox: %d reading(s) were only in the corrupt file and are lost", lost)
        self.count, self.total = len(held), sum(r.size for r in held)
        self.unwritten = {r.id: r for r in sorted(held, key=lambda r: r.id)}
        self.deletes = set()
        self.numbering.restore({}, set())  # the reservations were in that file: none now

    def _retry(self) -> None:
        self._retry_handle = None
        self.flush()
        if self.disk.mode is Mode.MEMORY and self._retry_handle is None and not self._closed:
            self._retry_handle = asyncio.get_running_loop().call_later(
                self.cfg.retry_interval, self._retry
            )

    def _reopen(self) -> None:
        """The same file again with an ordinary connection (nothing to load)."""
        self.store.close()
        try:
            self.store.open()
        except StoreError as exc:
            log.warning(
                "outbox: reopening %s failed (%s); keeping the exclusive one", self.path, exc
            )
            self.store.open(exclusive=True)

    def _retry_open(self) -> bool:
        """Open the file again; True if it is open (as at startup, a full disk leaves it open
        through an exclusive connection, loaded: closing it would load it twice later)."""
        try:
            self._open_store()
        except StoreError as exc:
            self.disk.failed(exc.kind, exc.why, self.cfg.retry_interval)
            return self.store.is_open
        return True


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # open() before the loop runs: the first flush retries
        return None
