"""Run each link as a named task in one TaskGroup; re-enter it with backoff when it fails.

A link is an async context manager that owns one handle (a serial fd, an MQTT connection):
entering it opens the handle, `run()` works until the handle fails, leaving it releases the
handle whatever happened. The supervisor enters the link under the link's open timeout, runs it,
classifies the failure, backs off (exponential, full jitter, capped) and re-enters it, forever.
A failing link never cancels or stalls its siblings: every exception except cancellation is
caught in the link's own task. Cancellation (shutdown, `stop()`) always propagates.

Progress (what the systemd watchdog asks, `stalled()`): the supervisor's heartbeat task ticks,
and no link overstays a transitional state: `starting` beyond its open timeout, `backing_off`
beyond its drawn delay, closing its handle or a `stop()` beyond `stop_timeout`, each plus
`stall_timeout`. A link may stay `up` (or `failed`) forever; that is not a stall. Each link's
task also sets the logging context (`current_link`), so every line logged for a link names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from gateway.backoff import Backoff, BackoffPolicy
from gateway.errors import FatalLinkError, LinkError
from gateway.logs import current_link
from gateway.metrics import Metrics

log = logging.getLogger(__name__)


class Link(Protocol):
    """What the supervisor needs from a link."""

    name: str  # e.g. "serial:boiler"; unique among running links
    open_timeout: float  # seconds allowed for __aenter__
    backoff: BackoffPolicy

    async def __aenter__(self) -> object: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...

    async def run(self) -> None:
        """Work until the handle fails (raise a LinkError) or the task is cancelled."""


@runtime_checkable
class Replugged(Protocol):
    """A link that can tell when its handle may be back (a device node reappeared): the
    supervisor then retries at once instead of waiting out its backoff."""

    async def wait_replugged(self) -> None:
        """Return when what the link opens changed since the call began."""


@dataclass(slots=True)
class LinkStatus:
    """What is known about one supervised link; read by metrics, logs and /status."""

    name: str
    state: str = "starting"
    since: float = field(default_factory=time.time)
    failures: int = 0
    last_error: str | None = None
    last_delay: float | None = None
    delays: list[float] = field(default_factory=list)  # recent backoff delays (bounded)
    starts: int = 0  # times the link was entered (opened, connected) since the gateway started
    up_since: float | None = None  # monotonic time the link last came up, None while not up
    # Monotonic time by which the link must leave its transitional state (None: no bound).
    deadline: float | None = None
    deadline_for: str = ""  # "starting", "backing_off", "closing" or "stopping"


@dataclass(frozen=True, slots=True)
class Stall:
    """Why the supervisor is not making progress."""

    kind: str  # heartbeat, starting, backing_off, closing, stopping: a bounded metric label
    detail: str


class Supervisor:
    """Owns the TaskGroup in which every link runs."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        on_change: Callable[[], None] | None = None,
        stall_timeout: float = 10.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self._metrics = metrics
        self._on_change = on_change
        self._stall_timeout = stall_timeout
        self._stop_timeout = stop_timeout
        self.beat = time.monotonic()  # the heartbeat task's latest tick
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._tg = asyncio.TaskGroup()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._links: dict[str, Link] = {}
        self.status: dict[str, LinkStatus] = {}

    async def __aenter__(self) -> Self:
        await self._tg.__aenter__()
        self._heartbeat_task = self._tg.create_task(self._heartbeat(), name="supervisor-heartbeat")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        # Leaving the block ends every link: cancel them, then let the TaskGroup wait for them.
        for task in self._tasks.values():
            task.cancel()
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
        await self._tg.__aexit__(exc_type, exc, tb)
        return None

    def __contains__(self, name: str) -> bool:
        return name in self._tasks

    def link(self, name: str) -> Link | None:
        return self._links.get(name)

    def start(self, link: Link) -> None:
        if link.name in self._tasks:
            raise ValueError(f"link {link.name} is already running")
        previous = self.status.get(link.name)
        # A restarted link (reload) keeps counting: `starts` is since the gateway started.
        self.status[link.name] = LinkStatus(link.name, starts=previous.starts if previous else 0)
        self._links[link.name] = link
        task = self._tg.create_task(self._supervise(link), name=f"link[{link.name}]")
        self._tasks[link.name] = task
        task.add_done_callback(functools.partial(self._forget, link.name))

    async def stop(self, name: str) -> bool:
        """Cancel one link and wait, at most `stop_timeout`, until it has released its handle.

        False when it did not finish in time: the caller goes on (a shutdown must stay bounded),
        the task stays in the TaskGroup, the link stays `stopping` and counts as stalled."""
        task = self._tasks.get(name)
        if task is None:
            return True
        status = self.status[name]
        status.deadline, status.deadline_for = time.monotonic() + self._stop_timeout, "stopping"
        task.cancel()
        # asyncio.wait does not re-raise the task's CancelledError, but our own cancellation
        # (the caller being cancelled) still propagates.
        done, _ = await asyncio.wait({task}, timeout=self._stop_timeout)
        if not done:
            log.error(
                "link %s did not stop within %gs (stuck closing its handle); going on without it",
                name,
                self._stop_timeout,
            )
        return bool(done)

    def _forget(self, name: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(name) is task:  # not a newer link started under the same name
            del self._tasks[name]
            self._links.pop(name, None)
            status = self.status[name]
            if status.state not in ("stopped", "failed"):
                # Cancelled before it first ran, so _supervise's `finally` never ran either.
                self._set(status, "stopped")

    async def _heartbeat(self) -> None:
        interval = min(1.0, self._stall_timeout / 4)
        while True:
            self.beat = time.monotonic()
            await asyncio.sleep(interval)

    def stalled(self) -> Stall | None:
        """Why the supervisor is stuck, or None while it makes progress (see the module doc)."""
        now = time.monotonic()
        if (age := now - self.beat) > self._stall_timeout:
            return Stall("heartbeat", f"supervisor heartbeat is {age:.1f}s old")
        for status in self.status.values():
            if status.deadline is not None and now > status.deadline + self._stall_timeout:
                overdue = now - status.deadline
                what = status.deadline_for
                return Stall(what, f"link {status.name} is {overdue:.1f}s overdue {what}")
        return None

    def _set(self, status: LinkStatus, state: str, within: float | None = None) -> None:
        if status.state != state:
            log.info("link %s: %s -> %s", status.name, status.state, state)
        status.state, status.since = state, time.time()
        if status.deadline_for != "stopping" or state == "stopped":
            status.deadline = None if within is None else time.monotonic() + within
            status.deadline_for = state if within is not None else ""
        self._metrics.set_link_state(status.name, state)
        if self._on_change is not None:
            self._on_change()

    async def _supervise(self, link: Link) -> None:
        current_link.set(link.name)  # this task's context: every line it logs names the link
        status = self.status[link.name]
        backoff = Backoff(link.backoff)
        try:
            while True:
                try:
                    await self._run_once(link, status)
                except FatalLinkError as exc:
                    self._record_failure(link, status, exc)
                    log.error("link %s failed and will not be retried: %s", link.name, exc)
                    self._set(status, "failed")
                    return
                except Exception as exc:
                    self._record_failure(link, status, exc)
                # Only time spent up counts as healthy: a link that takes long to *fail to open*
                # (a connect timeout) must keep growing its delay.
                up_for = time.monotonic() - status.up_since if status.up_since else 0.0
                if up_for >= link.backoff.reset_after:
                    backoff.reset()
                delay = backoff.next_delay()
                status.last_delay = delay
                status.delays = [*status.delays[-31:], delay]
                self._metrics.link_retries.labels(link.name).inc()
                self._set(status, "backing_off", within=delay)
                log.info("link %s: retry %d in %.2fs", link.name, backoff.attempt, delay)
                await self._back_off(link, delay)
        finally:
            if status.state != "failed":
                self._set(status, "stopped")

    async def _back_off(self, link: Link, delay: float) -> None:
        if not isinstance(link, Replugged):
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await link.wait_replugged()
                log.info("link %s: its port changed (replugged?); retrying now", link.name)

    async def _run_once(self, link: Link, status: LinkStatus) -> None:
        status.up_since = None
        self._set(status, "starting", within=link.open_timeout)
        async with contextlib.AsyncExitStack() as stack:
            try:
                async with asyncio.timeout(link.open_timeout):
                    await stack.enter_async_context(link)
            except TimeoutError as exc:
                raise LinkError(
                    f"could not open within {link.open_timeout:g}s", kind="timeout"
                ) from exc
            status.starts += 1
            status.up_since = time.monotonic()
            self._set(status, "up")
            try:
                await link.run()
            finally:
                # Leaving the link closes its handle; a close that never ends is a stall.
                if status.deadline is None:
                    status.deadline = time.monotonic() + self._stop_timeout
                    status.deadline_for = "closing"
            # run() returning means the link ended on its own (e.g. EOF); retry like a failure.
            raise LinkError("link ended", kind="ended")

    def _record_failure(self, link: Link, status: LinkStatus, exc: Exception) -> None:
        kind = exc.kind if isinstance(exc, LinkError) else "unexpected"
        status.failures += 1
        status.last_error = str(exc)
        self._metrics.link_failures.labels(link.name, kind).inc()
        if isinstance(exc, LinkError):
            log.warning("link %s down: %s", link.name, exc)
        else:
            log.error("link %s crashed (a bug; please report it)", link.name, exc_info=exc)
