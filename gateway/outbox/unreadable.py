"""A backlog the disk cannot read (an I/O error on a read): set aside, retried with backoff.

Without this, new readings waited behind the unreadable rows for as long as the disk failed:
the window publishes nothing newer than a backlog it has not read. Here the backlog's id range
is set aside (`Window.strand`) and newer readings go on as usual (committed first in
`durability: disk`: a read error says nothing about writes, whose own failures switch the mode).
The set-aside rows stay on disk, untouched: a retry every so often (exponential backoff with
jitter, capped at `retry_interval`) reads them back in batches to the front of the ready
queue, so they are delivered late, after newer readings of their device, each with its own `ts`
and `seq`. A restart reads them as an ordinary backlog. Every failed read is counted
(`gateway_outbox_errors_total{kind}`), and while a range waits `/readyz` and `/status` say why
(`OutboxStats.unreadable`).

This is the retry's state (why, and the backoff); the outbox's committer reads the rows back
when it is due.
"""

from __future__ import annotations

from gateway.backoff import Backoff, BackoffPolicy
from gateway.limits import UNREADABLE_FIRST_RETRY as FIRST_RETRY
from gateway.outbox.store import StoreError


class Unreadable:
    def __init__(self, retry_interval: float) -> None:
        self.backoff = Backoff(
            BackoffPolicy(initial=retry_interval * FIRST_RETRY, maximum=retry_interval)
        )
        self.reason = ""  # why the last read failed, while a range waits

    def failed(self, exc: StoreError) -> float:
        """A read failed: the delay before the next attempt."""
        self.reason = f"{exc.kind}: {exc.why}"
        return self.backoff.next_delay()

    def read_back(self) -> None:
        """A read worked: the next failure starts the backoff afresh."""
        self.backoff.reset()

    def over(self) -> bool:
        """Nothing set aside any more; True if something had been (worth a log line)."""
        was = bool(self.reason)
        self.reason = ""
        self.backoff.reset()
        return was
