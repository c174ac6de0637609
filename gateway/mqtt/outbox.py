"""The durable outbox: every reading is stored on disk before it counts as accepted, and leaves
only when the broker acknowledged it.

Storage is one SQLite database in WAL mode under `gateway.state_dir`. Writes are grouped: `put`
only appends to a pending list and schedules a flush at the end of the current event-loop
iteration (or after `commit_interval`), so a burst of readings costs one transaction, and acks
are deleted in the same transactions, as id ranges. With `synchronous=NORMAL` a commit survives a
crash of the process (SIGKILL) without an fsync per transaction; `sync: full` also survives power
loss at the cost of an fsync per commit.

Records become *ready* (publishable) once committed. The session takes ready records in id
order (so per-device order is kept), they are *in flight* until acknowledged, and go back to the
front of the ready list if the connection fails. Only a bounded number of ready records is held
in memory; a larger backlog (an outage) stays on disk and is read back in batches.

When the disk fails (ENOSPC, I/O error) the outbox degrades instead of crashing: new records are
kept in memory (bounded by `max_bytes`, oldest dropped and counted) and published from there, the
failure is logged and counted, and the write is retried every `retry_interval`. A corrupt
database file is moved aside and a fresh one started.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from gateway.config import OutboxConfig
from gateway.metrics import Metrics
from gateway.models import Reading
from gateway.mqtt.topics import reading_payload

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    ts REAL NOT NULL,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS seqs (device TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""
_RECORD_OVERHEAD = 48  # bytes per row beyond topic and payload, for the max_bytes accounting


@dataclass(slots=True)
class Record:
    id: int
    device: str
    seq: int
    topic: str
    payload: bytes
    qos: int
    ts: float
    size: int


def _ranges(ids: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted ids -> inclusive (first, last) runs, so contiguous acks delete in one statement."""
    runs: list[tuple[int, int]] = []
    for i in sorted(ids):
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


CHECKPOINT_INTERVAL = 1.0  # seconds between WAL checkpoints (the WAL stays small)
ACK_FLUSH_DELAY = 0.5  # seconds an acknowledged record may stay on disk, waiting for a commit
MAX_LAZY_DELETES = 4096  # acknowledged records that make a commit of new ones delete them too


class Checkpointer:
    """Copies the WAL into the database file from a worker thread, with its own connection.

    SQLite's automatic checkpoint runs inside whichever commit crosses the WAL threshold, and a
    checkpoint fsyncs: on the event loop that is a stall of every link and of the session. Here
    the thread does it; the sqlite3 module releases the GIL while SQLite works. The connection is
    made in `start()`, so the process's set of open files is settled once the outbox is open
    (fd-leak checks compare it), and remade when the file is replaced (a corrupt one set aside).
    """

    def __init__(self, path: Path, interval: float) -> None:
        self.path = path
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None  # the thread's, once started
        self._inode = 0

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        try:
            self._db, self._inode = self._connect()
        except (sqlite3.Error, OSError) as exc:
            log.debug("outbox: checkpointer not connected yet: %s", exc)
        self._thread = threading.Thread(target=self._run, name="outbox-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Bounded: a checkpoint in progress gets a few seconds, then we go on without it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def _connect(self) -> tuple[sqlite3.Connection, int]:
        inode = self.path.stat().st_ino
        db = sqlite3.connect(self.path, timeout=1.0, check_same_thread=False)
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")  # opens the WAL and its index now
        except BaseException:
            db.close()
            raise
        return db, inode

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    if self._db is None or self.path.stat().st_ino != self._inode:
                        if self._db is not None:
                            self._db.close()
                            self._db = None
                        self._db, self._inode = self._connect()
                    self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except (sqlite3.Error, OSError) as exc:  # the writer reports disk trouble
                    log.debug("outbox: checkpoint skipped: %s", exc)
        finally:
            if self._db is not None:
                self._db.close()
                self._db = None


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
        self._db: sqlite3.Connection | None = None
        self._pending: dict[int, Record] = {}  # accepted, not yet written to disk (by id)
        self._acked: set[int] = set()  # acknowledged, not yet deleted from disk
        self._ready: deque[Record] = deque()  # publishable, in id order
        self._inflight: dict[int, Record] = {}
        self._spilled = False  # committed rows on disk that are not in memory
        self._disk_cursor = 0  # rows with a higher id may be on disk and not in memory
        self._next_id = 1
        self._seqs: dict[str, int] = {}
        self._seqs_dirty: set[str] = set()  # devices whose seq the seqs table is behind
        self._bytes = 0  # of every record not yet acknowledged
        self._count = 0
        self._degraded_until = 0.0  # monotonic time of the next disk retry while degraded
        self._flush_handle: asyncio.Handle | asyncio.TimerHandle | None = None  # new records
        self._delete_handle: asyncio.TimerHandle | None = None  # the lazy delete flush
        self._ready_event = asyncio.Event()
        self._drained = asyncio.Event()
        self._closed = False
        self._last_age_check = 0.0
        self._checkpointer = Checkpointer(path, CHECKPOINT_INTERVAL)
        #: Called right after a commit made new records ready, in the same loop iteration: the
        #: session publishes them at once instead of waking its publisher on the next one.
        self.on_ready: Callable[[], None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> None:
        """Open (or create) the database and load the state of a previous run."""
        self._export()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._connect()
            self._load()
        except sqlite3.DatabaseError as exc:
            self._set_aside(exc)
            self._db = self._connect()
            self._load()
        except OSError as exc:
            self._degrade("open", exc)
        self._changed()
        self._checkpointer.start()
        log.info(
            "outbox %s: %d record(s), %d bytes waiting from before",
            self.path,
            self._count,
            self._bytes,
        )

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if self.cfg.sync == 'full' else 'NORMAL'}")
            # Checkpoints (which fsync) run in the Checkpointer's thread, never inside a commit
            # on the event loop: an automatic one stalled the loop for ~20 ms every few 100 ms.
            db.execute("PRAGMA wal_autocheckpoint=0")
            db.executescript(_SCHEMA)
            db.execute("PRAGMA quick_check(1)").fetchone()
        except BaseException:
            db.close()
            raise
        return db

    def _set_aside(self, exc: Exception) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(self._clock())}")
        log.error(
            "outbox %s is unreadable (%s); moved to %s, starting empty", self.path, exc, aside
        )
        self._metrics.outbox_errors.labels("corrupt").inc()
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                src.replace(Path(f"{aside}{suffix}"))

    def _load(self) -> None:
        assert self._db is not None
        db = self._db
        self._seqs = dict(db.execute("SELECT device, seq FROM seqs").fetchall())
        # Rows not yet deleted may be ahead of the seqs table (it moves only with deletes).
        for device, seq in db.execute("SELECT device, max(seq) FROM outbox GROUP BY device"):
            if seq > self._seqs.get(device, 0):
                self._seqs[device] = seq
                self._seqs_dirty.add(device)  # the table must catch up before those rows go
        count, total, max_id = db.execute(
            "SELECT count(*), coalesce(sum(size), 0), coalesce(max(id), 0) FROM outbox"
        ).fetchone()
        self._count, self._bytes = count, total
        self._next_id = max(self._next_id, max_id + 1)
        self._spilled = count > 0
        self._disk_cursor = 0

    def close(self) -> None:
        """Commit what is pending (SIGTERM path) and close the database."""
        self._cancel_flushes()
        self._degraded_until = 0.0  # one last try even if degraded
        self.flush(deletes=True)
        self._closed = True
        self._cancel_flushes()  # the last try failed and scheduled a retry
        if self._pending:
            log.warning("outbox: %d reading(s) could not be written to disk", len(self._pending))
        self._checkpointer.stop()
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._db = None

    # -- intake ------------------------------------------------------------------------------
    def put(self, reading: Reading, topic: str, qos: int) -> None:
        """Accept a reading. Never blocks: the write happens in the next flush."""
        if self._closed:
            self._metrics.readings_dropped.labels(reading.device, "shutdown").inc()
            return
        seq = self._seqs.get(reading.device, 0) + 1
        payload = reading_payload(reading, seq)
        size = len(topic) + len(payload) + _RECORD_OVERHEAD
        if self._bytes + size > self.cfg.max_bytes and not self._make_room(size, reading.device):
            return
        self._seqs[reading.device] = seq
        self._seqs_dirty.add(reading.device)
        record = Record(self._next_id, reading.device, seq, topic, payload, qos, reading.ts, size)
        self._next_id += 1
        self._pending[record.id] = record
        self._bytes += size
        self._count += 1
        if self._degraded_until:
            self._make_ready([record])  # memory fallback: publish without waiting for the disk
        if self._flush_handle is None:  # (else: one is on its way)
            self._schedule_flush()

    def _make_room(self, size: int, device: str) -> bool:
        """Apply the overflow policy; False when the new record must be dropped."""
        if self.cfg.overflow == "drop_newest":
            self._metrics.readings_dropped.labels(device, "outbox_full").inc()
            return False
        self._drop_oldest(self._bytes + size - self.cfg.max_bytes)
        return True

    # -- flushing ----------------------------------------------------------------------------
    @property
    def degraded(self) -> bool:
        return self._degraded_until > 0

    def _schedule_flush(self, *, soon: bool = True) -> None:
        """`soon`: new records wait to be committed (they are published only then): flush at
        the end of this loop iteration (or after `commit_interval`). Otherwise only deletes of
        acknowledged records wait: they go with the lazy flush within ACK_FLUSH_DELAY, as one
        transaction for all of them, or with a commit of new records once MAX_LAZY_DELETES
        have piled up. (A crash in that window costs duplicates, never losses.)"""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        if not soon:
            if self._delete_handle is None:
                self._delete_handle = loop.call_later(ACK_FLUSH_DELAY, self._flush_deletes)
        elif self._flush_handle is None:
            if self.cfg.commit_interval > 0:
                self._flush_handle = loop.call_later(self.cfg.commit_interval, self._flush_new)
            else:
                self._flush_handle = loop.call_soon(self._flush_new)

    def _flush_new(self) -> None:
        self._flush_handle = None
        self.flush()

    def _flush_deletes(self) -> None:
        self._delete_handle = None
        self.flush(deletes=True)

    def _cancel_flushes(self) -> None:
        for handle in (self._flush_handle, self._delete_handle):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._delete_handle = None

    def flush(self, *, deletes: bool | None = None) -> None:
        """Write pending records and delete acknowledged ones, in one transaction.

        Deletes wait for the lazy flush unless many have piled up (`deletes` None): riding
        along with every commit of new records gave each of those a DELETE and an update of
        the seqs table, at 1000 readings/s nearly every one."""
        if deletes is None:
            deletes = len(self._acked) >= MAX_LAZY_DELETES
        if self._disk_resting():
            return
        self._expire_old()
        acked = self._acked if deletes else set()
        if not self._pending and not acked:
            return
        pending = list(self._pending.values())
        # Each row carries its seq; the seqs table needs to move only when rows are deleted
        # (or records left from memory while degraded): that keeps an insert-only commit, the
        # common one, to the outbox's own pages.
        seqs = None
        if acked or self.degraded:
            seqs = [(device, self._seqs[device]) for device in self._seqs_dirty]
        try:
            self._write(pending, acked, seqs)
        except (sqlite3.Error, OSError) as exc:
            self._degrade("write", exc)
            self._changed()
            return
        if seqs is not None:
            self._seqs_dirty = set()
        self._pending = {}
        if deletes:
            self._acked = set()
        elif self._acked:
            self._schedule_flush(soon=False)  # (their lazy flush, if it is not on its way)
        self._committed(pending)

    def _disk_resting(self) -> bool:
        """While degraded, the disk is tried again only every retry_interval."""
        now = time.monotonic()
        if not self.degraded or now >= self._degraded_until:
            return False
        if (self._pending or self._acked) and self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(
                self._degraded_until - now, self._flush_new
            )
        return True

    def _committed(self, pending: list[Record]) -> None:
        if self.degraded:  # (its records were published from memory already)
            self._degraded_until = 0.0
            self._metrics.outbox_degraded.set(0)
            log.warning("outbox: disk writes work again; degraded mode over")
        else:
            self._make_ready(pending)
        self._metrics.outbox_commits.inc()
        self._changed()
        if self.on_ready is not None and pending and self._ready:
            self.on_ready()

    def _write(
        self, pending: list[Record], acked: set[int], seqs: list[tuple[str, int]] | None
    ) -> None:
        db = self._db
        if db is None:
            db = self._db = self._reopen()
        in_txn = False
        try:
            db.execute("BEGIN")
            in_txn = True
            if pending:
                db.executemany(
                    "INSERT OR REPLACE INTO outbox "
                    "(id, device, seq, topic, payload, qos, ts, size) VALUES (?,?,?,?,?,?,?,?)",
                    [
                        (r.id, r.device, r.seq, r.topic, r.payload, r.qos, r.ts, r.size)
                        for r in pending
                    ],
                )
            if seqs:
                db.executemany(
                    "INSERT INTO seqs (device, seq) VALUES (?, ?) "
                    "ON CONFLICT(device) DO UPDATE SET seq = max(seq, excluded.seq)",
                    seqs,
                )
            for first, final in _ranges(acked):
                db.execute("DELETE FROM outbox WHERE id BETWEEN ? AND ?", (first, final))
            db.execute("COMMIT")
            in_txn = False
        finally:
            if in_txn:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")

    def _reopen(self) -> sqlite3.Connection:
        """After a failure: reconnect; a corrupt file is moved aside first."""
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):
                raise
            self._set_aside(exc)
            db = self._connect()
            # Everything that was only on the corrupt file is gone: forget the spilled backlog.
            self._spilled = False
            return db

    def _degrade(self, what: str, exc: BaseException) -> None:
        kind = "disk_full" if "full" in str(exc).lower() else "io"
        if not self.degraded:
            log.error(
                "outbox: cannot %s %s (%s); keeping readings in memory (bounded by max_bytes) "
                "and retrying every %gs",
                what,
                self.path,
                exc,
                self.cfg.retry_interval,
            )
            # Everything accepted but not written is publishable from memory from now on.
            self._make_ready(list(self._pending.values()))
        self._metrics.outbox_errors.labels(kind).inc()
        self._metrics.outbox_degraded.set(1)
        self._degraded_until = time.monotonic() + self.cfg.retry_interval
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
            if self._db is not None:
                self._db.close()
            self._db = None  # corrupt: reopen (and set aside) on the next retry
        self._schedule_flush()

    def _make_ready(self, records: list[Record]) -> None:
        if not records:
            return
        if self.degraded:
            # From memory; the disk cursor stays, so a backlog on disk is still read back.
            self._ready.extend(records)
            return
        if self._spilled or len(self._ready) + len(records) > self.cfg.memory_records:
            self._spilled = True  # stays on disk; read back in batches when memory drains
            return
        self._ready.extend(records)
        self._disk_cursor = records[-1].id

    # -- bounds ------------------------------------------------------------------------------
    def _drop_oldest(self, need: int) -> None:
        """Free at least `need` bytes by dropping the oldest records not in flight. Frees at
        least 1% of max_bytes at a time, so a full outbox does not search per reading."""
        need = max(need, self.cfg.max_bytes // 100)
        freed = 0
        dropped: dict[int, Record] = {}
        skip = set(self._inflight) | self._acked

        def take(candidates: Iterable[Record]) -> None:
            nonlocal freed
            for record in candidates:
                if freed >= need:
                    return
                if record.id not in skip and record.id not in dropped:
                    dropped[record.id] = record
                    freed += record.size

        if self._spilled and self._db is not None:
            # The oldest rows are on disk (some may also be in memory): read them lazily.
            take(
                Record(*row)
                for row in self._db.execute(
                    "SELECT id, device, seq, topic, payload, qos, ts, size FROM outbox ORDER BY id"
                )
            )
        take(list(self._ready))
        take(list(self._pending.values()))
        self._forget(list(dropped.values()), "outbox_full")

    def _forget(self, dropped: list[Record], reason: str) -> None:
        """Drop records for good: count them, delete them from disk with the next flush."""
        if not dropped:
            return
        ids = {r.id for r in dropped}
        self._ready = deque(r for r in self._ready if r.id not in ids)
        for r in dropped:
            self._metrics.readings_dropped.labels(r.device, reason).inc()
            self._bytes -= r.size
            self._count -= 1
            if self._pending.pop(r.id, None) is None:
                self._acked.add(r.id)  # on disk: delete it like an acknowledged record
        log.warning("outbox: dropped %d oldest reading(s) (%s)", len(dropped), reason)
        self._schedule_flush(soon=False)

    def _expire_old(self) -> None:
        """Drop records older than max_age (checked at most once a second)."""
        now = self._clock()
        if now - self._last_age_check < 1.0:
            return
        self._last_age_check = now
        cutoff = now - self.cfg.max_age
        # Records are in time order, near enough: look only at the old end of each list.
        expired = list(itertools.takewhile(lambda r: r.ts < cutoff, self._ready))
        expired += itertools.takewhile(lambda r: r.ts < cutoff, self._pending.values())
        if self._spilled and self._db is not None:
            seen = {r.id for r in expired} | set(self._inflight) | self._acked
            rows = self._db.execute(
                "SELECT id, device, seq, topic, payload, qos, ts, size FROM outbox "
                "WHERE ts < ? ORDER BY id LIMIT 10000",
                (cutoff,),
            ).fetchall()
            expired += [rec for rec in (Record(*row) for row in rows) if rec.id not in seen]
        self._forget(list({r.id: r for r in expired}.values()), "max_age")

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
        if not self._ready and self._spilled:
            self._load_backlog(1000)
        return bool(self._ready)

    def take_nowait(self, limit: int) -> list[Record]:
        """Take up to `limit` ready records (oldest first); they are in flight until acked or
        requeued. An empty list when there are none."""
        if limit <= 0 or not self._has_ready():
            return []
        ready = self._ready
        batch = [ready.popleft() for _ in range(min(limit, len(ready)))]
        inflight = self._inflight
        for record in batch:
            inflight[record.id] = record
        self._changed()
        return batch

    def _load_backlog(self, limit: int) -> None:
        if self._db is None:
            self._spilled = False
            return
        try:
            rows = self._db.execute(
                "SELECT id, device, seq, topic, payload, qos, ts, size FROM outbox "
                "WHERE id > ? ORDER BY id LIMIT ?",
                (self._disk_cursor, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            self._degrade("read", exc)
            self._spilled = False
            return
        skip = set(self._inflight) | self._acked | {r.id for r in self._ready}
        records = [rec for rec in (Record(*row) for row in rows) if rec.id not in skip]
        if rows:
            self._disk_cursor = rows[-1][0]
        self._ready.extend(records)
        if len(rows) < limit:
            self._spilled = False

    def ack(self, record: Record) -> None:
        """The broker acknowledged the record: it leaves the outbox."""
        self.ack_many([record])

    def ack_many(self, records: list[Record]) -> None:
        """`ack` for the acknowledgements of one read, with one flush scheduled."""
        inflight, pending, acked = self._inflight, self._pending, self._acked
        deletes = False
        for record in records:
            if inflight.pop(record.id, None) is None:
                continue
            self._bytes -= record.size
            self._count -= 1
            if pending.pop(record.id, None) is None:  # (degraded: never written, no delete)
                acked.add(record.id)
                deletes = True
        if deletes:
            self._schedule_flush(soon=False)
        self._changed()

    def requeue(self, records: Iterable[Record]) -> None:
        """Records whose publish did not complete go back to the front, in order."""
        back = sorted(
            (r for r in records if self._inflight.pop(r.id, None) is not None), key=lambda r: r.id
        )
        self._ready.extendleft(reversed(back))
        self._changed()

    def requeue_inflight(self) -> None:
        self.requeue(list(self._inflight.values()))

    async def wait_drained(self) -> None:
        """Wait until every accepted record has been acknowledged."""
        await self._drained.wait()

    # -- introspection -----------------------------------------------------------------------
    def __len__(self) -> int:
        return self._count

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def oldest_age(self) -> float:
        candidates = [r.ts for r in self._inflight.values()]
        if self._ready:
            candidates.append(self._ready[0].ts)
        if self._pending:
            candidates.append(next(iter(self._pending.values())).ts)
        if self._spilled and self._db is not None:
            try:
                row = self._db.execute("SELECT min(ts) FROM outbox").fetchone()
            except sqlite3.Error:
                row = None
            if row and row[0] is not None:
                candidates.append(row[0])
        return max(0.0, self._clock() - min(candidates)) if candidates else 0.0

    def _changed(self) -> None:
        if self._ready:
            self._ready_event.set()
        if self._count:
            self._drained.clear()
        else:
            self._drained.set()

    def _export(self) -> None:
        """Gauges read on scrape, so the hot path (put, take, ack) pays nothing for them."""
        m = self._metrics
        m.outbox_records.set_function(lambda: self._count)
        m.outbox_bytes.set_function(lambda: self._bytes)
        m.inflight.set_function(lambda: len(self._inflight))
        m.outbox_oldest_age.set_function(self.oldest_age)
