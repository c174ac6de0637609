"""Moved to `gateway.outbox` (one module per job); kept so that existing imports work."""

from gateway.outbox import (
    ACK_FLUSH_DELAY,
    CHECKPOINT_INTERVAL,
    MAX_LAZY_DELETES,
    Checkpointer,
    Mode,
    Outbox,
    Record,
)

__all__ = [
    "ACK_FLUSH_DELAY",
    "CHECKPOINT_INTERVAL",
    "MAX_LAZY_DELETES",
    "Checkpointer",
    "Mode",
    "Outbox",
    "Record",
]
