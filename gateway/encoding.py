"""The encode stage: readings that left their sensor streams -> outbox records.

Each device's `payload` mode decides the message: `sensor` (default) one message per reading to
`<prefix>/<device>/<sensor>`; `device` one JSON object per frame to `<prefix>/<device>`, holding
the device's latest value of every sensor (so that a consumer, Home Assistant's templates
included, always finds every key) with the frame's `ts` and the device's `seq`. The outbox
gives the seq and keeps the record until the broker acknowledges it.

With Home Assistant discovery, the last payload of every state topic is kept (bounded by the
configured devices and their sensors), to be published again when Home Assistant restarts.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.config import Config
from gateway.limits import MAX_REMEMBERED, UNKNOWN_OUTBOX_SHARE
from gateway.models import UNKNOWN_DEVICES, Reading, Value
from gateway.mqtt.outbox import Outbox, Record
from gateway.mqtt.topics import device_payload, device_topic, reading_payload, reading_topic


class Encoder:
    def __init__(self, outbox: Outbox, cfg: Config) -> None:
        self._outbox = outbox
        self.last: dict[str, Record] = {}  # state topic -> its last record (keep_last only)
        self._state: dict[str, dict[str, Value | None]] = {}
        self.configure(cfg)

    def configure(self, cfg: Config) -> None:
        """Take a (reloaded) config: prefix, qos, payload modes."""
        self._prefix = cfg.topic_prefix
        self._qos = cfg.mqtt.qos
        self._device_mode = {d.id for d in cfg.devices if d.payload == "device"}
        self.keep_last = cfg.homeassistant.discovery
        for device in list(self._state):
            if device not in self._device_mode:
                del self._state[device]
        if not self.keep_last:
            self.last.clear()

    def forget(self, device: str) -> None:
        """A removed or changed device: its state starts afresh."""
        self._state.pop(device, None)
        head = f"{self._prefix}/{device}"
        for topic in [t for t in self.last if t == head or t.startswith(head + "/")]:
            del self.last[topic]

    def publish(self, readings: Sequence[Reading]) -> None:
        """One frame's readings (all of one device) into the outbox."""
        if not readings:
            return
        outbox, prefix = self._outbox, self._prefix
        device = readings[0].device
        if device in self._device_mode:
            state = self._state.setdefault(device, {})
            for reading in readings:
                state[reading.sensor] = reading.value
            topic = device_topic(prefix, device)
            ts = max(r.ts for r in readings)
            record = outbox.put_encoded(
                device, topic, self._qos, ts, device_payload, (dict(state), ts)
            )
            self._remember(topic, record)
            return
        for reading in readings:
            topic = reading_topic(prefix, reading)
            record = outbox.put(reading, topic, self._qos)
            if self.keep_last:  # (checked here too: no call per reading without discovery)
                self._remember(topic, record)

    def publish_unknown(self, readings: Sequence[Reading]) -> int:
        """Readings of unconfigured devices, each to its own topic, all numbered as one device
        (`UNKNOWN_DEVICES`: one seqs row, one metric label). They may fill only a share of the
        outbox, so `drop_oldest` never drops a configured device's reading to make room for
        one of theirs. Returns how many were refused for want of that room."""
        outbox, prefix, qos = self._outbox, self._prefix, self._qos
        room = int(outbox.cfg.max_bytes * UNKNOWN_OUTBOX_SHARE)
        refused = 0
        for reading in readings:
            if outbox.total >= room:
                refused += 1
                continue
            topic = reading_topic(prefix, reading)
            outbox.put_encoded(UNKNOWN_DEVICES, topic, qos, reading.ts, reading_payload, reading)
        return refused

    def last_payloads(self) -> list[tuple[str, bytes]]:
        """The last payload of every state topic whose seq is safe to publish again (one whose
        record still waits for its seq to be secured is left out: it goes out soon anyway)."""
        spent = self._outbox.seq_is_spent
        return [(topic, r.payload) for topic, r in self.last.items() if spent(r)]

    def _remember(self, topic: str, record: Record | None) -> None:
        if not self.keep_last or record is None:
            return
        if topic in self.last or len(self.last) < MAX_REMEMBERED:
            self.last[topic] = record
