"""The outbox: a reading is accepted into it, and leaves it once the broker acknowledged it.

The parts: `store` (the SQLite file), `window` (where each record is: in flight, ready, backlog
on disk, tail), `numbering` (each device's seq), `mode` (disk, memory after a failure,
recovering) and `bounds` (max_bytes, max_age). This module decides when to write:

- `durability: disk`: new records are written at the end of the loop iteration (or after
  `commit_interval`), one transaction for all of them, and are ready to publish once committed.
- `durability: spill`: new records are ready at once and written only when the broker has not
  acknowledged them within `spill_after`, or when they cannot be held in memory (a backlog).
- Acknowledged records on disk are deleted together, lazily (`ACK_FLUSH_DELAY`).
- While the disk fails (mode MEMORY), records are ready at once and the disk is tried again
  every `retry_interval`; then (RECOVERING) what memory held is written back in batches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from gateway.config import OutboxConfig
from gateway.metrics import Metrics
from gateway.models import Reading
from gateway.mqtt.topics import reading_payload
from gateway.outbox.bounds import Bounds
from gateway.outbox.checkpoint import CHECKPOINT_INTERVAL, Checkpointer
from gateway.outbox.mode import DiskState, Mode
from gateway.outbox.numbering import Numbering
from gateway.outbox.records import RECORD_OVERHEAD, Record
from gateway.outbox.store import Store, StoreError
from gateway.outbox.window import Window

log = logging.getLogger(__name__)

ACK_FLUSH_DELAY = 0.5  # seconds an acknowledged record may stay on disk, waiting for a commit
MAX_LAZY_DELETES = 4096  # acknowledged records that make a commit of new ones delete them too
BACKLOG_BATCH = 1000  # records read back from disk at once
RECOVERY_BATCH = 2000  # records written back per loop turn after a disk failure


class Outbox:
    def __init__(
        self,
        path: Path,
        cfg: OutboxConfig,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.cfg = cfg
        self._metrics = metrics
        self._clock = clock
        self.spill = cfg.durability == "spill"
        self.store = Store(path, sync_full=cfg.sync == "full")
        self.window = Window(cfg.memory_records)
        self.numbering = Numbering(reserve=self.spill)
        self.disk = DiskState()
        self.bounds = Bounds(self)
        self.unwritten: dict[int, Record] = {}  # accepted, not on disk (id order)
        self.deletes: set[int] = set()  # on disk, acknowledged or dropped: delete soon
        self._next_id = 1
        self.count = 0  # records not yet acknowledged (or dropped)
        self.total = 0  # their bytes
        self._flush_handle: asyncio.Handle | None = None  # new records
        self._delete_handle: asyncio.TimerHandle | None = None  # the lazy delete flush
        self._retry_handle: asyncio.TimerHandle | None = None
        self._spill_handle: asyncio.TimerHandle | None = None
        self._ready_event = asyncio.Event()
        self._drained = asyncio.Event()
        self._closed = False
        self._checkpointer = Checkpointer(path, CHECKPOINT_INTERVAL)
        #: Called right after a commit made new records ready, in the same loop iteration: the
        #: session publishes them at once instead of waking its publisher on the next one.
        self.on_ready: Callable[[], None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> None:
        """Open (or create) the database and load the state of a previous run. A full or
        failing disk starts the outbox in memory mode, the file left as it is."""
        self._export()
        try:
            self._open_store()
        except StoreError as exc:
            if not self.store.is_open:
                # Nothing known of what a previous run left: ids from the clock (microseconds)
                # lie beyond any it used. Its seqs are unknown until the file opens.
                self._next_id = int(self._clock() * 1_000_000)
                log.error("outbox %s cannot be read: seqs may repeat until it can", self.path)
            self._failed("open", exc)
        self._changed()
        self._checkpointer.start()
        log.info("outbox %s: %d record(s), %d bytes waiting from before", *self._summary())

    def _summary(self) -> tuple[Path, int, int]:
        return self.path, self.count, self.total

    def _open_store(self) -> None:
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
        stored = self.store.load()
        seqs = {d: max(s, self.numbering.seqs.get(d, 0)) for d, s in stored.seqs.items()}
        self.numbering.restore({**self.numbering.seqs, **seqs}, stored.behind)
        self.count += stored.count
        self.total += stored.bytes
        self._next_id = max(self._next_id, stored.last_id + 1)
        if stored.count:
            self.window.extend_backlog(stored.first_id, stored.last_id)

    def close(self) -> None:
        """Write what is only in memory (SIGTERM path) and close the database."""
        self._cancel_timers()
        if not self.store.is_open:
            self._retry_open()
        self.flush(deletes=True, everything=True)
        self._closed = True
        self._cancel_timers()
        if self.unwritten:
            log.warning("outbox: %d reading(s) could not be written to disk", len(self.unwritten))
        self._checkpointer.stop()
        self.store.close(truncate_wal=True)

    # -- intake ------------------------------------------------------------------------------
    def put(self, reading: Reading, topic: str, qos: int) -> None:
        """Accept a reading. Never blocks: the write happens in a later flush."""
        device = reading.device
        if self._closed:
            self._metrics.readings_dropped.labels(device, "shutdown").inc()
            return
        if self.disk.mode is Mode.MEMORY and self._retry_handle is None:
            self._retry_handle = asyncio.get_running_loop().call_later(
                self.disk.resting(), self._retry
            )
        if self.numbering.needs_reservation(device):
            self._reserve(device)
        payload = reading_payload(reading, self.numbering.peek(device))
        size = len(topic) + len(payload) + RECORD_OVERHEAD
        if self.total + size > self.cfg.max_bytes and not self.bounds.make_room(size, device):
            return
        seq = self.numbering.take(device)
        record = Record(self._next_id, device, seq, topic, payload, qos, reading.ts, size)
        self._next_id += 1
        self.unwritten[record.id] = record
        self.total += size
        self.count += 1
        if self.at_once:
            self.window.admit([record], self.on_disk)
            self._changed()
            if self.spill and self.disk.mode is Mode.DISK and record.id not in self.window.tail:
                self._schedule_spill()
                return
        else:
            self.window.hold(record)
        self._schedule_flush()

    def _reserve(self, device: str) -> None:
        """Spill mode: the seqs table reserves a block of seqs before one of them is used."""
        row = [self.numbering.reservation(device)]
        if self.disk.mode is not Mode.DISK or not self.store.is_open:
            return  # (in memory anyway: a SIGKILL loses these readings)
        try:
            self.store.write((), (), row)
        except StoreError as exc:
            self._failed("write", exc)
            return
        self.numbering.reserved(row)

    @property
    def at_once(self) -> bool:
        """New records are publishable before they are written."""
        return self.spill or self.disk.mode is not Mode.DISK

    def on_disk(self, record: Record) -> bool:
        return record.id not in self.unwritten

    def _publishable(self, record: Record) -> bool:
        return self.at_once or record.id not in self.unwritten

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

    def _schedule_flush(self) -> None:
        if self._closed or self._flush_handle is not None or self.disk.mode is Mode.MEMORY:
            return
        loop = asyncio.get_running_loop()
        if self.cfg.commit_interval > 0:
            self._flush_handle = loop.call_later(self.cfg.commit_interval, self._flush_new)
        else:
            self._flush_handle = loop.call_soon(self._flush_new)

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
        transaction. `everything`: all that is only in memory, the disk tried even if resting
        (close)."""
        if self.disk.resting() and not everything:
            return
        if not self.store.is_open and not self._retry_open():
            return
        self.bounds.expire()
        if deletes is None:
            deletes = len(self.deletes) >= MAX_LAZY_DELETES
        records, more = self._due(everything)
        dels = set(self.deletes) if deletes or everything else set()
        seqs = self.numbering.rows() if dels or everything or self.degraded else []
        if not records and not dels and not seqs:
            return
        try:
            self.store.write(records, dels, seqs, exact_seqs=everything and self.spill)
        except StoreError as exc:
            self._failed("write", exc)
            return
        self._written(records, dels, seqs, more)
        if more:
            self._schedule_flush()

    def _written(
        self, records: list[Record], dels: set[int], seqs: list[tuple[str, int]], more: bool
    ) -> None:
        for record in records:
            del self.unwritten[record.id]
        self.numbering.written(seqs)
        self.numbering.reserved(seqs)
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
        self._changed()
        if self.on_ready is not None and records and self.window.ready:
            self.on_ready()

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
        held = [*w.inflight.values(), *w.ready, *w.tail.values()]
        lost = self.count - len(held)
        if lost:
            log.error("outbox: %d reading(s) were only in the corrupt file and are lost", lost)
        self.count, self.total = len(held), sum(r.size for r in held)
        self.unwritten = {r.id: r for r in sorted(held, key=lambda r: r.id)}
        self.deletes = set()

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
        try:
            self._open_store()
        except StoreError as exc:
            self.store.close()
            self.disk.failed(exc.kind, exc.why, self.cfg.retry_interval)
            return False
        return True

    # -- the session's side ------------------------------------------------------------------
    async def take(self, limit: int) -> list[Record]:
        """Wait for ready records and take up to `limit` of them (oldest first)."""
        await self.wait_ready()
        return self.take_nowait(limit)

    async def wait_ready(self) -> None:
        """Wait until there are records to take (a backlog on disk counts)."""
        while not self._has_ready():
            self._ready_event.clear()
            await self._ready_event.wait()

    def _has_ready(self) -> bool:
        if not self.window.ready and self.window.backlog:
            self._read_backlog()
        return bool(self.window.ready)

    def _read_backlog(self) -> None:
        w = self.window
        try:
            rows = self.store.read(w.first, w.last, BACKLOG_BATCH)
        except StoreError as exc:
            self._failed("read", exc)
            return
        w.loaded([r for r in rows if r.id not in self.deletes], complete=False)
        if len(rows) < BACKLOG_BATCH:
            w.end_backlog()
        w.settle_tail(self.on_disk, self._publishable)

    def take_nowait(self, limit: int) -> list[Record]:
        """Take up to `limit` ready records (oldest first); they are in flight until acked or
        requeued. An empty list when there are none."""
        if limit <= 0 or not self._has_ready():
            return []
        batch = self.window.take(limit)
        if not self.window.ready:
            self.window.settle_tail(self.on_disk, self._publishable)
        return batch

    def ack(self, record: Record) -> None:
        """The broker acknowledged the record: it leaves the outbox."""
        self.ack_many([record])

    def ack_many(self, records: Iterable[Record]) -> None:
        """`ack` for the acknowledgements of one read, with one flush scheduled."""
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
            self._schedule_deletes()
        self._changed()

    def requeue(self, records: Iterable[Record]) -> None:
        """Records whose publish did not complete go back to the front, in order."""
        self.window.requeue(records)
        self._changed()

    def requeue_inflight(self) -> None:
        self.requeue(list(self.window.inflight.values()))

    async def wait_drained(self) -> None:
        """Wait until every accepted record has been acknowledged."""
        await self._drained.wait()

    # -- introspection -----------------------------------------------------------------------
    def __len__(self) -> int:
        return self.count

    @property
    def bytes(self) -> int:
        return self.total

    @property
    def inflight(self) -> int:
        return len(self.window.inflight)

    def oldest_age(self) -> float:
        oldest = self.bounds.oldest_ts()
        return 0.0 if oldest is None else max(0.0, self._clock() - oldest)

    def _changed(self) -> None:
        if self.window.ready or self.window.backlog:
            self._ready_event.set()
        if self.count:
            self._drained.clear()
        else:
            self._drained.set()

    def _export(self) -> None:
        """Gauges read on scrape, so the hot path (put, take, ack) pays nothing for them."""
        m = self._metrics
        m.outbox_records.set_function(lambda: self.count)
        m.outbox_bytes.set_function(lambda: self.total)
        m.inflight.set_function(lambda: len(self.window.inflight))
        m.outbox_oldest_age.set_function(self.oldest_age)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # open() before the loop runs: the first flush retries
        return None
