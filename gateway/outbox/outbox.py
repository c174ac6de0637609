"""The outbox: a reading is accepted into it, and leaves it once the broker acknowledged it.

The parts: `store` (the SQLite file), `window` (where each record is: in flight, ready, backlog
on disk, tail), `numbering` (each device's seq), `mode` (disk, memory after a failure,
recovering), `bounds` (max_bytes, max_age), `grouping` (when a commit is due), `unreadable` (a
backlog the disk cannot read) and `writing` (the write path, which this class includes). Here:
the lifecycle, the intake and the session's side. When records are written:

- `durability: disk`: new records are committed together after `commit_turns` loop iterations
  that brought some or `commit_interval`, whichever first, and are ready to publish once
  committed.
- `durability: spill`: new records are ready at once and written only when the broker has not
  acknowledged them within `spill_after`, or when they cannot be held in memory (a backlog).
- Acknowledged records on disk are deleted together, lazily (`ACK_FLUSH_DELAY`).
- While the disk fails (mode MEMORY), records are ready at once (once their seq is reserved on
  disk, see numbering.py) and the disk is tried again every `retry_interval`; then (RECOVERING)
  what memory held is written back in batches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from gateway.config import OutboxConfig
from gateway.limits import (
    ACK_FLUSH_DELAY,
    BACKLOG_BATCH,
    CHECKPOINT_INTERVAL,
    MAX_LAZY_DELETES,
    SEQ_MAX,
)
from gateway.links.hardware import HardwareExecutor
from gateway.metrics import Metrics
from gateway.models import Reading
from gateway.mqtt.topics import reading_payload
from gateway.outbox.bounds import Bounds
from gateway.outbox.checkpoint import Checkpointer
from gateway.outbox.grouping import CommitGroup
from gateway.outbox.mode import DiskState, Mode
from gateway.outbox.numbering import Numbering
from gateway.outbox.records import RECORD_OVERHEAD, Record
from gateway.outbox.store import Store, StoreError
from gateway.outbox.unreadable import Unreadable
from gateway.outbox.window import Window
from gateway.outbox.writing import Writing

log = logging.getLogger(__name__)

T = TypeVar("T")


__all__ = ["ACK_FLUSH_DELAY", "MAX_LAZY_DELETES", "Outbox"]


class Outbox(Writing):
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
        self.numbering = Numbering()
        self.disk = DiskState()
        self.bounds = Bounds(self)
        self.unreadable = Unreadable(self)
        self.unwritten: dict[int, Record] = {}  # accepted, not on disk (id order)
        self.deletes: set[int] = set()  # on disk, acknowledged or dropped: delete soon
        self._next_id = 1
        self.count = 0  # records not yet acknowledged (or dropped)
        self.total = 0  # their bytes
        full = cfg.sync == "full"
        self._committer = HardwareExecutor(1, "outbox-commit") if full else None
        self._commit = None
        self._group = CommitGroup(cfg.commit_turns, cfg.commit_interval, self.flush)
        self._flush_handle: asyncio.Handle | None = None  # now, at the end of the turn
        self._delete_handle: asyncio.TimerHandle | None = None  # the lazy delete flush
        self._retry_handle: asyncio.TimerHandle | None = None
        self._spill_handle: asyncio.TimerHandle | None = None
        self._ready_event = asyncio.Event()
        self._drained = asyncio.Event()
        self._closed = False
        self._checkpointer = Checkpointer(path, CHECKPOINT_INTERVAL)
        #: Called right after a commit made new records ready, in the same loop iteration: the
        #: session publishes them at once instead of waking its publisher on the next one.

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
                # lie beyond any it used. Its seqs are unknown until the file opens: nothing
                # is reserved, so readings wait in memory until then (see _load).
                self._next_id = int(self._clock() * 1_000_000)
                log.error(
                    "outbox %s cannot be read: readings wait in memory until it can", self.path
                )
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
        self._next_id = max(self._next_id, stored.last_id + 1)
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
            self.bounds.forget(clash, "seq_unknown")

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
        self.bounds.forget(invalid, "seq_invalid")
        numbering = self.numbering
        rows = [(d, numbering.seqs.get(d, 0)) for d in sorted(damaged)]
        try:
            self.store.write((), (), rows, exact_seqs=True)
        except StoreError:
            return  # the rows stay dirty: the next write of seqs rows, or the close, sets them
        numbering.written(rows, exact=True)

    def close(self) -> None:
        """Write what is only in memory (SIGTERM path) and close the database."""
        self._cancel_timers()
        self._finish_commit()
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
    def put(self, reading: Reading, topic: str, qos: int) -> Record | None:
        """Accept a reading. Never blocks: the write happens in a later flush."""
        return self.put_encoded(reading.device, topic, qos, reading.ts, reading_payload, reading)

    def put_encoded(  # noqa: PLR0917 - the hot path: no keyword-argument cost per reading
        self,
        device: str,
        topic: str,
        qos: int,
        ts: float,
        encode: Callable[[T, int], bytes],
        item: T,
    ) -> Record | None:
        """Accept one message of `device` whose payload is `encode(item, seq)` (a reading, or
        a device-mode object of several): it gets the device's next seq. Returns its record,
        or None when it was not accepted (shutdown, or no room: counted)."""
        if self._closed:
            self._metrics.readings_dropped.labels(device, "shutdown").inc()
            return None
        if self.disk.mode is Mode.MEMORY and self._retry_handle is None:
            self._retry_handle = asyncio.get_running_loop().call_later(
                self.disk.resting(), self._retry
            )
        numbering = self.numbering
        if self.spill and numbering.needs_reservation(device):
            self._reserve(device)
        payload = encode(item, numbering.peek(device))
        size = len(topic) + len(payload) + RECORD_OVERHEAD
        if self.total + size > self.cfg.max_bytes and not self.bounds.make_room(size, device):
            return None
        seq = numbering.take(device)
        record = Record(self._next_id, device, seq, topic, payload, qos, ts, size)
        self._next_id += 1
        self.unwritten[record.id] = record
        self.total += size
        self.count += 1
        if self.at_once and numbering.covers(device, seq):
            self.window.admit([record], self.on_disk)
            self._changed()
            if self.spill and self.disk.mode is Mode.DISK and record.id not in self.window.tail:
                self._schedule_spill()
                return record
        else:
            self.window.hold(record)  # until committed, or its seq is reserved on disk
        self._schedule_flush()
        return record

    def seq_is_spent(self, record: Record) -> bool:
        """Whether `record`'s seq may be published outside the outbox (Home Assistant's
        republished last values): a restart is sure to number past it, because the record is
        a row or its seq is reserved."""
        return record.id not in self.unwritten or self.numbering.covers(record.device, record.seq)

    def _reserve(self, device: str) -> None:
        """Spill mode: the seqs table reserves a block of seqs before one of them goes out (one
        row, once per SEQ_BLOCK readings of a device). Not in MEMORY: there the record waits
        for a light write (writing.py)."""
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
            if exc.kind == "corrupt":
                self._failed("read", exc)
            else:  # the rest of the file may be fine: newer readings go on (unreadable.py)
                self.unreadable.failed(exc)
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

    @property
    def unreadable_reason(self) -> str | None:
        """Why a backlog waits on disk unread (None: none does)."""
        return self.unreadable.reason if self.unreadable.waiting else None

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
