"""What the outbox holds and writes, synchronously: no task, no timer, no event of its own.

The `Writer` owns the parts (store, window, numbering, disk state, bounds, the unreadable
backlog's retry) and the records only in memory (`unwritten`) or acknowledged but not yet
deleted (`deletes`). The outbox (outbox.py) drives it: it hands in puts, takes and
acknowledgements, and runs what the agenda (`due`) says is due from its committer task. The
writer tells it only two things, through the functions it was given: `changed` (records became
ready, or the count moved) and `wake` (something is due at the start of the next loop turn).

Deletes of acknowledged records wait up to `ACK_FLUSH_DELAY` to go together (or go with the next
commit once `MAX_LAZY_DELETES` piled up); after a disk failure, what memory held is written back
`RECOVERY_BATCH` records per loop turn. When a write of records fails, its deletes and seqs rows
go alone (a light write, `_write_light`): a full disk still takes them, so a reading dropped by a
bound is not brought back by a restart, and reservations let readings go out from memory without
a seq a restart could repeat (numbering.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from gateway.config import OutboxConfig
from gateway.limits import (
    ACK_FLUSH_DELAY,
    BACKLOG_BATCH,
    COMMIT_WAIT,
    MAX_LAZY_DELETES,
    RECOVERY_BATCH,
    SEQ_MAX,
)
from gateway.links.hardware import HardwareExecutor
from gateway.metrics import Metrics
from gateway.outbox.bounds import Bounds
from gateway.outbox.due import NEVER, Due
from gateway.outbox.mode import DiskState, Mode
from gateway.outbox.numbering import Numbering
from gateway.outbox.records import RECORD_OVERHEAD, Record
from gateway.outbox.store import Store, StoreError
from gateway.outbox.unreadable import Unreadable
from gateway.outbox.window import Window

log = logging.getLogger(__name__)

Monotonic = Callable[[], float]


@dataclass(slots=True)
class ThreadCommit:
    """A commit running in the committer's thread (`sync: full`), and what it carries."""

    future: Future[None]
    records: list[Record]
    deletes: set[int]
    seqs: list[tuple[str, int]]
    more: bool  # more records are due than this commit holds (recovery)


class Writer:
    def __init__(
        self,
        path: Path,
        cfg: OutboxConfig,
        metrics: Metrics,
        *,
        clock: Callable[[], float],
        store: Store,
        changed: Callable[[], None],
        wake: Callable[[], None],
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self.path = path
        self.cfg = cfg
        self._metrics = metrics
        self._clock = clock
        self._monotonic = monotonic
        self._changed = changed
        self._wake = wake
        self.spill = cfg.durability == "spill"
        self.store = store
        self.window = Window(cfg.memory_records)
        self.numbering = Numbering()
        self.disk = DiskState()
        self.bounds = Bounds(cfg, clock, store, self.window)
        self.unreadable = Unreadable(cfg.retry_interval)
        self.due = Due.of(cfg.commit_turns, cfg.commit_interval)
        self.unwritten: dict[int, Record] = {}  # accepted, not on disk (id order)
        self.deletes: set[int] = set()  # on disk, acknowledged or dropped: delete soon
        self.next_id = 1
        self.count = 0  # records not yet acknowledged (or dropped)
        self.total = 0  # their bytes
        full = cfg.sync == "full"
        self._thread = HardwareExecutor(1, "outbox-commit") if full else None
        self._in_thread: ThreadCommit | None = None
        self.closed = False

    # -- where records stand -------------------------------------------------------------------
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

    @property
    def degraded(self) -> bool:
        return self.disk.mode is not Mode.DISK

    # -- opening -------------------------------------------------------------------------------
    def open_store(self) -> None:
        try:
            self.store.open()
        except StoreError as exc:
            if exc.kind == "corrupt":
                self._set_aside(exc)
                self.store.open()
            else:  # full or failing: read what is there, without the -shm file
                self.store.open(exclusive=True)
                self._load()
                raise
        self._load()

    def _set_aside(self, exc: StoreError) -> None:
        aside = self.store.set_aside(int(self._clock()))
        log.error(
            "outbox %s is unreadable (%s); moved to %s, starting empty", self.path, exc, aside
        )
        self._metrics.outbox_errors.labels("corrupt").inc()

    def _load(self) -> None:
        try:
            stored = self.store.load()
        except StoreError:
            self.store.close()  # not loaded: not to be written either
            raise
        # Readings accepted while the file could not be read (they never went out: nothing was
        # reserved) whose seq the file already knew would repeat one: they go, counted.
        clash = [r for r in self.unwritten.values() if r.seq <= stored.seqs.get(r.device, 0)]
        self.numbering.restore(stored.seqs, stored.behind | stored.damaged)
        self.count += stored.count
        self.total += stored.bytes
        self.next_id = max(self.next_id, stored.last_id + 1)
        if stored.count:
            self.window.extend_backlog(stored.first_id, stored.last_id)
        if stored.invalid or stored.damaged:
            self._repair_seqs(stored.invalid, stored.damaged)
        if clash:
            log.error(
                "outbox: %d reading(s) taken while %s was unreadable had seqs it already "
                "used; dropped",
                len(clash),
                self.path,
            )
            self.drop(clash, "seq_unknown")

    def _repair_seqs(self, invalid: list[Record], damaged: set[str]) -> None:
        """Seqs beyond SEQ_MAX came from an edited or damaged file: such rows are set aside
        (dropped, counted as `seq_invalid`: their seq means nothing to a consumer) and the
        devices' seqs rows rewritten, numbering going on from their last valid seq."""
        devices = sorted(damaged | {r.device for r in invalid})
        log.error(
            "outbox %s holds seqs beyond %d (an edited or damaged file) for %s: %d reading(s) "
            "set aside; numbering goes on from the last valid seq",
            self.path,
            SEQ_MAX,
            ", ".join(devices[:5]) + (", ..." if len(devices) > 5 else ""),
            len(invalid),
        )
        self.drop(invalid, "seq_invalid")
        numbering = self.numbering
        rows = [(d, numbering.seqs.get(d, 0)) for d in sorted(damaged)]
        try:
            self.store.write((), (), rows, exact_seqs=True)
        except StoreError:
            return  # the rows stay dirty: the next write of seqs rows, or the close, sets them
        numbering.written(rows, exact=True)

    # -- accepting, handing out, forgetting -----------------------------------------------------
    def put(  # noqa: PLR0917 - the hot path: no keyword-argument cost per reading
        self, device: str, topic: str, sensor: str | None, fields: bytes, qos: int, ts: float
    ) -> Record | None:
        if self.closed:
            self._metrics.readings_dropped.labels(device, "shutdown").inc()
            return None
        numbering = self.numbering
        if self.spill and numbering.needs_reservation(device):
            self._reserve(device)
        size = len(topic) + len(fields) + RECORD_OVERHEAD
        if self.total + size > self.cfg.max_bytes and not self._make_room(size, device):
            return None
        seq = numbering.take(device)
        record = Record(self.next_id, device, seq, topic, sensor, fields, qos, ts, size)
        self.next_id += 1
        self.unwritten[record.id] = record
        self.total += size
        self.count += 1
        if self.at_once and numbering.covers(device, seq):
            self.window.admit([record], self.on_disk)
            self._changed()
            if self.spill and self.disk.mode is Mode.DISK and record.id not in self.window.tail:
                self._due_spill()
                return record
        else:
            self.window.hold(record)  # until committed, or its seq is reserved on disk
        self.new_records()
        return record

    def _make_room(self, size: int, device: str) -> bool:
        """The overflow policy; False when the new record is dropped (counted)."""
        dropped = self.bounds.make_room(size, self.total, self.deletes)
        if dropped is None:
            self._metrics.readings_dropped.labels(device, "outbox_full").inc()
            return False
        self.drop(dropped, "outbox_full")
        return True

    def _reserve(self, device: str) -> None:
        """Spill mode: the seqs table reserves a block of seqs before one of them goes out (one
        row, once per SEQ_BLOCK readings of a device). Not in MEMORY: there the record waits
        for a light write."""
        if self.disk.mode is not Mode.DISK or not self.store.is_open:
            return
        row = [self.numbering.reservation(device)]
        try:
            self.store.write((), (), row)
        except StoreError as exc:
            self.disk.light = False
            self._failed("write", exc)
            return
        self.numbering.written(row)

    def has_ready(self) -> bool:
        if not self.window.ready and self.window.backlog:
            self._read_backlog()
        return bool(self.window.ready)

    def _read_backlog(self) -> None:
        w = self.window
        try:
            rows = self.store.read(w.first, w.last, BACKLOG_BATCH)
        except StoreError as exc:
            if exc.kind == "corrupt":
                self._failed("read", exc)
            else:  # the rest of the file may be fine: newer readings go on (unreadable.py)
                self._unreadable_failed(exc)
            return
        w.loaded([r for r in rows if r.id not in self.deletes], complete=False)
        if len(rows) < BACKLOG_BATCH:
            w.end_backlog()
        w.settle_tail(self.on_disk, self._publishable)

    def take(self, limit: int) -> list[Record]:
        if limit <= 0 or not self.has_ready():
            return []
        batch = self.window.take(limit)
        if not self.window.ready:
            self.window.settle_tail(self.on_disk, self._publishable)
        return batch

    def ack(self, records: Iterable[Record]) -> None:
        unwritten, deletes, done = self.unwritten, self.deletes, self.window.done
        written = False
        for record in records:
            if not done(record):
                continue
            self.total -= record.size
            self.count -= 1
            if unwritten.pop(record.id, None) is None:  # on disk: delete it, lazily
                deletes.add(record.id)
                written = True
        if written:
            self._due_deletes()
        self._changed()

    def drop(self, dropped: Iterable[Record], reason: str) -> None:
        """Records that leave for good without a delivery: counted per device and reason;
        those on disk are deleted soon (a dropped reading that came back after a crash would
        be both dropped and delivered)."""
        dropped = list(dropped)
        if not dropped:
            return
        w = self.window
        w.remove({r.id for r in dropped})
        counter = self._metrics.readings_dropped
        for r in dropped:
            w.done(r)
            counter.labels(r.device, reason).inc()
            self.total -= r.size
            self.count -= 1
            if self.unwritten.pop(r.id, None) is None:
                self.deletes.add(r.id)  # on disk: delete it like an acknowledged record
        if reason in ("outbox_full", "max_age", "seq_unknown", "seq_invalid"):
            log.warning("outbox: dropped %d oldest reading(s) (%s)", len(dropped), reason)
        self._due_deletes(soon=True)
        self._changed()

    # -- the agenda ------------------------------------------------------------------------------
    def new_records(self) -> None:
        """New records: commit them as the group says. In MEMORY only a light write is tried,
        for records held for a reservation (in the tail)."""
        if self.closed:
            return
        due = self.due
        if self.disk.mode is Mode.MEMORY:
            if due.retry == NEVER:
                due.retry = self._monotonic() + self.disk.resting()
                self._wake()
            if self.disk.light and self.window.tail:
                due.now = True
                self._wake()
            return
        if self.disk.mode is Mode.RECOVERING:
            due.now = True
        else:
            due.added(self._monotonic())
        self._wake()

    def _due_deletes(self, *, soon: bool = False) -> None:
        if self.closed:
            return
        due = self.due
        if soon:
            due.deletes = 0.0
            self._wake()
        elif due.deletes == NEVER:
            due.deletes = self._monotonic() + ACK_FLUSH_DELAY
            self._wake()

    def _due_spill(self) -> None:
        if not self.closed and self.due.spill == NEVER:
            self.due.spill = self._monotonic() + self.cfg.spill_after
            self._wake()

    def run_due(self, now: float) -> None:
        """What the agenda says is due at `now` (monotonic): the committer's one job."""
        due = self.due
        if self._in_thread is not None:
            self.thread_done()
        if due.unreadable <= now:
            due.unreadable = NEVER
            self._read_unreadable()
        if due.retry <= now:
            due.retry = NEVER
            self.flush()
            if self.disk.mode is Mode.MEMORY and due.retry == NEVER and not self.closed:
                due.retry = now + self.cfg.retry_interval
        if due.spill <= now:
            due.spill = NEVER
            self.flush()
            if self.unwritten and self.spill:
                self._due_spill()
        if due.now or due.commit <= now or due.turn_ended():
            self.flush()
        if due.deletes <= now:
            due.deletes = NEVER
            self.flush(deletes=True)

    def commit_now(self) -> bool:
        """A commit due at the end of the turn that brought records, made by whoever runs
        first in the next one (the committer, or the publisher in `wait_ready`)."""
        if not self.due.pending or self._in_thread is not None:
            return False
        self.flush()
        return True

    # -- writing ---------------------------------------------------------------------------------
    def _due_records(self, everything: bool) -> tuple[list[Record], bool]:
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
        if self._in_thread is not None:
            return  # one in the thread: its completion flushes again
        self.due.committed()
        if self.disk.resting() and not everything:
            if self.disk.light:
                self._write_light()
            return
        if not self.store.is_open and not self._retry_open():
            return
        self.drop(self.bounds.expired(self.deletes), "max_age")
        if deletes is None:
            deletes = len(self.deletes) >= MAX_LAZY_DELETES or self.degraded
        records, more = self._due_records(everything)
        dels = set(self.deletes) if deletes or everything else set()
        seqs = self._seq_rows(bool(dels), everything)
        if not records and not dels and not seqs:
            return
        if self._thread is not None and not everything:
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
            self.due.now = True
            self._wake()

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
        if not self.store.is_open or self._in_thread is not None:
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
        back to the loop (`thread_done`, then the committer's wake-up). One commit at a time:
        what is due meanwhile goes in the next."""
        assert self._thread is not None
        loop, wake = asyncio.get_running_loop(), self._wake
        future = self._thread.submit(self.store.write, records, dels, seqs)
        self._in_thread = ThreadCommit(future, records, dels, seqs, more)
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(wake))

    def thread_done(self) -> None:
        """The committer: a commit in the thread may have finished."""
        commit = self._in_thread
        if commit is None or not commit.future.done():
            return
        self._in_thread = None
        exc = commit.future.exception()
        if isinstance(exc, StoreError):
            self._failed("write", exc)
        elif exc is not None:
            self._failed("write", StoreError("io", str(exc)))
        else:
            self._written(commit.records, commit.deletes, commit.seqs, commit.more)
        if self.unwritten or self.deletes:
            self.due.now = True
            self._wake()

    def finish_commit(self) -> None:
        """Wait (bounded) for a commit in the thread, and handle it (close)."""
        if self._in_thread is not None:
            future = self._in_thread.future
            with contextlib.suppress(TimeoutError, concurrent.futures.TimeoutError):
                future.result(COMMIT_WAIT)
            self.thread_done()

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
            self._due_deletes()
        before = self.disk.wrote(everything_on_disk=not more)
        if before is not Mode.DISK and self.disk.mode is Mode.DISK:
            log.warning("outbox: disk writes work again; memory mode over")
            self._metrics.outbox_degraded.set(0)
            self.due.retry = NEVER
            if self.store.exclusive:  # opened on a full disk: now the -shm file can be made
                self._reopen()
        self.window.settle_tail(self.on_disk, self._publishable)
        self._metrics.outbox_commits.inc()
        self._changed()  # wakes the publisher: what this commit made ready goes out

    # -- failures ----------------------------------------------------------------------------------
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
        if self.due.retry == NEVER and not self.closed:
            self.due.retry = self._monotonic() + self.cfg.retry_interval
            self._wake()

    def _lost_the_file(self, exc: StoreError) -> None:
        """A corrupt file mid-run: what only it held is gone; memory is all there is."""
        self._set_aside(exc)
        w = self.window
        w.end_backlog()
        self._unreadable_over()
        held = [*w.inflight.values(), *w.ready, *w.tail.values()]
        lost = self.count - len(held)
        if lost:
            log.error("outbox: %d reading(s) were only in the corrupt file and are lost", lost)
        self.count, self.total = len(held), sum(r.size for r in held)
        self.unwritten = {r.id: r for r in sorted(held, key=lambda r: r.id)}
        self.deletes = set()
        self.numbering.restore({}, set())  # the reservations were in that file: none now

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
            self.open_store()
        except StoreError as exc:
            self.disk.failed(exc.kind, exc.why, self.cfg.retry_interval)
            return self.store.is_open
        return True

    # -- a backlog the disk cannot read (unreadable.py) ------------------------------------------
    def _unreadable_failed(self, exc: StoreError) -> None:
        """Reading the backlog failed: set it aside and retry later."""
        if not self.window.unreadable:
            log.error(
                "outbox: cannot read the backlog from %s (%s); newer readings go on, the "
                "backlog is read again with backoff (up to every %gs)",
                self.path,
                exc,
                self.cfg.retry_interval,
            )
        self.window.strand()
        self._metrics.outbox_errors.labels(exc.kind).inc()
        self._due_unreadable(self.unreadable.failed(exc))
        self.window.settle_tail(self.on_disk, self._publishable)
        self._changed()

    def _due_unreadable(self, delay: float) -> None:
        if not self.closed:
            self.due.unreadable = min(self.due.unreadable, self._monotonic() + delay)
            self._wake()

    def _read_unreadable(self) -> None:
        w = self.window
        if not w.unreadable:
            return
        room = min(BACKLOG_BATCH, w.room())
        if not room:  # ready is full (the broker is away): no read until it moves
            self._due_unreadable(self.unreadable.backoff.policy.initial)
            return
        first, last = w.unreadable[0]
        try:
            rows = self.store.read(first, last, room)
        except StoreError as exc:
            if exc.kind == "corrupt":
                self._failed("read", exc)  # the file is set aside: nothing left to read
                return
            self._metrics.outbox_errors.labels(exc.kind).inc()
            self._due_unreadable(self.unreadable.failed(exc))
            return
        self.unreadable.read_back()
        w.recovered([r for r in rows if r.id not in self.deletes], complete=len(rows) < room)
        self._changed()  # wakes the publisher
        if w.unreadable:
            self._due_unreadable(0)
        else:
            self._unreadable_over()

    def _unreadable_over(self) -> None:
        """Nothing set aside any more (read back, or gone with a corrupt file)."""
        self.due.unreadable = NEVER
        self.window.unreadable.clear()
        if self.unreadable.over():
            log.warning("outbox: the backlog on %s is readable again", self.path)
