"""The timer of one device's streams, supervised like a link (`stream:<device>`).

A device whose filters need time (heartbeat, timeout, throttle_average, debounce, the BLE
`republish_after` default) or that has an `availability.timeout` gets one StreamLink. It owns no
handle: entering and leaving only mark it running. `run()` sleeps until the earliest deadline
(or until `poke()` says a new value brought an earlier one, or a value ended a silence and
the availability deadline is back), then hands what the filters emit to
`emit` and reports silence beyond the availability timeout. It is started and stopped with its
device, and restarted on reload when the device's config changed (a new DeviceStream: no state
of the old filters carries over).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

from gateway.config import Device
from gateway.limits import STREAM_OPEN_TIMEOUT as OPEN_TIMEOUT
from gateway.linknames import stream_link_name
from gateway.models import Reading
from gateway.streams.device import DeviceStream

log = logging.getLogger(__name__)


class StreamLink:
    def __init__(
        self,
        device: Device,
        stream: DeviceStream,
        emit: Callable[[Sequence[Reading]], None],
        on_fresh: Callable[[bool], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.name = stream_link_name(device.id)
        self.open_timeout = OPEN_TIMEOUT
        self.backoff = device.backoff.policy()
        self.stream = stream
        self._emit = emit
        self._on_fresh = on_fresh
        self._timeout = device.availability.timeout
        self._clock = clock
        self._wall = wall
        self._wake = asyncio.Event()
        self._sleep_until = math.inf
        self._last_value: float | None = None  # when the device last decoded something
        self._fresh = True

    async def __aenter__(self) -> Self:
        self._last_value = self._clock()  # the timeout counts from the start
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._sleep_until = math.inf

    def decoded(self, now: float) -> None:
        """The device decoded a frame at `now` (called on every frame: cheap)."""
        self._last_value = now
        if not self._fresh:
            self._fresh = True
            self._on_fresh(True)
            # Stale, the timer sleeps without an availability deadline: it has one again.
            self._wake.set()
        self.poke()

    def poke(self) -> None:
        """A value went in: wake the timer if a filter now wants to run sooner."""
        due = self.stream.deadline()
        if due is not None and due < self._sleep_until:
            self._wake.set()

    def _availability_deadline(self) -> float | None:
        if self._timeout is None or self._last_value is None or not self._fresh:
            return None
        return self._last_value + self._timeout

    async def run(self) -> None:
        while True:
            now = self._clock()
            stale_at = self._availability_deadline()
            if stale_at is not None and now >= stale_at:
                self._fresh = False
                log.info("%s: nothing decoded for %gs: offline", self.name, self._timeout or 0.0)
                self._on_fresh(False)
                stale_at = None
            if (due := self.stream.deadline()) is not None and due <= now:
                if emitted := self.stream.tick(now, self._wall()):
                    self._emit(emitted)
                await asyncio.sleep(0)  # even a filter whose deadline does not advance yields
                continue
            deadlines = [d for d in (due, stale_at) if d is not None]
            self._sleep_until = min(deadlines, default=math.inf)
            self._wake.clear()
            try:
                async with asyncio.timeout_at(self._loop_time(self._sleep_until, now)):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _loop_time(self, deadline: float, now: float) -> float | None:
        """Our clock's deadline on the event loop's clock (None: no deadline)."""
        if deadline == math.inf:
            return None
        return asyncio.get_running_loop().time() + max(0.0, deadline - now)
