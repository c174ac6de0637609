"""The durable outbox against real SQLite files (and a real full tmpfs when root)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import OutboxConfig
from gateway.limits import SEQ_BLOCK
from gateway.metrics import Metrics
from gateway.models import Reading
from gateway.mqtt.outbox import ACK_FLUSH_DELAY, MAX_LAZY_DELETES, Checkpointer, Outbox, Record
from gateway.outbox.store import Store, StoreError


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def reading(i: int, device: str = "boiler", ts: float = 1_800_000_000.0) -> Reading:
    return Reading(device, "temp", 20.0 + i / 100, "°C", ts + i / 1000)


def make(
    path: Path, metrics: Metrics | None = None, clock: Clock | None = None, **cfg: object
) -> Outbox:
    cfg = {"commit_interval": 0, **cfg}  # commit at the end of each turn, unless told
    box = Outbox(
        path, OutboxConfig.model_validate(cfg), metrics or Metrics(), clock=clock or Clock()
    )
    box.open()
    return box


def rows(path: Path) -> list[tuple[int, str, int]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT id, device, seq FROM outbox ORDER BY id").fetchall()


async def settle() -> None:
    """Let call_soon flushes run."""
    for _ in range(3):
        await asyncio.sleep(0)


async def take_all(box: Outbox, n: int) -> list[Record]:
    out: list[Record] = []
    while len(out) < n:
        async with asyncio.timeout(2):
            out += await box.take(1000)
    return out


def dropped(metrics: Metrics, device: str, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "gateway_readings_dropped_total", {"device": device, "reason": reason}
    )
    return value or 0.0


async def test_reading_is_on_disk_once_accepted_and_deleted_once_acked(tmp_path: Path) -> None:
    db = tmp_path / "outbox.sqlite3"
    box = make(db)
    for i in range(3):
        box.put(reading(i), "gateway/boiler/temp", 1)
    await settle()
    assert [r[2] for r in rows(db)] == [1, 2, 3]
    batch = await take_all(box, 3)
    assert [json.loads(r.payload)["seq"] for r in batch] == [1, 2, 3]
    box.ack(batch[0])
    await settle()
    assert [r[2] for r in rows(db)] == [1, 2, 3]  # a delete waits a moment...
    box.put(reading(4), "gateway/boiler/temp", 1)
    await settle()
    assert [r[2] for r in rows(db)] == [1, 2, 3, 4]  # ...even while new records are committed
    box.ack(batch[1])
    await asyncio.sleep(ACK_FLUSH_DELAY + 0.2)
    assert [r[2] for r in rows(db)] == [3, 4]  # and both go together within ACK_FLUSH_DELAY
    assert len(box) == 2
    box.close()


async def test_many_acknowledged_records_go_with_the_next_commit(tmp_path: Path) -> None:
    db = tmp_path / "outbox.sqlite3"
    box = make(db)
    for i in range(MAX_LAZY_DELETES + 1):
        box.put(reading(i), "t", 1)
    await settle()
    box.ack_many(box.take_nowait(MAX_LAZY_DELETES))
    box.put(reading(0), "t", 1)
    await settle()  # no waiting for the lazy flush: that many deletes do not wait
    assert [r[2] for r in rows(db)] == [MAX_LAZY_DELETES + 1, MAX_LAZY_DELETES + 2]
    box.put(reading(1), "t", 1)  # and commits go on as before after such a flush
    await settle()
    assert [r[2] for r in rows(db)][-1] == MAX_LAZY_DELETES + 3
    box.close()


async def test_restart_replays_unacked_records_in_order_and_continues_seq(tmp_path: Path) -> None:
    db = tmp_path / "outbox.sqlite3"
    box = make(db)
    for i in range(5):
        box.put(reading(i), "t", 1)
    await settle()
    taken = await take_all(box, 5)
    box.ack(taken[0])
    box.close()  # records 2..5 were in flight: they must come back

    box = make(db)
    assert len(box) == 4
    again = await take_all(box, 4)
    assert [json.loads(r.payload)["seq"] for r in again] == [2, 3, 4, 5]
    assert [r.ts for r in again] == [r.ts for r in taken[1:]]  # original timestamps kept
    box.put(reading(9), "t", 1)
    await settle()
    (new,) = await take_all(box, 1)
    assert json.loads(new.payload)["seq"] == 6
    box.close()


def seqs_table(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT device, seq FROM seqs").fetchall())


async def test_seq_continues_after_restarts_whatever_was_deleted(tmp_path: Path) -> None:
    """The seqs table moves only with deletes; rows carry their own seq in between. Either way
    a restarted outbox continues each device's seq, never repeats one."""
    db = tmp_path / "outbox.sqlite3"
    box = make(db)
    for i in range(3):
        box.put(reading(i, "a"), "t", 1)
        box.put(reading(i, "b"), "t", 1)
    await settle()
    assert seqs_table(db) == {}  # insert-only commits leave the seqs table alone
    box.store.close()  # "SIGKILL": no close(), no final flush
    box._checkpointer.stop()

    box = make(db)  # the rows say where each device stands
    taken = await take_all(box, 6)
    box.ack_many(taken)  # everything delivered: the rows go, the seqs table takes over
    box.put(reading(9, "a"), "t", 1)
    await asyncio.sleep(ACK_FLUSH_DELAY + 0.2)
    assert rows(db) == [(7, "a", 4)]
    assert seqs_table(db) == {"a": 4, "b": 3}
    box.close()

    box = make(db)
    box.put(reading(10, "b"), "t", 1)
    await settle()
    got = await take_all(box, 2)
    assert [(r.device, r.seq) for r in got] == [("a", 4), ("b", 4)]
    box.close()


async def test_close_commits_pending_records(tmp_path: Path) -> None:
    db = tmp_path / "outbox.sqlite3"
    box = make(db, commit_interval=5.0)  # nothing would be flushed for 5 s
    for i in range(10):
        box.put(reading(i), "t", 1)
    box.close()
    assert len(rows(db)) == 10


async def test_backlog_beyond_memory_is_read_back_in_order(tmp_path: Path) -> None:
    box = make(tmp_path / "o.sqlite3", memory_records=100)
    for i in range(1000):
        box.put(reading(i, device=f"d{i % 3}"), "t", 1)
        if i % 50 == 0:
            await settle()
    await settle()
    out = await take_all(box, 1000)
    assert [r.id for r in out] == sorted(r.id for r in out)
    assert len({r.id for r in out}) == 1000
    for device in ("d0", "d1", "d2"):
        seqs = [r.seq for r in out if r.device == device]
        assert seqs == list(range(1, len(seqs) + 1))
    box.close()


async def test_requeue_puts_records_back_in_front_in_order(tmp_path: Path) -> None:
    box = make(tmp_path / "o.sqlite3")
    for i in range(6):
        box.put(reading(i), "t", 1)
    await settle()
    first = await box.take(4)
    box.requeue(reversed(first[1:3]))
    box.ack(first[0])
    again = await take_all(box, 4)
    assert [r.seq for r in again] == [2, 3, 5, 6]
    assert box.inflight == 5  # record 4 is still in flight, plus the 4 just taken
    box.close()


async def test_full_outbox_drops_oldest_and_counts(tmp_path: Path) -> None:
    metrics = Metrics()
    box = make(tmp_path / "o.sqlite3", metrics, max_bytes=20_000, memory_records=100)
    for i in range(1000):
        box.put(reading(i), "gateway/boiler/temp", 1)
        if i % 10 == 0:
            await settle()
    await settle()
    assert box.bytes <= 20_000
    lost = dropped(metrics, "boiler", "outbox_full")
    assert lost > 0
    out = await take_all(box, len(box))
    assert len(out) + lost == 1000
    assert out[-1].seq == 1000  # the newest survived
    assert out[0].seq > 1  # the oldest went
    box.close()


async def test_drop_newest_policy_keeps_the_oldest(tmp_path: Path) -> None:
    metrics = Metrics()
    box = make(tmp_path / "o.sqlite3", metrics, max_bytes=20_000, overflow="drop_newest")
    for i in range(1000):
        box.put(reading(i), "gateway/boiler/temp", 1)
    await settle()
    out = await take_all(box, len(box))
    assert out[0].seq == 1
    assert dropped(metrics, "boiler", "outbox_full") == 1000 - len(out)
    box.close()


async def test_readings_older_than_max_age_are_dropped(tmp_path: Path) -> None:
    clock = Clock()
    metrics = Metrics()
    box = make(tmp_path / "o.sqlite3", metrics, clock, max_age=60)
    for i in range(5):
        box.put(reading(i, ts=clock.now), "t", 1)
    await settle()
    clock.now += 120
    box.put(reading(0, ts=clock.now), "t", 1)
    await settle()
    assert dropped(metrics, "boiler", "max_age") == 5
    out = await take_all(box, 1)
    assert [r.seq for r in out] == [6]
    box.close()


async def test_corrupt_database_is_set_aside(tmp_path: Path) -> None:
    db = tmp_path / "o.sqlite3"
    db.write_bytes(b"this is not a database" * 100)
    metrics = Metrics()
    box = make(db, metrics)
    box.put(reading(1), "t", 1)
    await settle()
    assert len(rows(db)) == 1
    assert list(tmp_path.glob("o.sqlite3.corrupt-*"))
    assert metrics.registry.get_sample_value("gateway_outbox_errors_total", {"kind": "corrupt"})
    box.close()


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_disk_full_degrades_to_memory_and_keeps_delivering(tiny_tmpfs: Path) -> None:
    metrics = Metrics()
    box = make(tiny_tmpfs / "o.sqlite3", metrics, retry_interval=0.05)
    filler = tiny_tmpfs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk
        while os.write(fd, b"x" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    for i in range(2000):
        box.put(reading(i), "gateway/boiler/temp", 1)
        if i % 100 == 0:
            await settle()
    await settle()
    assert box.degraded
    assert metrics.registry.get_sample_value("gateway_outbox_degraded") == 1
    assert metrics.registry.get_sample_value("gateway_outbox_errors_total", {"kind": "disk_full"})
    out = await take_all(box, 2000)  # still delivered, from memory
    assert [r.seq for r in out] == list(range(1, 2001))
    for record in out:
        box.ack(record)
    filler.unlink()  # space again: the outbox recovers
    box.put(reading(5000), "t", 1)
    await asyncio.sleep(0.2)
    assert not box.degraded
    assert metrics.registry.get_sample_value("gateway_outbox_degraded") == 0
    box.close()


async def test_checkpoints_happen_off_the_event_loop(tmp_path: Path) -> None:
    db = tmp_path / "o.sqlite3"
    box = make(db)
    box._checkpointer.stop()  # restart it with a short interval for the test
    box._checkpointer = Checkpointer(db, 0.05)
    box._checkpointer.start()
    before = db.stat().st_size
    for i in range(2000):
        box.put(reading(i), "gateway/boiler/temp", 1)
    await settle()
    wal = Path(f"{db}-wal")
    assert wal.stat().st_size > 100_000, "commits only append to the WAL"
    # The worker thread copies the WAL into the database file.
    async with asyncio.timeout(10):
        while db.stat().st_size <= before + 100_000:  # noqa: ASYNC110 - a file has no event
            await asyncio.sleep(0.05)
    box.close()
    assert not box._checkpointer._thread


def fill(directory: Path) -> Path:
    """Fill the filesystem of `directory` with one file; remove it to free the space."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"x" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


async def drain(box: Outbox, n: int) -> list[Record]:
    """Take and acknowledge `n` records, as a healthy session would."""
    out: list[Record] = []
    while len(out) < n:
        async with asyncio.timeout(5):
            batch = await box.take(1000)
        box.ack_many(batch)
        out += batch
    return out


async def test_full_disk_at_startup_keeps_the_backlog_and_starts_in_memory(
    tiny_tmpfs: Path,
) -> None:
    """Defect 1: a full disk is not corruption. The database is left as it is, the outbox runs
    from memory, and once the disk has room again the backlog is delivered."""
    db = tiny_tmpfs / "o.sqlite3"
    box = make(db)
    for i in range(20):
        box.put(reading(i), "t", 1)
    box.close()
    filler = fill(tiny_tmpfs)
    metrics = Metrics()
    box = make(db, metrics, retry_interval=0.05)
    assert not list(tiny_tmpfs.glob("o.sqlite3.corrupt-*"))
    assert box.degraded
    assert metrics.registry.get_sample_value("gateway_outbox_degraded") == 1
    assert not metrics.registry.get_sample_value("gateway_outbox_errors_total", {"kind": "corrupt"})
    box.put(reading(100), "t", 1)  # new readings are accepted (in memory) meanwhile
    await settle()
    filler.unlink()
    out = await drain(box, 21)  # the 20 from before come back without a restart
    assert [r.seq for r in out] == list(range(1, 22))
    async with asyncio.timeout(5):
        await box.wait_drained()
    box.close()


async def test_backlog_on_disk_survives_a_disk_failure_without_a_restart(
    tiny_tmpfs: Path,
) -> None:
    """Defect 2: a backlog beyond memory, then the disk fills, then it recovers: every reading
    is delivered, in order, and the outbox drains."""
    metrics = Metrics()
    box = make(tiny_tmpfs / "o.sqlite3", metrics, memory_records=100, retry_interval=0.05)
    for i in range(500):  # the broker is away: a backlog, mostly on disk
        box.put(reading(i), "t", 1)
        if i % 50 == 0:
            await settle()
    await settle()
    filler = fill(tiny_tmpfs)
    for i in range(500, 2500):
        box.put(reading(i), "t", 1)
        if i % 50 == 0:
            await settle()
    await settle()
    assert box.degraded
    filler.unlink()  # the disk recovers; the broker is back
    out = await drain(box, 2500)
    assert [r.seq for r in out] == list(range(1, 2501))
    async with asyncio.timeout(5):
        await box.wait_drained()
    assert len(box) == 0
    box.close()


def connection_of(box: Outbox) -> sqlite3.Connection:
    """The outbox's own SQLite connection (to count the work its queries do)."""
    db = box.store.db
    assert isinstance(db, sqlite3.Connection)
    return db


class StepCounter:
    """Counts SQLite virtual-machine steps on a connection (in units of 1,000): the work a
    query does, independent of how fast the machine is."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.steps = 0
        self.db = db
        db.set_progress_handler(self._tick, 1000)

    def _tick(self) -> int:
        self.steps += 1
        return 0

    def close(self) -> None:
        self.db.set_progress_handler(None, 0)


async def test_a_large_backlog_is_never_scanned_on_the_event_loop(tmp_path: Path) -> None:
    """Defect 3: with a large backlog on disk, the periodic expiry and the age gauge read a
    row or two, not the table (they cost 54 and 48 ms at 400k rows)."""
    clock = Clock()
    box = make(tmp_path / "o.sqlite3", clock=clock, memory_records=100)
    for i in range(50_000):
        box.put(reading(i, ts=clock.now), "gateway/boiler/temp", 1)
        if i % 5000 == 0:
            await settle()
    await settle()
    counter = StepCounter(connection_of(box))
    try:
        for _ in range(5):
            clock.now += 1.5  # the expiry check runs at most once a second
            box.put(reading(0, ts=clock.now), "t", 1)
            await settle()
            box.oldest_age()
    finally:
        counter.close()
    # A scan of 50k rows is some 500k steps (500 units) per call; an indexed read is a few.
    assert counter.steps < 50, counter.steps
    assert box.oldest_age() == pytest.approx(7.5, abs=0.1)
    box.close()


async def test_sync_full_commits_never_fsync_on_the_event_loop(tmp_path: Path) -> None:
    """Defect 3: with `sync: full` every commit fsyncs; it runs in the committer's thread, and
    the records become ready when it is done."""
    box = make(tmp_path / "o.sqlite3", sync="full")
    loop_thread = threading.get_ident()
    commits: list[int] = []
    assert box.store.db is not None
    box.store.db.set_trace_callback(
        lambda sql: commits.append(threading.get_ident()) if sql == "COMMIT" else None
    )
    for i in range(5):
        box.put(reading(i), "t", 1)
    out = await take_all(box, 5)
    assert [r.seq for r in out] == [1, 2, 3, 4, 5]
    assert commits
    assert loop_thread not in commits
    box.ack_many(out)
    box.close()
    assert rows(tmp_path / "o.sqlite3") == []


# -- disk failures: seqs never repeat, drops stay dropped (the state machine's findings) ------
def disk_full(box: Outbox, *, full: bool = True) -> None:
    """SQLite's own "disk full" (as the state machine does): no new pages. A write of records
    fails; deletes and seqs rows, which need none, still go in, as on a real full disk."""
    db = box.store.db
    assert db is not None
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count={pages if full else 1 << 30}")


def sigkill(box: Outbox) -> None:
    """The process dies: no close(), no final flush; only what is on disk remains."""
    box._cancel_timers()
    box._checkpointer.stop()
    box.store.close()


async def test_a_restart_on_a_full_disk_never_reuses_a_seq_that_went_out_from_memory(
    tmp_path: Path,
) -> None:
    """Machine failure 1 ("('a', 32) named two readings: 32, 48"): on a full disk, readings
    went out from memory and were acknowledged; the close could not write the one still held,
    and the seqs row went down with it, so the next run handed out the same seqs again."""
    db = tmp_path / "o.sqlite3"
    box = make(db, retry_interval=60)
    disk_full(box)
    for i in range(30):
        box.put(reading(i), "t", 1)
    await settle()
    assert box.degraded
    out = await take_all(box, 30)  # delivered from memory...
    box.ack_many(out[:-15])  # ...all but the last 15, still in flight at the close
    box.close()  # their write fails on the full disk: they are lost (README)

    box = make(db)
    box.put(reading(99), "t", 1)
    await settle()
    (new,) = await take_all(box, 1)
    assert new.seq > 30, "a seq that went out was handed out again"
    box.close()


@pytest.mark.parametrize("durability", ["disk", "spill"])
async def test_a_sigkill_in_memory_mode_never_reuses_a_seq(tmp_path: Path, durability: str) -> None:
    """The limitation the README used to state ("those readings' seqs may be used again"):
    readings went out from memory, beyond the seqs table (spill mode: beyond its reserved
    block), and were acknowledged; a SIGKILL, and the next run handed their seqs out again."""
    db = tmp_path / "o.sqlite3"
    clock = Clock()
    box = make(db, clock=clock, durability=durability, spill_after=0.05, retry_interval=60)
    box.put(reading(0), "t", 1)
    clock.now += 1
    await asyncio.sleep(0.1)  # on disk (spill mode: after spill_after)
    box.ack_many(await take_all(box, 1))
    await asyncio.sleep(ACK_FLUSH_DELAY + 0.1)  # (deleted: it does not come back)
    disk_full(box)
    for i in range(1, 10):
        box.put(reading(i), "t", 1)
    clock.now += 1
    await asyncio.sleep(0.1)
    assert box.degraded
    n = 10 + SEQ_BLOCK
    for i in range(10, n):
        box.put(reading(i), "t", 1)
    box.ack_many(await take_all(box, n - 1))  # all went out from memory, never rows
    sigkill(box)

    box = make(db, durability=durability)
    box.put(reading(99), "t", 1)
    await asyncio.sleep(0.1)
    (new,) = await take_all(box, 1)
    assert new.seq > n
    box.close()


async def test_readings_dropped_on_a_full_disk_stay_dropped_after_a_restart(
    tmp_path: Path,
) -> None:
    """Machine failures 2 and 3 ("('a', 1) overtaken by a newer one"; more fates than
    readings): the outbox reached max_bytes while the disk was full; the oldest readings (on
    disk) were dropped, but their deletes waited for a write with new records, which the disk
    refused, at the close too. After the restart they came back: delivered although counted
    dropped, after newer ones."""
    db = tmp_path / "o.sqlite3"
    metrics = Metrics()
    box = make(db, metrics, max_bytes=10_000, retry_interval=60)
    for i in range(40):
        box.put(reading(i), "gateway/boiler/temp", 1)
    await settle()
    disk_full(box)
    for i in range(40, 100):
        box.put(reading(i), "gateway/boiler/temp", 1)
        if i % 10 == 0:
            await settle()
    await settle()
    lost = dropped(metrics, "boiler", "outbox_full")
    assert box.degraded
    assert lost
    first = box.take_nowait(4)
    assert first[0].seq == lost + 1
    box.close()

    box = make(db)
    again = await drain(box, len(box))
    assert again
    assert min(r.seq for r in again) == first[0].seq, "a dropped reading came back"
    box.close()


async def test_a_dead_disk_holds_readings_beyond_their_reservation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that takes no write at all (an I/O error, not a full disk): readings go out from
    memory only while their seq is reserved on disk (spill mode reserved a block before the
    disk died); beyond it they wait, and go once a write works again."""

    def dead(*_: object, **__: object) -> None:
        raise StoreError("io", "disk I/O error")

    db = tmp_path / "o.sqlite3"
    box = make(db, durability="spill", retry_interval=0.05)
    box.put(reading(0), "t", 1)  # reserves 1..SEQ_BLOCK on disk
    box.ack_many(box.take_nowait(1))
    write = box.store.write
    monkeypatch.setattr(box.store, "write", dead)
    for i in range(1, SEQ_BLOCK + 200):
        box.put(reading(i), "t", 1)
    await asyncio.sleep(0.2)  # (retries that fail)
    assert box.degraded
    out = box.take_nowait(10_000)
    assert [r.seq for r in out] == list(range(2, SEQ_BLOCK + 1))
    assert box.take_nowait(10_000) == []  # the rest waits for a reservation
    monkeypatch.setattr(box.store, "write", write)
    box.ack_many(out)
    out = await drain(box, 200)
    assert [r.seq for r in out] == list(range(SEQ_BLOCK + 1, SEQ_BLOCK + 201))
    box.close()


async def test_readings_taken_while_the_file_is_unreadable_never_repeat_its_seqs(
    tmp_path: Path,
) -> None:
    """The file cannot be read at startup: its seqs are unknown, so nothing new goes out; once
    it can be read, readings whose seq it already used are dropped (counted), never sent."""
    state = tmp_path / "state"
    box = make(state / "o.sqlite3")
    for i in range(10):
        box.put(reading(i), "t", 1)
    box.close()
    state.rename(tmp_path / "aside")
    state.write_bytes(b"")  # a file where the directory should be: the outbox cannot open

    metrics = Metrics()
    box = make(state / "o.sqlite3", metrics, retry_interval=0.05)
    assert box.degraded
    for i in range(10, 15):
        box.put(reading(i), "t", 1)  # seqs 1..5: the file used those
    await settle()
    assert box.take_nowait(100) == []
    state.unlink()
    (tmp_path / "aside").rename(state)
    out = await drain(box, 10)
    assert [r.seq for r in out] == list(range(1, 11))  # the 10 from the file
    assert dropped(metrics, "boiler", "seq_unknown") == 5
    box.put(reading(20), "t", 1)
    (new,) = await drain(box, 1)
    assert new.seq == 11
    box.close()


# -- a backlog the disk cannot read --------------------------------------------------------------
class UnreadableRows:
    """The store's `read` fails with an I/O error (as SQLite reports a bad sector) for rows
    with ids in `bad`, while `failing`; everything else, writes included, works."""

    def __init__(self, box: Outbox, bad: range) -> None:
        self.bad, self.failing, self.attempts = bad, True, 0
        self._read = box.store.read
        box.store.read = self.read  # type: ignore[method-assign]

    def read(self, first: int, last: int, limit: int) -> list[Record]:
        if self.failing and first <= self.bad[-1] and last >= self.bad[0]:
            self.attempts += 1
            raise StoreError("io", "disk I/O error")
        return self._read(first, last, limit)


async def test_new_readings_go_on_while_the_backlog_cannot_be_read(tmp_path: Path) -> None:
    """Issue 11: an I/O error reading the backlog stalled every new reading behind it for as
    long as the disk failed. Now the backlog is set aside and read again with backoff; new
    readings go out (committed first), the backlog late, nothing lost, each in its order."""
    metrics = Metrics()
    box = make(tmp_path / "o.sqlite3", metrics, memory_records=100, retry_interval=0.2)
    for i in range(500):  # the broker is away: 100 ready in memory, 400 on disk only
        box.put(reading(i), "t", 1)
    await settle()
    disk = UnreadableRows(box, range(101, 501))
    first = await drain(box, 100)  # the broker is back
    assert [r.seq for r in first] == list(range(1, 101))
    assert box.take_nowait(100) == []  # the backlog's first read fails: set aside
    for i in range(500, 550):
        box.put(reading(i), "t", 1)
    new = await drain(box, 50)  # before: waited for the disk, forever
    assert [r.seq for r in new] == list(range(501, 551))
    assert all(r.id not in box.unwritten for r in new), "published before it was committed"
    assert box.unreadable_reason == "io: disk I/O error"
    assert not box.degraded  # writes work: new readings are still on disk first
    assert metrics.registry.get_sample_value("gateway_outbox_errors_total", {"kind": "io"})
    await asyncio.sleep(0.5)
    assert disk.attempts >= 2, "the backlog is read again"
    assert disk.attempts <= 20, "with backoff, not on every turn"
    disk.failing = False  # the disk reads again: the backlog follows, late, in its own order
    late = await drain(box, 400)
    assert [r.seq for r in late] == list(range(101, 501))
    assert box.unreadable_reason is None
    async with asyncio.timeout(5):
        await box.wait_drained()
    box.close()


async def test_a_backlog_set_aside_as_unreadable_survives_a_sigkill(tmp_path: Path) -> None:
    """The set-aside rows stay on disk: a restart delivers them first, as any backlog."""
    db = tmp_path / "o.sqlite3"
    box = make(db, memory_records=100, retry_interval=60)
    for i in range(300):
        box.put(reading(i), "t", 1)
    await settle()
    UnreadableRows(box, range(101, 301))
    await drain(box, 100)
    assert box.take_nowait(100) == []
    box.put(reading(300), "t", 1)
    (new,) = await drain(box, 1)
    assert new.seq == 301
    await asyncio.sleep(ACK_FLUSH_DELAY + 0.1)  # the deletes are on disk
    sigkill(box)

    box = make(db)
    out = await drain(box, 200)
    assert [r.seq for r in out] == list(range(101, 301))
    box.put(reading(301), "t", 1)
    (new,) = await drain(box, 1)
    assert new.seq == 302
    box.close()


async def test_readyz_and_status_say_why_a_backlog_waits_unread(tmp_path: Path) -> None:
    """The gateway's health view of the outbox above (readiness and /status, as served)."""
    from gateway.config import Config  # noqa: PLC0415
    from gateway.health import readiness, status_document  # noqa: PLC0415
    from gateway.lifecycle import Gateway  # noqa: PLC0415 - only this test needs the whole gateway

    cfg = Config.model_validate({"gateway": {"id": "gw", "state_dir": str(tmp_path)}})
    gw = Gateway(cfg).graph  # the gateway as wired: what health reads
    box = make(tmp_path / "o.sqlite3", gw.metrics, memory_records=100, retry_interval=60)
    gw.outbox = box
    for i in range(200):
        box.put(reading(i), "t", 1)
    await settle()
    assert status_document(gw)["outbox"]["unreadable"] is None
    UnreadableRows(box, range(101, 201))
    await drain(box, 100)
    assert box.take_nowait(100) == []
    why = "outbox cannot read its backlog on disk (io: disk I/O error); retrying"
    assert why in readiness(gw).reasons
    assert status_document(gw)["outbox"]["unreadable"] == "io: disk I/O error"
    box.close()


# -- issue 21, item 24: seqs at the int64 maximum (a file edited on disk, or restored) ----------

INT64_MAX = 2**63 - 1


@pytest.mark.parametrize("where", ["seqs-table", "row"])
async def test_a_seq_at_the_int64_maximum_neither_stops_commits_nor_goes_out(
    tmp_path: Path, where: str
) -> None:
    db = tmp_path / "outbox.sqlite3"
    box = make(db)
    box.put(reading(1), "t", 1)  # seq 1, a valid row
    await settle()
    box.close()
    with sqlite3.connect(db) as edit:
        if where == "seqs-table":
            edit.execute(
                "INSERT OR REPLACE INTO seqs (device, seq) VALUES ('boiler', ?)", (INT64_MAX,)
            )
        else:
            edit.execute(
                "INSERT INTO outbox (id, device, seq, topic, payload, qos, ts, size) "
                "VALUES (100, 'boiler', ?, 't', X'7b7d', 1, 1800000000.0, 100)",
                (INT64_MAX,),
            )

    metrics = Metrics()
    box = make(db, metrics)
    record = box.put(reading(2), "t", 1)
    await settle()
    assert record is not None
    assert record.seq == 2  # numbering goes on from the last valid seq
    assert [r[2] for r in rows(db) if r[2] != INT64_MAX] == [1, 2]  # the commit went through
    taken = await take_all(box, 2)
    assert [r.seq for r in taken] == [1, 2]  # the row beyond the bound is set aside, not sent
    assert box.take_nowait(10) == []
    assert dropped(metrics, "boiler", "seq_invalid") == (1 if where == "row" else 0)
    assert not box.degraded
    box.ack_many(taken)
    box.close()
    assert rows(db) == []
    assert seqs_table(db) == {"boiler": 2}  # the table is repaired


def test_a_value_sqlite_cannot_store_is_a_store_error(tmp_path: Path) -> None:
    """Whatever out-of-range value reaches a commit, the store says it cannot write it (the
    outbox then goes to memory mode, which /readyz reports) instead of raising a foreign
    error out of the event loop's callback."""
    store = Store(tmp_path / "outbox.sqlite3")
    store.open()
    record = Record(1, "boiler", 2**63, "t", b"{}", 1, 1_800_000_000.0, 100)
    with pytest.raises(StoreError) as info:
        store.write([record])
    assert info.value.kind == "io"
    assert "too large" in info.value.why
    store.close()


async def test_readyz_says_so_when_commits_fail_on_a_value_sqlite_cannot_store(
    tmp_path: Path,
) -> None:
    from gateway.config import Config  # noqa: PLC0415
    from gateway.health import readiness  # noqa: PLC0415
    from gateway.lifecycle import Gateway  # noqa: PLC0415 - only this test needs the whole gateway

    cfg = Config.model_validate({"gateway": {"id": "gw", "state_dir": str(tmp_path)}})
    gw = Gateway(cfg).graph  # the gateway as wired: what health reads
    box = make(tmp_path / "o.sqlite3", gw.metrics, retry_interval=60)
    gw.outbox = box
    box.put(reading(1), "t", 2**63)  # (a QoS no caller gives: any value SQLite cannot store)
    await settle()
    reasons = readiness(gw).reasons
    assert any(r.startswith("outbox in memory mode (io: ") and "too large" in r for r in reasons)
    box.close()
