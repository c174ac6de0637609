"""The outbox: a message is accepted into it, and leaves it once the broker acknowledged it.

Its interface is narrow, as Telegraf's buffer's: `put` (the encoder), `wait_ready`, `take`,
`ack`, `requeue`, `drop` (the publisher), `stats` (health), and `open`/`close` or `async with`
(the lifecycle). Behind it, the `Writer` (writer.py: the records and the write path, all
synchronous) and its parts, none of which knows its owner: `store` (the SQLite file), `window`
(where each record is: in flight, ready, backlog on disk, tail), `numbering` (each device's
seq), `mode` (disk, memory after a failure, recovering), `bounds` (what max_bytes and max_age
drop), `unreadable` (a backlog the disk cannot read), `due` (when the committer acts) and
`checkpoint` (WAL checkpoints in a thread).

One task, the committer, does every deferred write: it sleeps until a put, an acknowledgement
or a failure wakes it, or the earliest deadline of its agenda (`Due`) comes. When records are
written:

- `durability: disk`: new records are committed together after `commit_turns` loop iterations
  that brought some or `commit_interval`, whichever first, and are ready to publish once
  committed. The commit is at the start of the next loop turn, by the committer or by the
  publisher waiting in `wait_ready`, whichever runs first: the records go out in that turn.
- `durability: spill`: new records are ready at once and written only when the broker has not
  acknowledged them within `spill_after`, or when they cannot be held in memory (a backlog).
- Acknowledged records on disk are deleted together, lazily (`ACK_FLUSH_DELAY`).
- While the disk fails (mode MEMORY), records are ready at once (once their seq is reserved on
  disk, see numbering.py) and the disk is tried again every `retry_interval`; then (RECOVERING)
  what memory held is written back in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from gateway.config import OutboxConfig
from gateway.limits import CHECKPOINT_INTERVAL
from gateway.metrics import Metrics
from gateway.outbox.checkpoint import Checkpointer
from gateway.outbox.due import NEVER
from gateway.outbox.mode import Mode
from gateway.outbox.records import Record
from gateway.outbox.store import Store, StoreError
from gateway.outbox.writer import Writer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """What the outbox reports of itself (`/status`, `/readyz`, the STATUS= line)."""

    records: int  # accepted, not yet acknowledged (or dropped)
    bytes: int
    inflight: int
    oldest_age: float  # seconds
    mode: Mode
    mode_reason: str | None  # why not DISK
    unreadable: str | None  # why a backlog waits on disk unread

    @property
    def degraded(self) -> bool:
        return self.mode is not Mode.DISK


class Outbox:
    def __init__(
        self,
        path: Path,
        cfg: OutboxConfig,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        store: Store | None = None,
    ) -> None:
        self.path = path
        self.cfg = cfg
        self._metrics = metrics
        self._clock = clock
        self.writer = Writer(
            path,
            cfg,
            metrics,
            clock=clock,
            store=store or Store(path, sync_full=cfg.sync == "full"),
            changed=self._changed,
            wake=self._wake,
        )
        self._ready_event = asyncio.Event()
        self._waiting = False  # the publisher waits in wait_ready
        self._drained = asyncio.Event()
        self._work = asyncio.Event()  # the committer's
        self._alarm: asyncio.TimerHandle | None = None  # at the agenda's earliest deadline
        self._task: asyncio.Task[None] | None = None
        self._closing = False  # no committer from here on: close() writes what is due
        self._checkpointer = Checkpointer(path, CHECKPOINT_INTERVAL)

    # -- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        self.open()
        self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = self._stop()
        self.close()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def open(self) -> None:
        """Open (or create) the database and load the state of a previous run. A full or
        failing disk starts the outbox in memory mode, the file left as it is."""
        self._export()
        w = self.writer
        try:
            w.open_store()
        except StoreError as exc:
            if not w.store.is_open:
                # Nothing known of what a previous run left: ids from the clock (microseconds)
                # lie beyond any it used. Its seqs are unknown until the file opens: nothing
                # is reserved, so readings wait in memory until then (see Writer._load).
                w.next_id = int(self._clock() * 1_000_000)
                log.error(
                    "outbox %s cannot be read: readings wait in memory until it can", self.path
                )
            w._failed("open", exc)
        self._changed()
        self._checkpointer.start()
        log.info("outbox %s: %d record(s), %d bytes waiting from before", *self._summary())

    def _summary(self) -> tuple[Path, int, int]:
        return self.path, self.writer.count, self.writer.total

    def close(self) -> None:
        """Write what is only in memory (SIGTERM path) and close the database."""
        self._closing = True
        self._stop()
        w = self.writer
        w.finish_commit()
        if not w.store.is_open:
            w._retry_open()
        w.flush(deletes=True, everything=True)
        w.closed = True
        if w.unwritten:
            log.warning("outbox: %d reading(s) could not be written to disk", len(w.unwritten))
        self._checkpointer.stop()
        w.store.close(truncate_wal=True)

    def flush(self, *, deletes: bool = False) -> None:
        """Commit what is due now (and the deletes of acknowledged records with `deletes`)."""
        self.writer.flush(deletes=deletes or None)

    # -- the committer -------------------------------------------------------------------------
    def _start(self) -> None:
        """The committer task (with `async with`: at entry; else at the first wake-up)."""
        if self._task is not None or self._closing:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # open() before the loop runs: the first put starts it
            return
        self._task = loop.create_task(self._commit_loop(), name="outbox-committer")

    def _stop(self) -> asyncio.Task[None] | None:
        """Cancel the committer (close writes what it would have); the task, to be awaited."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm = None
        return task

    def _wake(self) -> None:
        """Something for the committer (it runs at the start of the next loop turn)."""
        if self._task is None:
            self._start()
        self._work.set()
        if self._waiting and self.writer.due.pending and self.writer.due.turns_needed == 1:
            self._ready_event.set()  # it commits them itself if it runs first (wait_ready)

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        work, w = self._work, self.writer
        while True:
            self._arm(loop, w.due.next())
            await work.wait()
            work.clear()
            w.run_due(loop.time())

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """One timer, at the earliest deadline: moved only when an earlier one comes (most
        wake-ups find it armed already), so a put costs no timer handle."""
        alarm = self._alarm
        if when == NEVER or (alarm is not None and alarm.when() <= when):
            return
        if alarm is not None:
            alarm.cancel()
        self._alarm = loop.call_at(when, self._ring)

    def _ring(self) -> None:
        self._alarm = None
        self._work.set()

    # -- the interface ---------------------------------------------------------------------------
    def put(  # noqa: PLR0917 - the hot path: no keyword-argument cost per reading
        self, device: str, topic: str, sensor: str | None, fields: bytes, qos: int, ts: float
    ) -> Record | None:
        """Accept one message of `device` (its payload's `fields`, rendered at take time with
        the seq it gets here: gateway.mqtt.topics). Never blocks: the write happens in a later
        commit. Returns its record, or None when it was not accepted (shutdown, or no room:
        counted)."""
        return self.writer.put(device, topic, sensor, fields, qos, ts)

    async def wait_ready(self) -> None:
        """Wait until there are records to take (a backlog on disk counts). A commit due at
        the end of the turn that brought records is made here if the committer has not run
        yet: the publisher takes them in the same turn instead of the next."""
        w = self.writer
        while not w.has_ready():
            if w.due.turns_needed == 1 and w.commit_now():
                continue
            self._ready_event.clear()
            self._waiting = True
            try:
                await self._ready_event.wait()
            finally:
                self._waiting = False

    async def take(self, limit: int) -> list[Record]:
        """Wait for ready records and take up to `limit` of them (oldest first)."""
        await self.wait_ready()
        return self.take_nowait(limit)

    def take_nowait(self, limit: int) -> list[Record]:
        """Take up to `limit` ready records (oldest first); they are in flight until acked,
        requeued or dropped. An empty list when there are none."""
        return self.writer.take(limit)

    def ack(self, records: Iterable[Record]) -> None:
        """The broker acknowledged these records (one loop turn's): they leave the outbox;
        those on disk are deleted together, lazily."""
        self.writer.ack(records)

    def requeue(self, records: Iterable[Record]) -> None:
        """Records whose publish did not complete go back to the front, in order."""
        self.writer.window.requeue(records)
        self._changed()

    def requeue_inflight(self) -> None:
        """Everything in flight goes back to the front (the connection ended)."""
        self.requeue(list(self.writer.window.inflight.values()))

    def drop(self, records: Iterable[Record], reason: str) -> None:
        """Records that leave for good without a delivery (a message the broker refused or
        cannot take, a bound): counted per device and `reason`."""
        self.writer.drop(records, reason)

    async def wait_drained(self) -> None:
        """Wait until every accepted record has been acknowledged."""
        await self._drained.wait()

    # -- what it reports -----------------------------------------------------------------------
    def stats(self) -> OutboxStats:
        w = self.writer
        return OutboxStats(
            records=w.count,
            bytes=w.total,
            inflight=len(w.window.inflight),
            oldest_age=self.oldest_age(),
            mode=w.disk.mode,
            mode_reason=w.disk.reason if w.degraded else None,
            unreadable=self.unreadable_reason,
        )

    def __len__(self) -> int:
        return self.writer.count

    # (Views of `stats()`, as the status code read them before it existed.)
    @property
    def degraded(self) -> bool:
        return self.writer.degraded

    @property
    def mode(self) -> Mode:
        return self.writer.disk.mode

    @property
    def mode_reason(self) -> str:
        return self.writer.disk.reason

    @property
    def bytes(self) -> int:
        return self.writer.total

    @property
    def inflight(self) -> int:
        return len(self.writer.window.inflight)

    @property
    def unreadable_reason(self) -> str | None:
        """Why a backlog waits on disk unread (None: none does)."""
        w = self.writer
        return w.unreadable.reason if w.window.unreadable else None

    def oldest_age(self) -> float:
        oldest = self.writer.bounds.oldest_ts()
        return 0.0 if oldest is None else max(0.0, self._clock() - oldest)

    def _changed(self) -> None:
        w = self.writer
        if w.window.ready or w.window.backlog:
            self._ready_event.set()
        if w.count:
            self._drained.clear()
        else:
            self._drained.set()

    def _export(self) -> None:
        """Gauges read on scrape, so the hot path (put, take, ack) pays nothing for them."""
        m, w = self._metrics, self.writer
        m.outbox_records.set_function(lambda: w.count)
        m.outbox_bytes.set_function(lambda: w.total)
        m.inflight.set_function(lambda: len(w.window.inflight))
        m.outbox_oldest_age.set_function(self.oldest_age)
