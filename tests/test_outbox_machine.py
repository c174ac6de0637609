"""The whole outbox as a state machine (hypothesis): random puts, takes, acknowledgements,
connection losses, disk failures and recoveries, clean restarts and crashes, against a real
SQLite file. A full disk is real too: SQLite's `max_page_count` makes every write that needs
a new page fail with SQLITE_FULL, as a full filesystem does (deletes and seqs rows, which need
none, still go in). A dead disk (an I/O error) takes no write at all. An unreadable disk fails
every read of the backlog (writes still work): the backlog is set aside, newer readings go on.

Invariants, checked as it runs and after a final drain:
- fate: every accepted reading is delivered (acknowledged) or counted dropped by a bound (or,
  only where the README says so, lost: held in memory at a crash); never both, never neither
  (but for the README's exception: a drop a dead disk could not delete comes back);
- order: per device, readings are handed out for the first time in the order they were put
  (but for such a drop, which comes back late, and for a backlog set aside as unreadable,
  which is delivered late once it can be read: the README's exception);
- seq: per device, one seq names one reading, and seqs grow with the order of the puts; a seq
  that went out is never used again, whatever was lost (crash or close in memory mode too).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import pytest
from helpers import put_reading
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from gateway.config import OutboxConfig
from gateway.metrics import Metrics
from gateway.models import Reading
from gateway.mqtt.topics import render
from gateway.outbox import Outbox, Record
from gateway.outbox.store import Store, StoreError

pytestmark = pytest.mark.timeout(300)

DEVICES = ("a", "b", "c")
T = TypeVar("T")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class DyingStore(Store):
    """The outbox's file on a disk that can die: while `dead()`, every write fails; while
    `unreadable()`, every read of rows fails (the load at open reads only totals: it works)."""

    def __init__(
        self, path: Path, dead: Callable[[], bool], unreadable: Callable[[], bool]
    ) -> None:
        super().__init__(path)
        self.dead = dead
        self.unreadable = unreadable

    def read(self, first: int, last: int, limit: int) -> list[Record]:
        if self.unreadable():
            raise StoreError("io", "disk I/O error")
        return super().read(first, last, limit)

    def first_ts(self, first: int, last: int) -> float | None:
        if self.unreadable():
            raise StoreError("io", "disk I/O error")
        return super().first_ts(first, last)

    def write(
        self,
        records: Sequence[Record],
        deletes: Iterable[int] = (),
        seqs: Sequence[tuple[str, int]] = (),
        *,
        exact_seqs: bool = False,
    ) -> None:
        if self.dead():
            raise StoreError("io", "disk I/O error")
        super().write(records, deletes, seqs, exact_seqs=exact_seqs)


class OutboxMachine(RuleBasedStateMachine):
    durability = "disk"

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="outbox-machine-"))
        self.loop = asyncio.new_event_loop()
        self.clock = Clock()
        self.cfg = OutboxConfig.model_validate(
            {
                "max_bytes": 12_000,  # ~100 records: the bound is reached now and then
                "memory_records": 100,
                "retry_interval": 0.005,
                "durability": self.durability,
                "spill_after": 0.5,
                "commit_interval": 0.002,  # grouped commits, by turn and by time
                "commit_turns": 3,
            }
        )
        self.values: dict[str, int] = defaultdict(int)  # the last value put, per device
        self.accepted: dict[str, int] = defaultdict(int)
        self.seq_value: dict[tuple[str, int], int] = {}  # what each (device, seq) carried
        self.first_taken: dict[str, int] = defaultdict(int)  # the last value taken first time
        self.delivered: set[tuple[str, int]] = set()
        self.ever_taken: set[tuple[str, int]] = set()
        self.lost: dict[str, int] = defaultdict(int)  # held in memory at a crash
        self.slack: dict[str, int] = defaultdict(int)  # deletes a crash may undo
        self.dropped_before: dict[str, float] = defaultdict(float)  # earlier instances' counts
        self.taken: list[Record] = []
        self.disk_full = False
        self.disk_dead = False
        self.disk_unreadable = False
        self.late: set[tuple[str, int]] = set()  # in a backlog set aside as unreadable
        self.dropped_ids: dict[int, tuple[str, int]] = {}  # this instance's drops
        self.returning: set[tuple[str, int]] = set()  # drops a dead disk brought back
        self.reserved_ahead = False  # the seqs table may hold reservations (numbering.py)
        self.may_skip = False  # a crash while it did: seqs may skip (disk durability)
        self.box = self._open()

    # -- plumbing ----------------------------------------------------------------------------
    def _open(self) -> Outbox:
        self.metrics = Metrics()
        path = self.dir / "o.sqlite3"
        store = DyingStore(path, lambda: self.disk_dead, lambda: self.disk_unreadable)
        box = Outbox(path, self.cfg, self.metrics, clock=self.clock, store=store)
        self.dropped_ids = {}  # (ids are per file state: a later run may use one again)
        drop, log = box.writer.drop, self.dropped_ids

        def note_and_drop(dropped: Iterable[Record], reason: str) -> None:
            """What the outbox drops (id -> (device, seq)), for the model."""
            dropped = list(dropped)
            log.update((r.id, (r.device, r.seq)) for r in dropped)
            drop(dropped, reason)

        box.writer.drop = note_and_drop  # type: ignore[method-assign]
        strand = box.writer.window.strand

        def note_and_strand() -> None:
            """What the backlog set aside holds, read past the failing store (the model's
            knowledge, not the outbox's): those readings may come late."""
            w = box.writer.window
            if w.backlog and box.writer.store.db is not None:
                self.late.update(
                    box.writer.store.db.execute(
                        "SELECT device, seq FROM outbox WHERE id BETWEEN ? AND ?",
                        (w.first, w.last),
                    ).fetchall()
                )
            strand()

        box.writer.window.strand = note_and_strand  # type: ignore[method-assign]

        async def go() -> None:
            box.open()

        self.loop.run_until_complete(go())
        self.box = box
        self._apply_disk()
        return box

    def _apply_disk(self) -> None:
        db = self.box.writer.store.db
        if db is not None:
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count={pages if self.disk_full else 1 << 30}")

    def _call(self, fn: Callable[[], T]) -> T:
        """`fn` inside the event loop, as the gateway calls the outbox."""

        async def go() -> T:
            return fn()

        return self.loop.run_until_complete(go())

    def _run(self, seconds: float = 0.0) -> None:
        async def go() -> None:
            for _ in range(3):
                await asyncio.sleep(0)
            await asyncio.sleep(max(seconds, 0.003))  # (a grouped commit is due by then)

        self.loop.run_until_complete(go())

    def _dropped(self, device: str) -> float:
        total = self.dropped_before[device]
        for reason in ("outbox_full", "max_age", "seq_unknown"):
            value = self.metrics.registry.get_sample_value(
                "gateway_readings_dropped_total", {"device": device, "reason": reason}
            )
            total += value or 0.0
        return total

    def _keep_dropped_counts(self) -> None:
        for device in DEVICES:
            self.dropped_before[device] = self._dropped(device)

    def _record(self, record: Record) -> None:
        payload = json.loads(render(record))
        key = (record.device, record.seq)
        assert payload["seq"] == record.seq
        seen = self.seq_value.setdefault(key, payload["value"])
        assert seen == payload["value"], f"{key} named two readings: {seen}, {payload['value']}"

    # -- rules -------------------------------------------------------------------------------
    @initialize()
    def start(self) -> None:
        pass

    @rule(device=st.sampled_from(DEVICES), n=st.integers(1, 30))
    def put(self, device: str, n: int) -> None:
        async def go() -> None:
            for _ in range(n):
                self.values[device] += 1
                value = self.values[device]
                reading = Reading(device, "v", value, None, self.clock.now)
                put_reading(self.box, reading, f"t/{device}", 1)
                self.accepted[device] += 1
                self.clock.now += 0.001

        self.loop.run_until_complete(go())
        self._run()

    @rule(limit=st.integers(1, 50))
    def take(self, limit: int) -> None:
        batch = self._call(lambda: self.box.take_nowait(limit))
        for record in batch:
            self._record(record)
            key = (record.device, record.seq)
            if key in self.ever_taken:
                continue  # again, after a requeue or a restart
            if key in self.returning or key in self.late:  # late by nature (see the docstring)
                self.ever_taken.add(key)
                continue
            value = self.seq_value[key]
            assert value > self.first_taken[record.device], f"{key} overtaken by a newer one"
            self.first_taken[record.device] = value
            self.ever_taken.add(key)
        self.taken += batch

    @precondition(lambda self: self.taken)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        chosen = data.draw(st.sets(st.sampled_from(range(len(self.taken))), min_size=1))
        acked = [self.taken[i] for i in sorted(chosen)]
        self.taken = [r for i, r in enumerate(self.taken) if i not in chosen]
        self._call(lambda: self.box.ack(acked))
        self.delivered |= {(r.device, r.seq) for r in acked}
        self._run()

    @rule()
    def connection_lost(self) -> None:
        self._call(self.box.requeue_inflight)
        self.taken = []

    @rule()
    def disk_fails(self) -> None:
        self.disk_full = True
        self.reserved_ahead = True  # readings will go out from memory, reserved ahead
        self._apply_disk()

    @rule()
    def disk_dies(self) -> None:
        self.disk_dead = True
        self.reserved_ahead = True

    @rule()
    def disk_unreadable_now(self) -> None:
        self.disk_unreadable = True

    @rule()
    def disk_recovers(self) -> None:
        self.disk_full = False
        self.disk_dead = False
        self.disk_unreadable = False
        self._apply_disk()
        self._run(0.02)  # a retry or two
        self._apply_disk()  # (the store may have reopened)

    @rule(seconds=st.sampled_from([0.1, 1.0, 2.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.now += seconds
        self._run(0.01)

    @rule()
    def restart(self) -> None:
        """SIGTERM: close writes what memory holds (it can fail on a full disk)."""
        self._call(self.box.close)
        self._forget_unwritten()
        if self.disk_dead:  # deletes and the exact seqs could not be written: as a crash
            self._deletes_undone()
            self.may_skip |= self.reserved_ahead
        else:  # a full disk still takes them: no drop comes back, no reservation stays
            assert not self.box.writer.deletes, "the close left deletes unwritten"
            self.reserved_ahead = False
        self.taken = []
        self._keep_dropped_counts()
        self._open()

    @rule()
    def crash(self) -> None:
        """SIGKILL after the loop ran: only what was not written is gone. In memory mode too:
        it used to be left out, as the README allowed such a crash to reuse seqs; it must not
        (a consumer would drop a new reading as a repeat of an old one)."""
        self._run()
        self.may_skip |= self.reserved_ahead
        box = self.box
        box._stop()
        box._checkpointer.stop()
        self._forget_unwritten()
        if not self.disk_dead:  # drops are deleted at once, on a full disk too (README)
            assert not box.writer.deletes & self.dropped_ids.keys(), (
                "a drop was not deleted at once"
            )
        self._deletes_undone()
        box.writer.store.close()
        self.taken = []
        self._keep_dropped_counts()
        self._open()

    def _forget_unwritten(self) -> None:
        """Readings held only in memory are lost (spill mode: the young ones; memory mode: all;
        the README says both). Their seqs stay taken in `seq_value` when they went out: no
        later reading may carry one (a seq that never went out is not known here, and may be
        handed out again: no consumer can tell)."""
        for record in self.box.writer.unwritten.values():
            assert self.durability == "spill" or self.box.degraded
            self.lost[record.device] += 1

    def _deletes_undone(self) -> None:
        """Deletes not yet on disk (a crash, or a close on a dead disk, which cannot write them
        either) are undone by the restart: an acknowledged reading comes back, a repeat (README,
        "At least once"; it may then be dropped by a bound: counted both ways), and so does a
        drop, on a dead disk only (README, "Gateway killed"): delivered after all, though
        counted dropped, behind newer readings."""
        for device in DEVICES:
            self.slack[device] += len(self.box.writer.deletes)
        for i in self.box.writer.deletes:
            key = self.dropped_ids.get(i)
            if key is not None:
                self.returning.add(key)
                self.slack[key[0]] += 1

    # -- invariants --------------------------------------------------------------------------
    @invariant()
    def counts_add_up(self) -> None:
        """Nothing accepted is counted twice (the full check, with drops, is at teardown)."""
        for device in DEVICES:
            delivered = sum(1 for d, _ in self.delivered if d == device)
            assert delivered + self.lost[device] <= self.accepted[device] + self.slack[device]

    def teardown(self) -> None:
        try:
            self._drain_and_check()
        finally:
            self._call(self.box.close)
            self._run()  # (the committer's cancellation runs)
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def _drain_and_check(self) -> None:
        self.disk_full = False
        self.disk_dead = False
        self.disk_unreadable = False
        self._apply_disk()
        self._call(self.box.requeue_inflight)
        self.taken = []
        for _ in range(1000):
            waiting = self.box.degraded or self.box.unreadable_reason is not None
            self._run(0.01 if waiting else 0.0)
            batch = self._call(lambda: self.box.take_nowait(1000))
            if not batch and not len(self.box):
                break
            for record in batch:
                self._record(record)
            self._call(lambda: self.box.ack(batch))  # noqa: B023 - called at once
            self.delivered |= {(r.device, r.seq) for r in batch}
        assert len(self.box) == 0, "the outbox did not drain"
        for device in DEVICES:
            delivered = sum(1 for d, _ in self.delivered if d == device)
            fates = delivered + self._dropped(device) + self.lost[device]
            assert self.accepted[device] <= fates <= self.accepted[device] + self.slack[device], (
                device,
                self.accepted[device],
                delivered,
                self._dropped(device),
                self.lost[device],
                self.slack[device],
            )
            seqs = sorted(s for d, s in self.seq_value if d == device)
            values = [self.seq_value[(device, s)] for s in seqs]
            assert values == sorted(values), "seqs do not follow the order of the puts"
            assert len(set(values)) == len(values)
            # Seqs skip only where numbering.py says: after a crash while the seqs table held a
            # reservation (readings went out from memory since the last clean stop), or after
            # readings were lost. (Spill mode reserves all along: it may skip after any crash.)
            if self.durability == "disk" and not self.lost[device] and not self.may_skip:
                assert all(s <= self.accepted[device] for s in seqs), "a seq was skipped"


class SpillMachine(OutboxMachine):
    durability = "spill"


SETTINGS = settings(
    max_examples=int(os.environ.get("OUTBOX_MACHINE_EXAMPLES", "25")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # No explain phase: its tracer (Python < 3.12) slows a failing run down tenfold.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)
TestOutboxMachine = OutboxMachine.TestCase
TestOutboxMachine.settings = SETTINGS
TestSpillMachine = SpillMachine.TestCase
TestSpillMachine.settings = SETTINGS
