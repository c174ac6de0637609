"""What the outbox's parts that act on the whole (`bounds.py`, `unreadable.py`) use of the
outbox they serve, as a Protocol: they name it without importing the outbox that owns them,
so the package's imports stay a tree (tests/test_import_graph.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from gateway.config import OutboxConfig
from gateway.metrics import Metrics
from gateway.outbox.records import Record
from gateway.outbox.store import Store, StoreError
from gateway.outbox.window import Window


class Shared(Protocol):
    path: Path
    cfg: OutboxConfig
    _metrics: Metrics
    _clock: Callable[[], float]
    store: Store
    window: Window
    unwritten: dict[int, Record]
    deletes: set[int]
    count: int
    total: int
    _closed: bool

    def _changed(self) -> None: ...

    def on_disk(self, record: Record) -> bool: ...

    def _publishable(self, record: Record) -> bool: ...

    def _schedule_deletes(self, *, soon: bool = False) -> None: ...

    def _failed(self, what: str, exc: StoreError) -> None: ...
