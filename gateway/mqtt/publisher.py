"""The publisher: ready records from the outbox -> PUBLISH, acknowledgements -> the outbox.

A record leaves the outbox only when the broker acknowledged the message that carried it (PUBACK
at QoS 1, PUBCOMP at QoS 2, written at QoS 0), never because a client library queued it. At most
`window` messages are unacknowledged at once; the oldest of them may wait `publish_timeout`
before the connection is presumed dead (`watchdog`).

A device with `batch` has its records gathered (in the publisher, after the outbox) into one
JSON array per message to `<prefix>/<device>/batch`: when `max_items` wait, or the oldest has
waited `max_delay`. One acknowledgement then deletes every record of its message; a message
that fails goes back to the outbox whole, in order, with everything still gathering.

Records in flight belong to one connection: `give_back()` returns them all to the outbox when it
ends, and an acknowledgement that still arrives for one of them finds nothing and is ignored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from paho.mqtt.properties import Properties

from gateway.config import BatchConfig
from gateway.limits import ACK_WATCHDOG_TICK as WATCHDOG_TICK
from gateway.metrics import Metrics
from gateway.mqtt.aioclient import GatewayClient
from gateway.mqtt.errors import AckTimeoutError, ConnectionLostError, PacketTooLargeError
from gateway.mqtt.topics import batch_topic, render, render_batch
from gateway.outbox import Outbox, Record

log = logging.getLogger(__name__)

#: Sees the records of every message the broker acknowledged (Home Assistant's last values).
Delivered = Callable[[list[Record]], None]


class _Gathering:
    """One batched device's records waiting to become a message."""

    __slots__ = ("records", "since", "timer")

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.since = 0.0  # monotonic time the first of them was taken
        self.timer: asyncio.TimerHandle | None = None


class Publisher:
    def __init__(
        self,
        outbox: Outbox,
        metrics: Metrics,
        *,
        prefix: str,
        publish_timeout: float,
        batches: Mapping[str, BatchConfig] | None = None,
        delivered: Delivered | None = None,
    ) -> None:
        self._outbox = outbox
        self._metrics = metrics
        self._prefix = prefix
        self._timeout = publish_timeout
        self._batches: Mapping[str, BatchConfig] = batches or {}
        self._delivered = delivered
        self._client: GatewayClient | None = None
        self._window = 1
        self._properties: Properties | None = None
        self._by_id: dict[int, tuple[list[Record], float]] = {}  # id -> (records, sent)
        self._gathering: dict[str, _Gathering] = {}
        self._window_open = asyncio.Event()
        self._published: dict[str, Any] = {}  # device -> its readings_published counter

    # -- one connection ----------------------------------------------------------------------
    def attach(
        self, client: GatewayClient, window: int, properties: Properties | None = None
    ) -> None:
        """A new connection; `properties` go with every reading's PUBLISH (MQTT 5: message
        expiry)."""
        self._client = client
        self._window = max(1, window)
        self._properties = properties
        self._window_open.set()

    def give_back(self) -> None:
        """The connection ended: everything in flight or gathering goes back to the outbox."""
        self._client = None
        back = [r for records, _ in self._by_id.values() for r in records]
        for gathering in self._gathering.values():
            if gathering.timer is not None:
                gathering.timer.cancel()
            back.extend(gathering.records)
        self._by_id.clear()
        self._gathering.clear()
        if back:
            log.info("mqtt: %d unacknowledged reading(s) go back to the outbox", len(back))
            self._outbox.requeue(back)
        self._window_open.set()

    @property
    def inflight(self) -> int:
        """Messages sent and not yet acknowledged."""
        return len(self._by_id)

    # -- acknowledgements --------------------------------------------------------------------
    def on_acks(self, acks: list[tuple[int, int]]) -> None:
        """The acknowledgements of one loop turn, as one batch: the outbox forgets the records,
        the counters move once per device, and the window is filled again at once."""
        by_id = self._by_id
        delivered: list[Record] = []
        for mid, code in acks:
            entry = by_id.pop(mid, None)
            if entry is None:
                continue  # of a connection given up already
            if code >= 0x80:
                self._refused(entry[0], code)
            else:
                delivered.extend(entry[0])
        self._acknowledged(delivered)
        self.fill_soon()

    def configure(self, batches: Mapping[str, BatchConfig]) -> None:
        """The devices that batch (a reload): the publisher's own copy, read per record."""
        self._batches = batches

    def _acknowledged(self, records: list[Record]) -> None:
        self._outbox.ack(records)
        if self._delivered is not None and records:
            self._delivered(records)
        now, observe = time.time(), self._metrics.publish_latency.observe
        counts: dict[str, int] = {}
        for record in records:
            counts[record.device] = counts.get(record.device, 0) + 1
            observe(max(0.0, now - record.ts))
        for device, count in counts.items():
            counter = self._published.get(device)
            if counter is None:  # labels() costs more than the increment: look it up once
                counter = self._published[device] = self._metrics.readings_published.labels(device)
            counter.inc(count)
        self._window_open.set()

    def _refused(self, records: list[Record], code: int) -> None:
        """MQTT 5: the broker refused the message (e.g. not authorized): retrying cannot help;
        its readings leave the outbox like delivered ones, counted as dropped."""
        log.warning("mqtt: broker refused %s (reason code %#04x)", records[0].topic, code)
        self._outbox.drop(records, "refused")

    # -- publishing --------------------------------------------------------------------------
    async def run(self) -> None:
        """Keeps the window full: the one pump of the data path. It waits for the outbox to
        have ready records (a commit, a backlog read back) and takes them; the outbox never
        calls back into the session. Acknowledgements that open the window refill it at once
        (`fill_soon`), within the publisher."""
        while True:
            while len(self._by_id) >= self._window:
                self._window_open.clear()
                await self._window_open.wait()
            await self._outbox.wait_ready()
            self.fill()

    def fill_soon(self) -> None:
        """`fill` from a callback (an acknowledgement, a gathering's timer): never raises into
        its caller; a dead connection is the session's watcher's to report."""
        client = self._client
        if client is None or len(self._by_id) >= self._window:
            return
        try:
            self.fill()
        except ConnectionLostError as exc:
            log.debug("mqtt: publishing right away failed: %s", exc)

    def fill(self) -> None:
        """Publish ready records while the window has room. Raises ConnectionLostError if the
        connection is gone (records taken go back to the outbox first)."""
        client = self._client
        if client is None:
            raise ConnectionLostError("not connected")
        with client.burst():  # written at the end, in this loop turn
            self._fill()

    def _fill(self) -> None:
        self._send_due(time.monotonic())
        while (room := self._window - len(self._by_id)) > 0:
            taken = self._outbox.take_nowait(room)
            if not taken:
                break
            for i, record in enumerate(taken):
                try:
                    self._route(record)
                except ConnectionLostError:
                    self._outbox.requeue(taken[i:])
                    raise

    def _route(self, record: Record) -> None:
        batch = self._batches.get(record.device)
        if batch is None:
            self._send([record], record.topic, render(record))
            return
        gathering = self._gathering.get(record.device)
        if gathering is None:
            gathering = self._gathering[record.device] = _Gathering()
        if not gathering.records:
            gathering.since = time.monotonic()
        gathering.records.append(record)
        if len(gathering.records) >= batch.max_items and len(self._by_id) < self._window:
            self._send_gathered(record.device, gathering)
        else:
            self._arm(gathering, gathering.since + batch.max_delay)

    def _arm(self, gathering: _Gathering, due: float) -> None:
        """Look at a gathering again when its oldest record has waited max_delay (once)."""
        if gathering.timer is None:
            gathering.timer = asyncio.get_running_loop().call_later(
                max(0.0, due - time.monotonic()), self._gathering_due, gathering
            )

    def _gathering_due(self, gathering: _Gathering) -> None:
        gathering.timer = None
        self.fill_soon()  # (with the window full it waits for the next acknowledgement)

    def _send_due(self, now: float) -> None:
        """Gathered records that are full or have waited max_delay, while there is room."""
        for device, gathering in list(self._gathering.items()):
            if not gathering.records or len(self._by_id) >= self._window:
                continue
            batch = self._batches.get(device)
            max_items = batch.max_items if batch else 1
            delay = batch.max_delay if batch else 0.0
            if len(gathering.records) >= max_items or now - gathering.since >= delay:
                self._send_gathered(device, gathering)
            else:
                self._arm(gathering, gathering.since + delay)

    def _send_gathered(self, device: str, gathering: _Gathering) -> None:
        records, gathering.records = gathering.records, []
        if gathering.timer is not None:
            gathering.timer.cancel()
            gathering.timer = None
        try:
            self._send_batch(device, records)
        except ConnectionLostError:
            self._outbox.requeue(records)
            raise

    def _send_batch(self, device: str, records: list[Record]) -> None:
        topic = batch_topic(self._prefix, device)
        try:
            self._send(records, topic, render_batch(records), drop_too_large=False)
        except PacketTooLargeError:
            if len(records) == 1:
                self._too_large(records, topic)
                return
            half = len(records) // 2  # too large for the broker: two smaller messages
            self._send_batch(device, records[:half])
            self._send_batch(device, records[half:])

    def _send(
        self, records: list[Record], topic: str, payload: bytes, *, drop_too_large: bool = True
    ) -> None:
        """One message; over the broker's maximum packet size it is dropped and counted, or
        (`drop_too_large=False`: a batch, which can be split) PacketTooLargeError is raised."""
        client = self._client
        if client is None:
            raise ConnectionLostError("not connected")
        try:
            mid = client.publish_nowait(topic, payload, records[0].qos, properties=self._properties)
        except PacketTooLargeError:
            if not drop_too_large:
                raise
            self._too_large(records, topic)
            return
        self._by_id[mid] = (records, time.monotonic())

    def _too_large(self, records: list[Record], topic: str) -> None:
        log.warning(
            "mqtt: a reading for %s is over the broker's maximum packet size; dropped", topic
        )
        self._outbox.drop(records, "too_large")

    # -- the ack watchdog --------------------------------------------------------------------
    async def watchdog(self) -> None:
        """A message unacknowledged for longer than publish_timeout means the connection is
        dead even if TCP has not noticed (a frozen broker, a black-holed path)."""
        timeout = self._timeout
        while True:
            await asyncio.sleep(min(WATCHDOG_TICK, timeout / 4))
            if self._by_id:
                oldest = min(sent for _, sent in self._by_id.values())
                if time.monotonic() - oldest > timeout:
                    raise AckTimeoutError(
                        f"no acknowledgement for {timeout:g}s: connection presumed dead"
                    )
