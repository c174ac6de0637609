"""Each device's `seq`: 1, 2, 3, ... across restarts; now and then a gap, never a repeat.

The rule: a seq goes out (is published) only once a restart is sure to start past it, because
its record is a row on disk, or because the `seqs` table holds a reservation at or beyond it
(`covers`). A restart starts each device at max(seqs table, rows) + 1, so whatever ends the
process (SIGKILL, power cut, a close that cannot write), no seq that went out is used again.
A bound such as max_bytes / RECORD_OVERHEAD would not do: it bounds what is held at once, not
what was handed out and acknowledged from memory meanwhile.

- `durability: disk` in disk mode: every record is a row before it goes out, so the table
  moves only with deletes (raised to cover the rows they delete): the common commit touches the
  outbox's own pages only, and a SIGKILL skips no seq.
- `durability: spill`, and any durability after a disk failure (records go out from memory):
  the table holds a reservation up to `SEQ_BLOCK` ahead, written before a seq beyond it goes
  out. A SIGKILL then skips at most SEQ_BLOCK seqs of a device; a clean stop writes the exact
  values (`exact_rows`). While the disk takes no reservation at all, a device's records beyond
  its own wait in memory, unpublished; a seq that never went out may be handed out again after
  a crash, which no consumer can tell.
"""

from __future__ import annotations

from gateway.limits import SEQ_BLOCK, SEQ_MAX


class Numbering:
    def __init__(self) -> None:
        self.seqs: dict[str, int] = {}  # the last seq handed out, per device
        self.reserved: dict[str, int] = {}  # what the seqs table on disk holds
        self.dirty: set[str] = set()  # devices whose seqs row may be behind `seqs`

    def restore(self, stored: dict[str, int], behind: set[str]) -> None:
        """A file was loaded (or replaced by an empty one): `stored` is max(seqs table, rows)
        per device, `behind` the devices whose table row lags their rows (its value is not
        known: 0 here, so the next deletes raise it). Seqs handed out before stay handed out;
        only what the file's table holds counts as reserved."""
        for device, seq in stored.items():
            self.seqs[device] = max(seq, self.seqs.get(device, 0))
        self.reserved = {d: s for d, s in stored.items() if d not in behind}
        self.dirty = set(behind) | {d for d, s in self.seqs.items() if s > stored.get(d, 0)}

    def peek(self, device: str) -> int:
        seq = self.seqs.get(device, 0) + 1
        return 1 if seq > SEQ_MAX else seq

    def take(self, device: str) -> int:
        seq = self.seqs.get(device, 0) + 1
        if seq > SEQ_MAX:  # never reached by counting (limits.py); wrap rather than overflow
            seq = 1
        self.seqs[device] = seq
        self.dirty.add(device)
        return seq

    def covers(self, device: str, seq: int) -> bool:
        """`seq` may go out before its record is a row: a restart starts past it."""
        return seq <= self.reserved.get(device, 0)

    def needs_reservation(self, device: str) -> bool:
        """The next seq lies beyond what the seqs table has reserved."""
        return self.peek(device) > self.reserved.get(device, 0)

    def reservation(self, device: str) -> tuple[str, int]:
        return device, self.peek(device) - 1 + SEQ_BLOCK

    def rows(self, *, ahead: bool = False) -> list[tuple[str, int]]:
        """seqs rows that raise the table (with deletes, and while records go out from memory):
        each device's last seq, or with `ahead` a new reservation for a device that has used
        half of its own. Call `written` once committed."""
        rows: list[tuple[str, int]] = []
        for device in list(self.dirty):
            seq, reserved = self.seqs[device], self.reserved.get(device, 0)
            if ahead and seq + SEQ_BLOCK // 2 > reserved:
                rows.append((device, seq + SEQ_BLOCK))
            elif seq > reserved:
                rows.append((device, seq))
            else:
                self.dirty.discard(device)  # the table is ahead already
        return rows

    def exact_rows(self) -> list[tuple[str, int]]:
        """For a clean stop: each device's last seq wherever the table differs from it (a
        reservation beyond it is lowered, so a restart after a clean stop skips nothing)."""
        reserved = self.reserved
        return [(d, s) for d, s in self.seqs.items() if d in self.dirty or reserved.get(d, 0) > s]

    def written(self, rows: list[tuple[str, int]], *, exact: bool = False) -> None:
        """`rows` are committed (`exact`: they set the table rather than raise it)."""
        for device, seq in rows:
            if seq >= self.seqs.get(device, 0):
                self.dirty.discard(device)
            self.reserved[device] = seq if exact else max(seq, self.reserved.get(device, 0))
