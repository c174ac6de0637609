"""The whole outbox as a state machine (hypothesis): random puts, takes, acknowledgements,
connection losses, disk failures and recoveries, clean restarts and crashes, against a real
SQLite file. A full disk is real too: SQLite's `max_page_count` makes every write that needs
a new page fail with SQLITE_FULL, as a full filesystem does.

Invariants, checked as it runs and after a final drain:
- fate: every accepted reading is delivered (acknowledged) or counted dropped by a bound (or,
  only where the README says so, lost: held in memory at a crash); never both, never neither;
- order: per device, readings are handed out for the first time in the order they were put;
- seq: per device, one seq names one reading, and seqs grow with the order of the puts.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
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
from gateway.outbox import Outbox, Record

pytestmark = pytest.mark.timeout(300)

DEVICES = ("a", "b", "c")
T = TypeVar("T")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


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
        self.box = self._open()

    # -- plumbing ----------------------------------------------------------------------------
    def _open(self) -> Outbox:
        self.metrics = Metrics()
        box = Outbox(self.dir / "o.sqlite3", self.cfg, self.metrics, clock=self.clock)

        async def go() -> None:
            box.open()

        self.loop.run_until_complete(go())
        self.box = box
        self._apply_disk()
        return box

    def _apply_disk(self) -> None:
        db = self.box.store.db
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
        for reason in ("outbox_full", "max_age"):
            value = self.metrics.registry.get_sample_value(
                "gateway_readings_dropped_total", {"device": device, "reason": reason}
            )
            total += value or 0.0
        return total

    def _keep_dropped_counts(self) -> None:
        for device in DEVICES:
            self.dropped_before[device] = self._dropped(device)

    def _record(self, record: Record) -> None:
        payload = json.loads(record.payload)
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
                self.box.put(reading, f"t/{device}", 1)
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
        self._call(lambda: self.box.ack_many(acked))
        self.delivered |= {(r.device, r.seq) for r in acked}
        self._run()

    @rule()
    def connection_lost(self) -> None:
        self._call(self.box.requeue_inflight)
        self.taken = []

    @rule()
    def disk_fails(self) -> None:
        self.disk_full = True
        self._apply_disk()

    @rule()
    def disk_recovers(self) -> None:
        self.disk_full = False
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
        self.taken = []
        self._keep_dropped_counts()
        self._open()

    @precondition(lambda self: not self.box.degraded)
    @rule()
    def crash(self) -> None:
        """SIGKILL after the loop ran: only what was not written is gone."""
        self._run()
        box = self.box
        box._cancel_timers()
        box._checkpointer.stop()
        self._forget_unwritten()
        for device in DEVICES:  # an acknowledgement or drop not yet deleted comes back
            self.slack[device] += len(box.deletes)
        box.store.close()
        self.taken = []
        self._keep_dropped_counts()
        self._open()

    def _forget_unwritten(self) -> None:
        """Readings held only in memory are lost (spill mode: the young ones; memory mode: all,
        and their seqs may be used again: the README says both)."""
        for record in self.box.unwritten.values():
            assert self.durability == "spill" or self.box.degraded
            key = (record.device, record.seq)
            if self.box.degraded:
                self.seq_value.pop(key, None)
                self.ever_taken.discard(key)
            self.lost[record.device] += 1

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
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def _drain_and_check(self) -> None:
        self.disk_full = False
        self._apply_disk()
        self._call(self.box.requeue_inflight)
        self.taken = []
        for _ in range(1000):
            self._run(0.01 if self.box.degraded else 0.0)
            batch = self._call(lambda: self.box.take_nowait(1000))
            if not batch and not len(self.box):
                break
            for record in batch:
                self._record(record)
            self._call(lambda: self.box.ack_many(batch))  # noqa: B023 - called at once
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
            if self.durability == "disk" and not self.lost[device]:
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
