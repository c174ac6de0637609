"""The outbox's parts, each alone: the window (pure), the numbering (pure), the mode, the commit
agenda (pure, then the real outbox on a real event loop) and the store (a real SQLite file)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from gateway.config import OutboxConfig
from gateway.limits import PAGE_SIZE, SEQ_BLOCK
from gateway.metrics import Metrics
from gateway.outbox import Outbox
from gateway.outbox.due import NEVER, Due
from gateway.outbox.mode import DiskState, Mode
from gateway.outbox.numbering import Numbering
from gateway.outbox.records import Record, ranges
from gateway.outbox.store import Store, StoreError, classify
from gateway.outbox.window import Window


def rec(i: int, device: str = "d") -> Record:
    return Record(i, device, i, "t", None, b'"v": 1', 1, 1_800_000_000.0 + i, 50)


# -- window ----------------------------------------------------------------------------------
def test_window_keeps_id_order_across_ready_backlog_and_tail() -> None:
    w = Window(memory_records=3)
    on_disk = {1, 2, 3, 4, 5}
    w.admit([rec(i) for i in range(1, 6)], lambda r: r.id in on_disk)
    assert [r.id for r in w.ready] == [1, 2, 3]
    assert (w.first, w.last) == (4, 5)  # beyond memory, on disk: the backlog
    w.admit([rec(6)], lambda r: False)  # not on disk: waits behind the backlog, in the tail
    assert list(w.tail) == [6]
    assert [r.id for r in w.take(3)] == [1, 2, 3]
    w.loaded([rec(4), rec(5)], complete=True)
    w.settle_tail(lambda r: False, lambda r: True)
    assert [r.id for r in w.ready] == [4, 5, 6]
    assert not w.backlog
    assert not w.tail


def test_window_requeue_goes_back_to_the_front_in_id_order() -> None:
    w = Window(memory_records=10)
    w.admit([rec(i) for i in range(1, 6)], lambda r: True)
    taken = w.take(4)
    w.requeue([taken[2], taken[0]])
    assert [r.id for r in w.ready] == [1, 3, 5]
    assert sorted(w.inflight) == [2, 4]
    assert w.done(taken[1])
    assert not w.done(taken[1])


def test_window_tail_waits_for_its_commit_when_not_publishable() -> None:
    w = Window(memory_records=10)
    w.hold(rec(1))
    w.settle_tail(lambda r: False, lambda r: False)
    assert not w.ready
    w.settle_tail(lambda r: True, lambda r: True)
    assert [r.id for r in w.ready] == [1]


def test_ranges_group_contiguous_ids() -> None:
    assert ranges([5, 1, 2, 3, 9, 10]) == [(1, 3), (5, 5), (9, 10)]


# -- numbering -------------------------------------------------------------------------------
def test_numbering_continues_and_tracks_what_the_table_lacks() -> None:
    n = Numbering()
    n.restore({"a": 7}, behind={"a"})
    assert n.take("a") == 8
    assert n.take("b") == 1
    rows = n.rows()
    assert sorted(rows) == [("a", 8), ("b", 1)]
    n.take("a")  # moved on meanwhile: "a" stays dirty
    n.written(rows)
    assert n.dirty == {"a"}
    assert n.rows() == [("a", 9)]
    n.written([("a", 9)])
    assert n.rows() == []  # the table holds every seq: nothing to write


def test_numbering_reserves_blocks_before_use() -> None:
    n = Numbering()
    n.restore({"a": 5}, behind=set())
    assert n.covers("a", 5)
    assert not n.covers("a", 6)  # not yet a row, and beyond the table: must not go out
    assert n.needs_reservation("a")
    row = n.reservation("a")
    assert row == ("a", 5 + SEQ_BLOCK)
    n.written([row])
    for _ in range(SEQ_BLOCK):
        assert not n.needs_reservation("a")
        assert n.covers("a", n.take("a"))
    assert n.needs_reservation("a")


def test_numbering_reserves_ahead_from_memory_and_a_clean_stop_writes_exact_values() -> None:
    """While records go out from memory, each write of seqs rows reserves a block for every
    device that used half of its own; a clean stop lowers the reservations again."""
    n = Numbering()
    n.restore({"a": 5, "b": 2}, behind={"b"})  # b's rows are ahead of its table row
    assert not n.covers("b", 1)  # (what the table holds for b is not known)
    n.take("a")
    rows = n.rows(ahead=True)
    assert sorted(rows) == [("a", 6 + SEQ_BLOCK), ("b", 2 + SEQ_BLOCK)]
    n.written(rows)
    assert n.covers("a", 6 + SEQ_BLOCK)
    assert not n.dirty
    while n.seqs["a"] < 6 + SEQ_BLOCK // 2:
        n.take("a")
    assert n.rows(ahead=True) == []  # half of the block left: no write for it
    n.take("a")
    assert n.rows(ahead=True) == [("a", n.seqs["a"] + SEQ_BLOCK)]
    exact = sorted(n.exact_rows())
    assert exact == [("a", n.seqs["a"]), ("b", 2)]
    n.written(exact, exact=True)
    assert n.reserved == dict(exact)


def test_numbering_after_the_file_was_lost_reserves_nothing() -> None:
    """A corrupt file replaced by an empty one, or a file that could not be read at first:
    nothing is reserved, every device's row is to be written; seqs handed out stay."""
    n = Numbering()
    n.restore({"a": 40}, behind=set())
    n.take("a")
    n.restore({}, set())
    assert not n.covers("a", 1)
    assert n.rows() == [("a", 41)]
    n.restore({"a": 60}, behind=set())  # a file read late that knew more
    assert n.peek("a") == 61


# -- mode ------------------------------------------------------------------------------------
def test_mode_goes_disk_memory_recovering_disk() -> None:
    d = DiskState()
    assert d.failed("disk_full", "database or disk is full", 60.0)
    assert not d.failed("disk_full", "again", 60.0)  # not news
    assert d.mode is Mode.MEMORY
    assert d.resting() > 0
    assert d.wrote(everything_on_disk=False) is Mode.MEMORY
    assert d.mode.value == "recovering"  # (mypy narrowed d.mode above)
    d.wrote(everything_on_disk=True)
    assert (d.mode, d.reason) == (Mode.DISK, "")
    d.light = False  # a light write failed (a dead disk, not a full one)...
    d.wrote(everything_on_disk=True)
    assert d.light  # ...and any write that works says light ones do too


# -- commit grouping: the committer's agenda ------------------------------------------------------
def test_the_agenda_groups_commits_by_turns_that_brought_records() -> None:
    due = Due.of(turns=3, interval=30.0)
    assert due.next() == NEVER
    for _ in range(2):
        due.added(100.0)
        due.added(100.0)  # several records in one turn count once
        assert not due.turn_ended()
    assert not due.turn_ended()  # a wake-up after a turn that brought none: not counted
    due.added(100.0)
    assert due.turn_ended()  # the third turn that brought records
    assert due.next() == 130.0  # ...or commit_interval after the first of them
    due.committed()
    assert (due.pending, due.next()) == (False, NEVER)
    every_turn = Due.of(turns=5, interval=0.0)  # commit_turns needs a commit_interval
    every_turn.added(1.0)
    assert every_turn.turn_ended()
    assert every_turn.next() == NEVER


async def test_commits_group_by_turns_and_by_time(tmp_path: Path) -> None:
    """The real outbox and event loop: one committer task, no timer handle per put."""

    def commits(box: Outbox) -> float:
        value = box._metrics.registry.get_sample_value("gateway_outbox_commits_total")
        return value or 0.0

    def outbox(name: str, **cfg: float) -> Outbox:
        return Outbox(tmp_path / name, OutboxConfig.model_validate(cfg), Metrics())

    async with outbox("o.sqlite3", commit_turns=3, commit_interval=5.0) as box:
        for turn in range(3):
            assert commits(box) == 0, turn
            box.put("d", "t", "v", b'"value": 1', 1, time.time())
            box.put("d", "t", "v", b'"value": 2', 1, time.time())  # one turn counts once
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert commits(box) == 1
    async with outbox("p.sqlite3", commit_turns=100, commit_interval=0.01) as box:
        box.put("d", "t", "v", b'"value": 1', 1, time.time())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert commits(box) == 0
        await asyncio.sleep(0.05)  # (a bound, not a measurement: the alarm rang by then)
        assert commits(box) == 1
    async with outbox("q.sqlite3") as box:
        box.put("d", "t", "v", b'"value": 1', 1, time.time())
        await asyncio.sleep(0)
        assert commits(box) == 1  # commit_interval 0: at the end of the turn
        taken = box.take_nowait(1)
        assert taken
        assert [t.get_name() for t in asyncio.all_tasks()].count("outbox-committer") == 1
        box.ack(taken)  # a delete for the close to write: no committer is made for it
    assert "outbox-committer" not in [t.get_name() for t in asyncio.all_tasks()]


# -- store -----------------------------------------------------------------------------------
def test_store_appends_reads_by_id_range_and_deletes(tmp_path: Path) -> None:
    store = Store(tmp_path / "o.sqlite3")
    store.open()
    store.write([rec(i) for i in range(1, 11)], (), [("d", 10)])
    assert [r.id for r in store.read(3, 6, 100)] == [3, 4, 5, 6]
    assert store.first_ts(4, 10) == rec(4).ts
    store.write([], range(1, 6))
    stored = store.load()
    assert (stored.count, stored.first_id, stored.last_id, stored.seqs) == (5, 6, 10, {"d": 10})
    store.write([], (), [("d", 3)])  # a seqs row never goes back...
    assert store.load().seqs == {"d": 10}
    store.write([], range(6, 11), [("d", 12)], exact_seqs=True)  # ...unless told (clean stop)
    assert store.load().seqs == {"d": 12}
    page_size = store.db.execute("PRAGMA page_size").fetchone()[0]  # type: ignore[union-attr]
    assert page_size == PAGE_SIZE
    store.close()


def test_store_errors_say_what_they_mean_for_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite3"
    bad.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError) as info:
        Store(bad).open()
    assert info.value.kind == "corrupt"
    store = Store(tmp_path / "o.sqlite3")
    store.open()
    assert store.db is not None
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count={pages}")  # SQLite's own "disk full"
    with pytest.raises(StoreError) as info:
        store.write([rec(i) for i in range(1, 2000)])
    assert info.value.kind == "disk_full"
    assert store.load().count == 0  # rolled back
    store.close()
    assert classify(sqlite3.OperationalError("disk I/O error")).kind == "io"
