"""The durable outbox: every reading is stored before it counts as accepted (or, with
`durability: spill`, held in memory while the broker keeps up) and leaves only when the broker
acknowledged it. `Outbox` (outbox.py) is the interface; one module per part: `writer` (the
records and the write path), `store` (SQLite), `window` (in flight, ready, backlog, tail),
`numbering` (seq), `mode` (disk, memory, recovering), `bounds` (max_bytes, max_age), `due` (the
committer's agenda), `unreadable`, `checkpoint` (WAL checkpoints off the loop)."""

from gateway.outbox.checkpoint import Checkpointer
from gateway.outbox.mode import Mode
from gateway.outbox.outbox import Outbox, OutboxStats
from gateway.outbox.records import Record

__all__ = ["Checkpointer", "Mode", "Outbox", "OutboxStats", "Record"]
