"""When new records are committed (`durability: disk`): group commit by loop turn and by time.

Every commit writes at least a page of WAL whatever it holds, so on flash the number of
commits is what wears the card (bench/footprint.py). A record waits for the end of
`commit_turns` event-loop iterations that brought records, or `commit_interval` seconds after
the first of them, whichever comes first. At a high rate the turns come quickly (at 1,000 lines/s
two turns are ~1 ms); at a low one the time bound caps the wait. `commit_interval: 0` commits
at the end of every turn that brought records.

What grouping by time buys at 200 readings/s over 10 devices (a line, 2 readings, about every
10 ms; bytes written per reading, bench/footprint.py): none 868-903, 5 ms 825-870, 20 ms
578-608, 50 ms 416. A commit of one line writes 2-3 WAL frames (the last leaf page, and about
every other commit a new leaf, its parent, the header page and the freelist's trunk): it is
the number of commits, not their size, that wears the card, and a bound on latency is a
bound on how few there can be.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class CommitGroup:
    def __init__(self, turns: int, wait: float, commit: Callable[[], None]) -> None:
        self.turns = turns if wait > 0 else 1
        self.wait = wait
        self._commit = commit
        self._seen = 0  # turns that brought records since the last commit
        self._turn: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def pending(self) -> bool:
        return self._turn is not None or self._timer is not None

    def added(self) -> None:
        """A record arrived (in the running loop turn)."""
        loop = asyncio.get_running_loop()
        if self._turn is None:
            self._turn = loop.call_soon(self._turn_ended)
        if self._timer is None and self.wait > 0:
            self._timer = loop.call_later(self.wait, self.fire)

    def _turn_ended(self) -> None:
        self._turn = None
        self._seen += 1
        if self._seen >= self.turns:
            self.fire()

    def fire(self) -> None:
        self.cancel()
        self._commit()

    def cancel(self) -> None:
        for handle in (self._turn, self._timer):
            if handle is not None:
                handle.cancel()
        self._turn = self._timer = None
        self._seen = 0
