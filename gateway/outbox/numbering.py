"""Each device's `seq`: 1, 2, 3, ... across restarts, never repeated.

With `durability: disk` every published record is a row first, and rows carry their seq, so the
`seqs` table needs to move only when rows are deleted (with the deletes): the common commit
touches the outbox's own pages only. With `durability: spill` most records are acknowledged
before they were ever written, so no row remembers their seq: the table holds a reservation,
`SEQ_BLOCK` ahead of what was handed out, written before a seq beyond it is used. A SIGKILL then
skips at most SEQ_BLOCK numbers of a device; a clean stop writes the exact values.
"""

from __future__ import annotations

SEQ_BLOCK = 1000  # seqs reserved at once per device in spill mode


class Numbering:
    def __init__(self, *, reserve: bool = False) -> None:
        self.reserve = reserve
        self.seqs: dict[str, int] = {}  # the last seq handed out, per device
        self.dirty: set[str] = set()  # devices whose seqs row is behind `seqs`
        self._reserved: dict[str, int] = {}  # spill mode: what the seqs table allows

    def restore(self, seqs: dict[str, int], behind: set[str]) -> None:
        """From the store: max(seqs table, rows) per device; `behind`: the table is behind."""
        self.seqs = dict(seqs)
        self.dirty = set(behind)
        self._reserved = dict(seqs) if self.reserve else {}

    def peek(self, device: str) -> int:
        return self.seqs.get(device, 0) + 1

    def take(self, device: str) -> int:
        seq = self.seqs.get(device, 0) + 1
        self.seqs[device] = seq
        self.dirty.add(device)
        return seq

    def needs_reservation(self, device: str) -> bool:
        """Spill mode: the next seq lies beyond what the seqs table has reserved."""
        return self.reserve and self.peek(device) > self._reserved.get(device, 0)

    def reservation(self, device: str) -> tuple[str, int]:
        return device, self.peek(device) - 1 + SEQ_BLOCK

    def reserved(self, rows: list[tuple[str, int]]) -> None:
        for device, seq in rows:
            self._reserved[device] = max(seq, self._reserved.get(device, 0))

    def rows(self) -> list[tuple[str, int]]:
        """seqs rows to write (with deletes, and on close); call `written` once committed."""
        return [(device, self.seqs[device]) for device in self.dirty]

    def written(self, rows: list[tuple[str, int]]) -> None:
        for device, seq in rows:
            if self.seqs.get(device) == seq:
                self.dirty.discard(device)
