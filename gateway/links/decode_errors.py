"""Counting what a link could not decode, the same way for every family.

A device's garbage is news for the metrics (`gateway_frame_errors_total{device,reason}`), not for
the log: each skipped frame is logged at DEBUG only. A decoder that crashes is a bug of ours: it
is logged with its traceback, counted as `decoder_bug`, and the link goes on.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.metrics import Metrics

log = logging.getLogger(__name__)


class DecodeErrors:
    def __init__(self, metrics: Metrics, device_id: str, link: str) -> None:
        self._counter = metrics.frame_errors
        self._device = device_id
        self._link = link

    def count(self, reason: str, detail: str, n: int = 1) -> None:
        """`n` frames skipped for `reason` (`decode`, `checksum`, `resync`, ...)."""
        self._counter.labels(self._device, reason).inc(n)
        log.debug("%s: skipped %d frame(s) (%s): %s", self._link, n, reason, detail)

    def crashed(self, data: object) -> None:
        """Call from an `except Exception:` around a decoder: logs the traceback too."""
        log.exception("%s: decoder crashed on %r", self._link, data)
        self._counter.labels(self._device, "decoder_bug").inc()
