"""When the outbox's committer acts next: one deadline per kind of work, in loop time.

The committer is one task (outbox.py) that sleeps until the earliest of these or until a put,
an acknowledgement or a failure wakes it; this is its agenda, pure data. It replaces a timer
handle per kind of work and a `call_soon` per loop turn that brought records.

Group commit (`durability: disk`): a record waits for the end of `commit_turns` event-loop
iterations that brought records, or `commit_interval` seconds after the first of them,
whichever comes first. At a high rate the turns come quickly (at 1,000 lines/s two turns are
~1 ms); at a low one the time bound caps the wait. `commit_interval: 0` commits at the end of
every turn that brought records. Every commit writes at least a page of WAL whatever it holds,
so on flash the number of commits is what wears the card (bench/footprint.py): at 200
readings/s over 10 devices, bytes written per reading: none 868-903, 5 ms 825-870, 20 ms
578-608, 50 ms 416. A bound on latency is a bound on how few commits there can be.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

NEVER = math.inf


@dataclass(slots=True)
class Due:
    turns_needed: int  # commit_turns (1 without a commit_interval)
    interval: float  # commit_interval (0: at the end of every turn)
    pending: bool = False  # new records wait for a grouped commit
    fresh: bool = False  # records came since the committer last woke (this turn brought some)
    now: bool = False  # a write at the end of this turn (recovery, a light write, ...)
    turns: int = 0  # turns that brought records since the last commit
    commit: float = NEVER  # the group's time bound
    deletes: float = NEVER  # acknowledged records' deletes
    retry: float = NEVER  # the disk, again (memory mode)
    spill: float = NEVER  # `durability: spill`: records not acknowledged in time
    unreadable: float = NEVER  # a backlog set aside, read again

    @classmethod
    def of(cls, turns: int, interval: float) -> Due:
        return cls(turns if interval > 0 else 1, interval)

    def added(self, now: float) -> None:
        """New records, for a grouped commit."""
        self.fresh = True
        if not self.pending:
            self.pending = True
            if self.interval > 0:
                self.commit = now + self.interval

    def turn_ended(self) -> bool:
        """The committer woke after a turn that brought records: is the group complete?"""
        if not self.pending:
            return False
        if self.fresh:
            self.fresh = False
            self.turns += 1
        return self.turns >= self.turns_needed

    def committed(self) -> None:
        self.pending = self.now = self.fresh = False
        self.turns = 0
        self.commit = NEVER

    def next(self) -> float:
        """The earliest deadline (NEVER: none; a write `now` is for the wake-up itself)."""
        return min(self.commit, self.deletes, self.retry, self.spill, self.unreadable)
