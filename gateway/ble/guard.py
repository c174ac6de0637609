"""Which advertisements of one device carry a new packet: repeats and replays are dropped.

A device sends each packet several times, and BlueZ reports every copy (each RSSI change is a
callback). For measurements that does no harm (the throttle drops unchanged values), but an
event such as a button press must be published once per packet, so copies are recognised:

- BTHome's packet id (object 0x00) is the same in every copy of a packet. A packet id equal to
  the last accepted one, or up to 63 behind it (a late copy of an older packet; ids wrap at
  256), within `repeat_window` seconds of the last copy seen, is a `repeat`. After a longer
  silence the same id is a new packet (the device may have restarted).
- Encrypted BTHome carries a counter, authenticated by the decryption, that increases from
  packet to packet. The same counter again is a `repeat`; a lower one is a `replay` (someone
  sending recorded advertisements, or a device whose counter restarted). Nothing below the
  last accepted counter is ever accepted again while the gateway runs.
- A device configured with a bindkey must encrypt: a plaintext BTHome advertisement claiming
  to come from it is `unencrypted` (a downgrade anyone could forge).

State lives here, per device, so that the decoders stay pure functions.
"""

from __future__ import annotations

from gateway.decoders.ble import Decoded

PACKET_IDS = 256  # BTHome's packet id is one byte and wraps
OLDER_PACKETS = 64  # ids this far behind the last accepted one are late copies, not new


class PacketGuard:
    def __init__(
        self, *, encrypted: bool, repeat_window: float, counter: int | None = None
    ) -> None:
        self.encrypted = encrypted
        self.repeat_window = repeat_window
        # The last accepted encryption counter; at start, the one kept across restarts.
        self.counter: int | None = counter
        self._packet_id: int | None = None  # the last accepted packet id ...
        self._packet_seen = 0.0  # ... and when a copy of it was last seen

    def check(self, decoded: Decoded, now: float) -> str | None:
        """None to accept the packet (and remember it), else why it is dropped: `repeat`,
        `replay` or `unencrypted`."""
        if decoded.counter is None and self.encrypted:
            return "unencrypted"
        if decoded.counter is not None and self.counter is not None:
            if decoded.counter == self.counter:
                return "repeat"
            if decoded.counter < self.counter:
                return "replay"
        if self._is_copy(decoded.packet_id, now):
            self._packet_seen = now
            return "repeat"
        if decoded.counter is not None:
            self.counter = decoded.counter
        if decoded.packet_id is not None:
            self._packet_id, self._packet_seen = decoded.packet_id, now
        return None

    def _is_copy(self, packet_id: int | None, now: float) -> bool:
        if packet_id is None or self._packet_id is None:
            return False
        if now - self._packet_seen > self.repeat_window:
            return False
        return (self._packet_id - packet_id) % PACKET_IDS < OLDER_PACKETS
