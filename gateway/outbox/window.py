"""Where each record not yet acknowledged is, in the order it is to be published.

    unreadable | in flight | ready (memory) | backlog (disk only: ids first..last) | tail
    (disk only)    taken      ids ascending       read back in batches                newest

Ids only grow from left to right: a record goes to `ready` only while the backlog is empty, so
nothing ever overtakes an older record of its device. `in flight` records go back to the front
of `ready` when their publish did not complete. The tail holds records that cannot be ready
yet: with `durability: disk` those not yet committed; in the other cases those behind a backlog
or beyond `memory_records`. A tail record that is on disk may leave memory and join the backlog.

A backlog the disk could not read (an I/O error) is set aside as `unreadable` id ranges, so that
newer records go on (`strand`); read back later, its records go to the front of `ready`
(`recovered`): late, the one exception to the order above.

Pure bookkeeping, no SQLite: the outbox reads the backlog and tells the window what it got.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator

from gateway.outbox.records import Record


class Window:
    def __init__(self, memory_records: int) -> None:
        self.memory_records = memory_records
        self.ready: deque[Record] = deque()
        self.inflight: dict[int, Record] = {}
        self.tail: dict[int, Record] = {}  # in id order
        self.first = 0  # backlog: ids first..last, on disk only (first > last: none)
        self.last = -1
        self.unreadable: list[tuple[int, int]] = []  # set-aside backlog ranges, oldest first

    # -- the backlog -------------------------------------------------------------------------
    @property
    def backlog(self) -> bool:
        return self.first <= self.last

    def extend_backlog(self, first: int, last: int) -> None:
        if not self.backlog:
            self.first = first
        self.last = max(self.last, last)

    def advance_backlog(self, past: int) -> None:
        """Records up to id `past` were read (or dropped): the backlog starts after it."""
        self.first = max(self.first, past + 1)

    def end_backlog(self) -> None:
        self.first, self.last = 0, -1

    def strand(self) -> None:
        """The backlog could not be read: set it aside, so that newer records may be ready."""
        if self.backlog:
            self.unreadable.append((self.first, self.last))
            self.end_backlog()

    def recovered(self, records: list[Record], *, complete: bool) -> None:
        """A batch read back from the front of the first unreadable range (`complete`: that
        was all of it). Older than anything else here: it goes first."""
        first, last = self.unreadable[0]
        if records:
            first = records[-1].id + 1
            self.ready.extendleft(reversed(records))
        if complete or first > last:
            del self.unreadable[0]
        else:
            self.unreadable[0] = (first, last)

    def room(self) -> int:
        return max(0, self.memory_records - len(self.ready))

    # -- moving records ----------------------------------------------------------------------
    def admit(self, records: Iterable[Record], on_disk: Callable[[Record], bool]) -> None:
        """Records that may be published now, oldest first: to `ready` if nothing older waits
        on disk and memory has room, else to the backlog when on disk, else to the tail."""
        for record in records:
            if not self.backlog and not self.tail and self.room():
                self.ready.append(record)
            elif on_disk(record) and not self.tail:
                self.extend_backlog(record.id, record.id)
            else:
                self.tail[record.id] = record

    def hold(self, record: Record) -> None:
        """A record that is not publishable yet (waiting for its commit)."""
        self.tail[record.id] = record

    def settle_tail(
        self, on_disk: Callable[[Record], bool], publishable: Callable[[Record], bool]
    ) -> None:
        """Move tail records on: to `ready` while there is no backlog and room (if they may be
        published), else those on disk to the backlog, in order; stop at the first that can do
        neither (it keeps its place, and so does everything behind it)."""
        while self.tail:
            record = next(iter(self.tail.values()))
            if not self.backlog and self.room() and publishable(record):
                self.ready.append(record)
            elif on_disk(record) and (self.backlog or not self.room()):
                self.extend_backlog(record.id, record.id)
            else:
                return
            del self.tail[record.id]

    def loaded(self, records: list[Record], *, complete: bool) -> None:
        """A batch read back from the backlog's front; `complete`: that was all of it."""
        self.ready.extend(records)
        if records:
            self.advance_backlog(records[-1].id)
        if complete:
            self.end_backlog()

    def take(self, limit: int) -> list[Record]:
        ready = self.ready
        batch = [ready.popleft() for _ in range(min(limit, len(ready)))]
        for record in batch:
            self.inflight[record.id] = record
        return batch

    def done(self, record: Record) -> bool:
        """The record left flight (acknowledged); False if it was not in flight."""
        return self.inflight.pop(record.id, None) is not None

    def requeue(self, records: Iterable[Record]) -> None:
        back = sorted(
            (r for r in records if self.inflight.pop(r.id, None) is not None), key=lambda r: r.id
        )
        self.ready.extendleft(reversed(back))

    # -- the oldest end, for bounds ----------------------------------------------------------
    def oldest_in_memory(self) -> Iterator[Record]:
        """Records not in flight, oldest first: ready, then (after the backlog) the tail."""
        yield from list(self.ready)
        yield from list(self.tail.values())

    def remove(self, ids: set[int]) -> None:
        if self.ready and any(r.id in ids for r in self.ready):
            self.ready = deque(r for r in self.ready if r.id not in ids)
        for i in ids & self.tail.keys():
            del self.tail[i]
