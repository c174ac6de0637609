"""WAL checkpoints in a worker thread, so that their fsync never stalls the event loop."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)


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
