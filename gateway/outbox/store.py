"""The outbox's SQLite file: append records, delete them by id, read them back in id order.

WAL mode, checkpoints off the event loop (see checkpoint.py). Every sqlite3 or OS error leaves
this module as a `StoreError` whose `kind` says what it means for the data: `disk_full` and
`io` leave the file as it is (it is used again when the disk allows), `corrupt` is the only
kind after which the file is moved aside.

What a write costs on flash (bytes written per reading, see bench/footprint.py) is set here:
SQLite's Debian build zeroes deleted content (`secure_delete`), which rewrites every page a
delete touches; it is off, as the rows hold nothing secret.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.limits import PAGE_SIZE, SEQ_MAX
from gateway.outbox.records import Record, ranges

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    ts REAL NOT NULL,
    size INTEGER NOT NULL,
    sensor TEXT
);
CREATE TABLE IF NOT EXISTS seqs (device TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""
# `payload` holds a record's fields (the name is 0.2.0's, whose rows hold whole payloads: see
# `from_0_2_0`); `sensor` came after 0.2.0 (added to such a file when it is first written).
_COLUMNS = "id, device, seq, topic, sensor, payload, qos, ts, size"
_INSERT = f"INSERT OR REPLACE INTO outbox ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)"  # noqa: S608
_SELECT = f"SELECT {_COLUMNS} FROM outbox WHERE id BETWEEN ? AND ? ORDER BY id LIMIT ?"  # noqa: S608
_SELECT_0_2_0 = _SELECT.replace("sensor", "NULL")
_ADD_SENSOR = "ALTER TABLE outbox ADD COLUMN sensor TEXT"
_UPSERT = "INSERT INTO seqs (device, seq) VALUES (?, ?) ON CONFLICT(device) DO UPDATE SET seq = "
_RAISE_SEQ, _SET_SEQ = _UPSERT + "max(seq, excluded.seq)", _UPSERT + "excluded.seq"
_SQLITE_FULL, _SQLITE_CORRUPT, _SQLITE_NOTADB = 13, 11, 26


class StoreError(Exception):
    def __init__(self, kind: str, why: str) -> None:
        super().__init__(f"{kind}: {why}")
        self.kind = kind  # disk_full | io | corrupt
        self.why = why


def classify(exc: BaseException) -> StoreError:
    """A foreign error as what it means for the file."""
    if isinstance(exc, sqlite3.Error):
        code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or type(exc) is sqlite3.DatabaseError:
            return StoreError("corrupt", str(exc))
        if code == _SQLITE_FULL or "full" in str(exc).lower():
            return StoreError("disk_full", str(exc))
        return StoreError("io", str(exc))
    if isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC
        return StoreError("disk_full", str(exc))
    return StoreError("io", str(exc))


@dataclass(slots=True)
class Stored:
    """What a previous run left: the bounds of its rows and where each device's seq stands."""

    count: int = 0
    bytes: int = 0
    first_id: int = 0  # 0: no rows
    last_id: int = 0
    seqs: dict[str, int] = field(default_factory=dict)  # max(seqs table, rows), per device
    behind: set[str] = field(default_factory=set)  # devices whose seqs row is behind the rows
    # Beyond SEQ_MAX (an edited or damaged file): rows set aside, devices whose seqs row is
    # ignored (numbering goes on from their last valid seq; the row is to be rewritten).
    invalid: list[Record] = field(default_factory=list)
    damaged: set[str] = field(default_factory=set)


def from_0_2_0(row: tuple[int, str, int, str, None, bytes, int, float, int]) -> Record:
    """A row written by 0.2.0, which stored the whole payload (`{...,"seq": N}`) and no sensor:
    its fields are the payload's members but the last (`seq`), and a reading's sensor is its
    topic's last level (`<prefix>/<device>/<sensor>`; a device-mode object is not shaped as
    a reading). Rows from after 0.2.0 hold fields, which never start with `{`."""
    i, device, seq, topic, _, payload, qos, ts, size = row
    suffix = b', "seq": %d}' % seq
    fields = payload[1 : -len(suffix)] if payload.endswith(suffix) else payload[1:-1]
    sensor: str | None = None
    if fields.startswith(b'"value": ') and _READING_KEYS.match(fields):
        sensor = topic.rsplit("/", 1)[-1]
    return Record(i, device, seq, topic, sensor, fields, qos, ts, size)


# A reading's fields as 0.2.0 wrote them: value, unit, ts. (A device-mode object of exactly two
# sensors named "value" and "unit" would pass for a reading; the sensor matters only in a
# batch's array, and a single payload renders the same either way.)
_READING_KEYS = re.compile(rb'"value": .*, "unit": .*, "ts": [-0-9.eE+]+\Z', re.DOTALL)


def _record(row: tuple[int, str, int, str, str | None, bytes, int, float, int]) -> Record:
    if row[5][:1] == b"{":
        return from_0_2_0(row)  # type: ignore[arg-type]
    return Record(*row)


def _has_sensor(db: sqlite3.Connection) -> bool:
    return any(column[1] == "sensor" for column in db.execute("PRAGMA table_info(outbox)"))


def _check(db: sqlite3.Connection) -> None:
    (verdict,) = db.execute("PRAGMA quick_check(1)").fetchone()
    if verdict != "ok":
        raise sqlite3.DatabaseError(f"quick_check: {verdict}")


class Store:
    def __init__(self, path: Path, *, sync_full: bool = False) -> None:
        self.path = path
        self.sync_full = sync_full
        self.db: sqlite3.Connection | None = None
        self.reader: sqlite3.Connection | None = None  # its own while commits run in a thread
        self.exclusive = False
        self._sensor_column = True  # False: a 0.2.0 file not written since (see `write`)

    @property
    def is_open(self) -> bool:
        return self.db is not None

    def open(self, *, exclusive: bool = False) -> None:
        """`exclusive`: keep the WAL index in memory instead of the `-shm` file, which a full
        disk cannot create: the rows can still be read (and written once there is room), but
        no other connection (the checkpointer) gets in. For a start on a full disk only.
        With `sync_full` the commits run in a worker thread (each fsyncs): the loop reads
        through a connection of its own, so that it never waits for one of them."""
        self.exclusive = exclusive
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = self._connect(exclusive)
            self.reader = self._connect() if self.sync_full and not exclusive else self.db
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise classify(exc) from exc

    def _connect(self, exclusive: bool = False) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            if exclusive:
                db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # (before the first write only)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if self.sync_full else 'NORMAL'}")
            # Checkpoints (which fsync) run in the Checkpointer's thread, never inside a commit
            # on the event loop: an automatic one stalled the loop for ~20 ms every few 100 ms.
            db.execute("PRAGMA wal_autocheckpoint=0")
            db.execute("PRAGMA secure_delete=OFF")
            db.executescript(SCHEMA)
            _check(db)
            self._sensor_column = _has_sensor(db)
        except BaseException:
            db.close()
            raise
        return db

    def close(self, *, truncate_wal: bool = False) -> None:
        for db in {id(c): c for c in (self.reader, self.db) if c is not None}.values():
            if truncate_wal and db is self.db:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.close()
        self.db = self.reader = None

    def set_aside(self, stamp: int) -> Path:
        """Move a corrupt file (and its WAL and index) out of the way; returns the new name."""
        self.close()
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                src.replace(Path(f"{aside}{suffix}"))
        return aside

    def load(self) -> Stored:
        """Once at open: bounds, totals and seqs (one pass over the table, before any link)."""
        db = self._need(self.reader)
        try:
            stored = Stored()
            for device, seq in db.execute("SELECT device, seq FROM seqs"):
                if 0 <= seq <= SEQ_MAX:
                    stored.seqs[device] = seq
                else:
                    stored.damaged.add(device)
            for device, seq in db.execute(
                "SELECT device, max(seq) FROM outbox WHERE seq BETWEEN 1 AND ? GROUP BY device",
                (SEQ_MAX,),
            ):
                if seq > stored.seqs.get(device, 0):
                    stored.seqs[device] = seq
                    stored.behind.add(device)  # the table must catch up before those rows go
            columns = _COLUMNS if self._sensor_column else _COLUMNS.replace("sensor", "NULL")
            stored.invalid = [
                _record(row)
                for row in db.execute(
                    f"SELECT {columns} FROM outbox WHERE seq NOT BETWEEN 1 AND ?",  # noqa: S608
                    (SEQ_MAX,),
                )
            ]
            stored.count, stored.bytes, stored.first_id, stored.last_id = db.execute(
                "SELECT count(*), coalesce(sum(size), 0), coalesce(min(id), 0), "
                "coalesce(max(id), 0) FROM outbox"
            ).fetchone()
        except sqlite3.Error as exc:
            raise classify(exc) from exc
        return stored

    def write(
        self,
        records: Sequence[Record],
        deletes: Iterable[int] = (),
        seqs: Sequence[tuple[str, int]] = (),
        *,
        exact_seqs: bool = False,
    ) -> None:
        """One transaction: insert `records`, delete the ids `deletes`, raise the seqs rows
        (`exact_seqs`: set them, lowering a reservation; see numbering.py)."""
        db = self._need(self.db)
        in_txn = False
        try:
            db.execute("BEGIN")
            in_txn = True
            if records:
                if not self._sensor_column:  # a 0.2.0 file: the column comes with its first row
                    db.execute(_ADD_SENSOR)
                db.executemany(
                    _INSERT,
                    [
                        (r.id, r.device, r.seq, r.topic, r.sensor, r.fields, r.qos, r.ts, r.size)
                        for r in records
                    ],
                )
            if seqs:
                db.executemany(_SET_SEQ if exact_seqs else _RAISE_SEQ, seqs)
            for first, final in ranges(deletes):
                db.execute("DELETE FROM outbox WHERE id BETWEEN ? AND ?", (first, final))
            db.execute("COMMIT")
            in_txn = False
            if records:
                self._sensor_column = True
        except (sqlite3.Error, OSError, OverflowError) as exc:
            # (OverflowError: a value SQLite cannot store, which no retry will change; it
            # must not escape a commit scheduled on the event loop.)
            raise classify(exc) from exc
        finally:
            if in_txn:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")

    def read(self, first: int, last: int, limit: int) -> list[Record]:
        """Rows with ids in [first, last], in id order: an index range, never a scan."""
        db = self._need(self.reader)
        try:
            query = _SELECT if self._sensor_column else _SELECT_0_2_0
            rows = db.execute(query, (first, last, limit)).fetchall()
        except sqlite3.Error as exc:
            raise classify(exc) from exc
        return [_record(row) for row in rows]

    def first_ts(self, first: int, last: int) -> float | None:
        """`ts` of the first row with an id in [first, last] (one index lookup)."""
        db = self._need(self.reader)
        try:
            row = db.execute(
                "SELECT ts FROM outbox WHERE id BETWEEN ? AND ? ORDER BY id LIMIT 1", (first, last)
            ).fetchone()
        except sqlite3.Error as exc:
            raise classify(exc) from exc
        return None if row is None else float(row[0])

    @staticmethod
    def _need(db: sqlite3.Connection | None) -> sqlite3.Connection:
        if db is None:
            raise StoreError("io", "the outbox database is not open")
        return db
