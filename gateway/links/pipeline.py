"""bytes -> frames -> values -> Readings, synchronously, for one device.

The link calls `feed()` from the transport's `data_received`: no await between the port and the
outbox. Nothing a device sends can make `feed()` raise: frames the framer skips, frames the
decoder rejects and even decoder bugs are counted in `gateway_frame_errors_total` by reason,
logged at DEBUG, and skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gateway.config import SerialDevice
from gateway.decoders import make_decoder, sensor_specs, to_readings
from gateway.errors import DecodeError
from gateway.framing import Framer, make_framer
from gateway.linknames import link_name
from gateway.links.decode_errors import DecodeErrors
from gateway.metrics import Metrics
from gateway.models import Submit

log = logging.getLogger(__name__)


class FramePipeline:
    def __init__(
        self,
        device: SerialDevice,
        submit: Submit,
        metrics: Metrics,
        name: str | None = None,
    ) -> None:
        self.device = device
        self.name = name or link_name(device)
        self._submit = submit
        self._metrics = metrics
        self._decode = make_decoder(device)
        self._sensors = sensor_specs(device)
        self._received = metrics.readings_received.labels(device.id)
        self.errors = DecodeErrors(metrics, device.id, self.name)
        self.framer: Framer = make_framer(device)
        #: Called for every complete frame (good or not): a polled device has answered.
        self.on_frame: Callable[[], None] | None = None

    def restart(self) -> None:
        """A fresh framer for a newly opened port: nothing from before carries over."""
        self.framer = make_framer(self.device)

    def discard_partial(self) -> None:
        """Drop an unfinished frame (before a poll's query: a late half answer must not be
        glued to the next one); counted as a resync."""
        if self.framer.reset():
            self.count_error("resync", 1, "unfinished frame dropped before a query")

    def feed(self, data: bytes, ts: float) -> None:
        framer = self.framer
        received = 0
        for frame in framer.feed(data):
            received += self._on_frame(frame, ts)
        if received:  # one increment per chunk, not per frame
            self._received.inc(received)
        if errors := framer.take_errors():
            for reason, count in errors.items():
                self.count_error(reason, count, f"framing ({len(data)} byte chunk)")

    def _on_frame(self, frame: bytes, ts: float) -> int:
        """Decode one frame and submit its readings; returns how many."""
        if self.on_frame is not None:
            self.on_frame()
        d = self.device
        try:
            readings = to_readings(d.id, self._decode(frame), self._sensors, ts)
        except DecodeError as exc:
            self.count_error("decode", 1, f"{exc}; frame {frame[:60]!r}")
            return 0
        except Exception:  # a decoder bug must not kill the link: count, log, skip
            self.errors.crashed(frame[:60])
            return 0
        if readings:
            self._submit(readings)
        return len(readings)

    def count_error(self, reason: str, count: int, detail: str) -> None:
        self.errors.count(reason, detail, count)
