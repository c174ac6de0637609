"""A synthetic device's link (`synthetic:<id>`): a frame of made-up readings every `interval`.

It owns no handle, so opening cannot fail; it keeps its schedule by the loop's clock (after a
short stall it makes the missed frames at once, after a long one it skips them), and it stops
making frames after `count` of them.
The values are pure functions of the frame number and the seeded random walk, so a consumer can
check what it got.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from types import TracebackType
from typing import Self

from gateway.config.synthetic import Shape, SyntheticDevice
from gateway.decoders import to_readings
from gateway.limits import SYNTHETIC_CATCH_UP as CATCH_UP
from gateway.linknames import link_name
from gateway.metrics import Metrics
from gateway.models import Submit, Value

SINE_PERIOD = 60.0  # seconds: slow enough to look like a room, fast enough to see move
WALK_STEP = 0.1
WALK_LOW, WALK_HIGH = 10.0, 30.0


class Values:
    """The values of frame n, frame after frame (the walk keeps its state)."""

    def __init__(self, shapes: dict[str, Shape], seed: int | str) -> None:
        self._shapes = shapes
        self._rng = random.Random(seed)
        self._walk = dict.fromkeys(shapes, 20.0)

    def frame(self, n: int, now: float) -> dict[str, Value]:
        out: dict[str, Value] = {}
        for name, shape in self._shapes.items():
            if shape == "counter":
                out[name] = n
            elif shape == "sine":
                out[name] = round(20.0 + 5.0 * math.sin(2 * math.pi * now / SINE_PERIOD), 3)
            else:
                step = self._rng.uniform(-WALK_STEP, WALK_STEP)
                walk = min(WALK_HIGH, max(WALK_LOW, self._walk[name] + step))
                self._walk[name] = walk
                out[name] = round(walk, 3)
        return out


class SyntheticLink:
    def __init__(self, device: SyntheticDevice, submit: Submit, metrics: Metrics) -> None:
        self.device = device
        self.name = link_name(device)
        self.open_timeout = device.open_timeout
        self.backoff = device.backoff.policy()
        self._submit = submit
        self._received = metrics.readings_received.labels(device.id)
        self._values = Values(device.values, device.id if device.seed is None else device.seed)
        self.frames = 0  # made so far; kept across reopenings, so a counter never repeats
        self._open = False

    @property
    def is_up(self) -> bool:
        return self._open

    async def __aenter__(self) -> Self:
        self._open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._open = False

    def emit(self) -> None:
        """One frame now."""
        d, ts = self.device, time.time()
        readings = to_readings(d.id, self._values.frame(self.frames, ts), d.sensors, ts)
        self.frames += 1
        self._received.inc(len(readings))
        self._submit(readings)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        interval, count = self.device.interval, self.device.count
        next_at = loop.time()
        while count is None or self.frames < count:
            self.emit()
            next_at += interval
            now = loop.time()
            # Behind (a busy loop): make the missed frames at once, so that the rate holds on
            # average, as a serial device's buffered lines arrive together; but after a long
            # stall (a suspended machine) start afresh instead of a burst of hours.
            if next_at < now - max(CATCH_UP, interval):
                next_at = now
            await asyncio.sleep(max(0.0, next_at - now))
        await asyncio.Event().wait()  # done: stay up and silent until stopped
