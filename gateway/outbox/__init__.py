"""The durable outbox: every reading is stored before it counts as accepted (or, with
`durability: spill`, held in memory while the broker keeps up) and leaves only when the broker
acknowledged it. One module per job: `store` (SQLite), `window` (in flight, ready, backlog,
tail), `numbering` (seq), `mode` (disk, memory, recovering), `bounds` (max_bytes, max_age),
`checkpoint` (WAL checkpoints off the loop), and `outbox`, which puts them together."""

from gateway.outbox.checkpoint import Checkpointer
from gateway.outbox.mode import Mode
from gateway.outbox.outbox import Outbox
from gateway.outbox.records import Record

__all__ = [
    "Checkpointer",
    "Mode",
    "Outbox",
    "Record",
]
