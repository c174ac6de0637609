"""The outbox's relation to its disk, as one explicit state instead of flags.

    DISK ------ a write fails ------> MEMORY ---- a retry writes -----> RECOVERING
     ^                                  ^                                   |
     |                                  +-------- a write fails -----------+
     +------------- everything kept in memory is on disk again ------------+

DISK: a reading becomes publishable once committed (`durability: disk`) or at once (`spill`).
MEMORY: the disk failed (full, I/O error, could not even be opened); readings are kept in memory,
publishable at once, bounded by max_bytes; the disk is tried again every `retry_interval`.
RECOVERING: a retry worked; what was kept in memory is written back a batch per loop turn
(a large one at once would stall the loop); readings stay publishable at once meanwhile, so
their order is kept.

Apart from the mode: whether light writes (deletes and seqs rows, no new records) still work.
They need no new space, so a full disk takes them and a dead one does not; while they work they
go at once even in MEMORY (drops stay dropped, reservations let readings go out, numbering.py).
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass


class Mode(enum.Enum):
    DISK = "disk"
    MEMORY = "memory"
    RECOVERING = "recovering"


@dataclass(slots=True)
class DiskState:
    mode: Mode = Mode.DISK
    reason: str = ""  # why not DISK: "disk_full: database or disk is full"
    retry_at: float = 0.0  # monotonic time of the next write attempt while MEMORY
    light: bool = True  # the last light write worked (or none failed since a write did)

    def failed(self, kind: str, why: str, retry_interval: float) -> bool:
        """The disk failed; True when this is news (was DISK or RECOVERING before)."""
        news = self.mode is not Mode.MEMORY
        self.mode = Mode.MEMORY
        self.reason = f"{kind}: {why}"
        self.retry_at = time.monotonic() + retry_interval
        return news

    def resting(self) -> float:
        """Seconds until the disk may be tried again (0: now)."""
        if self.mode is not Mode.MEMORY:
            return 0.0
        return max(0.0, self.retry_at - time.monotonic())

    def wrote(self, everything_on_disk: bool) -> Mode:
        """A write worked: the previous mode, after moving on."""
        before = self.mode
        self.light = True
        if everything_on_disk:
            self.mode, self.reason = Mode.DISK, ""
        elif self.mode is Mode.MEMORY:
            self.mode = Mode.RECOVERING
        return before
