"""Polling a request/response device: write the query every `interval`, wait up to `timeout` for
the first frame that follows, count what goes unanswered, and ask again at the next interval.

The poller owns no handle: it writes through the link and learns of answers from the link's
frame pipeline, so it lives and dies inside the link's `run()`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.config import PollConfig
from gateway.errors import LinkDownError
from gateway.links.pipeline import FramePipeline
from gateway.metrics import Metrics

log = logging.getLogger(__name__)


class Poller:
    def __init__(
        self,
        spec: PollConfig,
        query: bytes,
        write: Callable[[bytes], None],
        pipeline: FramePipeline,
        metrics: Metrics,
    ) -> None:
        self._spec = spec
        self._query = query
        self._write = write
        self._pipeline = pipeline
        self._name = pipeline.name
        self._polls = metrics.polls.labels(pipeline.device.id)
        self._missed = metrics.polls_missed.labels(pipeline.device.id)
        self._answer: asyncio.Future[None] | None = None
        self._missed_in_a_row = 0

    def _answered(self) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(None)

    async def run(self) -> None:
        """Poll until cancelled, or until the port is closing (the link's run() then raises)."""
        loop = asyncio.get_running_loop()
        self._pipeline.on_frame = self._answered
        next_at = loop.time()
        try:
            while await self._poll_once(loop):
                next_at += self._spec.interval
                now = loop.time()
                # A stalled loop or a slow write: poll now, but do not burst to catch up.
                next_at = max(next_at, now)
                await asyncio.sleep(next_at - now)
        finally:
            self._pipeline.on_frame = None
            self._answer = None

    async def _poll_once(self, loop: asyncio.AbstractEventLoop) -> bool:
        self._pipeline.discard_partial()
        self._answer = loop.create_future()
        try:
            self._write(self._query)
        except LinkDownError:
            return False
        self._polls.inc()
        try:
            async with asyncio.timeout(self._spec.timeout):
                await self._answer
        except TimeoutError:
            self._on_missed()
        else:
            self._on_answered()
        finally:
            self._answer = None
        return True

    def _on_missed(self) -> None:
        self._missed.inc()
        self._missed_in_a_row += 1
        if self._missed_in_a_row == 1:  # log the change, not every miss of a silent device
            log.warning(
                "%s: no response to the poll within %gs (asking again every %gs)",
                self._name,
                self._spec.timeout,
                self._spec.interval,
            )
        else:
            log.debug("%s: no response to poll (%d in a row)", self._name, self._missed_in_a_row)

    def _on_answered(self) -> None:
        if self._missed_in_a_row:
            log.info(
                "%s: responding again after %d missed poll(s)", self._name, self._missed_in_a_row
            )
        self._missed_in_a_row = 0
