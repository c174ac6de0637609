"""The systemd watchdog pinger, which is also the event-loop lag probe.

Every tick (a quarter of WatchdogSec=, at most a second) the pinger wakes and measures how late
the event loop woke it: that lag is a metric. It then asks the supervisor whether it makes
progress (`Supervisor.stalled()`: its heartbeat ticks and no link overstays opening, backing off
or closing) and only then sends `WATCHDOG=1`. So the pings stop when

- the event loop is wedged (a blocking call, a busy loop): the pinger itself cannot run;
- the supervisor is stuck: a link's open or close that never ends, a stop that hangs;

and systemd restarts the service after WatchdogSec=. Without WATCHDOG_USEC nothing is sent, but
the lag is still measured. The pinger also refreshes systemd's STATUS= line when it changed (the
outbox count moves without any link changing state).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Self

from gateway.limits import WATCHDOG_MAX_TICK as MAX_TICK
from gateway.metrics import Metrics
from gateway.supervisor import Stall
from gateway.systemd import notify

log = logging.getLogger(__name__)


class Watchdog:
    """Owns the pinger task; `async with Watchdog(...)` runs it for the block's duration."""

    def __init__(
        self,
        stalled: Callable[[], Stall | None],
        metrics: Metrics,
        *,
        timeout: float | None,
        status: Callable[[], str] | None = None,
    ) -> None:
        self._stalled = stalled
        self._metrics = metrics
        self.timeout = timeout  # WatchdogSec= in seconds; None: not under a systemd watchdog
        self.tick = min(MAX_TICK, timeout / 4) if timeout else MAX_TICK
        self._status = status
        self._sent_status = ""
        self._withheld: Stall | None = None
        self.lag = 0.0
        self._tg = asyncio.TaskGroup()
        self._task: asyncio.Task[None] | None = None

    def status(self) -> float | None:
        """The event loop's lag as last measured (seconds); None until the watchdog runs."""
        return None if self._task is None else self.lag

    async def __aenter__(self) -> Self:
        await self._tg.__aenter__()
        self._task = self._tg.create_task(self._run(), name="watchdog")
        if self.timeout:
            log.info("systemd watchdog: %gs, pinging every %gs", self.timeout, self.tick)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._tg.__aexit__(exc_type, exc, tb)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            now = loop.time()
            self.lag = max(0.0, now - due)
            self._metrics.loop_lag.set(self.lag)
            self._check()
            due = now + self.tick
            await asyncio.sleep(self.tick)

    def _check(self) -> None:
        lines = []
        stall = self._stalled()
        if stall is None:
            if self._withheld is not None:
                log.warning("watchdog: progress again (%s resolved)", self._withheld.detail)
                self._withheld = None
            if self.timeout:
                lines.append("WATCHDOG=1")
                self._metrics.watchdog_pings.inc()
        else:
            if self._withheld is None or self._withheld.kind != stall.kind:
                log.error(
                    "watchdog: no progress, not pinging systemd (%s)%s",
                    stall.detail,
                    "; it will restart the gateway" if self.timeout else "",
                )
            self._withheld = stall
            self._metrics.watchdog_withheld.labels(stall.kind).inc()
        if self._status is not None and (status := self._status()) != self._sent_status:
            lines.append(status)
            self._sent_status = status
        if lines:
            notify(*lines)
