"""The encryption counters of encrypted BTHome devices, kept across restarts: a replay of a
recorded advertisement is refused after a restart too.

Encrypted BTHome carries a counter, authenticated by the decryption, that grows from packet to
packet; `PacketGuard` refuses a counter at or below the last accepted one. That memory alone
would die with the process: a restart would accept any recording again. So the highest counter
is kept in `<state_dir>/ble-counters.json`, per device, written durably (a temporary file,
fsync, rename) but not on every packet: like the outbox's seq blocks (outbox/numbering.py),
what is on disk is a *reservation* `COUNTER_BLOCK` ahead of the counter accepted, written before
a counter beyond it is accepted. After a crash (SIGKILL, power cut) the gateway refuses
everything up to the reservation: no counter accepted before the crash can be replayed, and the
device's own next packets up to the reservation are refused too (at most COUNTER_BLOCK of them).
A clean stop writes the exact counter, so after one nothing of the device's is lost.

Each entry carries a fingerprint of the device's bindkey: a new key starts afresh (a device
re-keyed, or replaced by one whose counter starts at 0). One whose counter restarted with the
same key (some firmware does not keep it over a battery change) is refused until its counter
passes the stored one: delete its entry (or the file) while the gateway is stopped to accept it
at once (docs/ble.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from gateway.limits import COUNTER_BLOCK
from gateway.throttle import LogThrottle

log = logging.getLogger(__name__)

COUNTERS_FILE = "ble-counters.json"
AFRESH = "replays are refused from now on only"


def key_fingerprint(bindkey: bytes) -> str:
    """Tells keys apart without keeping them: 8 bytes of SHA-256 of a 16-byte random key."""
    return hashlib.sha256(bindkey).hexdigest()[:16]


class ReplayCounters:
    """Device id -> (bindkey fingerprint, the counter at or below which all is refused)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stored: dict[str, tuple[str, int]] = {}  # what the file holds
        self._warn = LogThrottle(log)
        self._load()

    def floor(self, device: str, fingerprint: str) -> int | None:
        """The counter at or below which this device's packets are refused at start."""
        stored = self._stored.get(device)
        return stored[1] if stored is not None and stored[0] == fingerprint else None

    def accepting(self, device: str, fingerprint: str, counter: int) -> None:
        """Before `counter` is accepted: make sure a restart refuses it (reserve ahead when
        it lies beyond the reservation on disk)."""
        floor = self.floor(device, fingerprint)
        if floor is None or counter > floor:
            self._write(device, (fingerprint, counter + COUNTER_BLOCK))

    def settle(self, device: str, fingerprint: str, counter: int) -> None:
        """A clean stop: keep the exact counter (a reservation beyond it is lowered)."""
        if self._stored.get(device) != (fingerprint, counter):
            self._write(device, (fingerprint, counter))

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return  # the first run
        except OSError as exc:
            log.error(
                "ble: cannot read %s (%s): replays are refused from now on only", self.path, exc
            )
            return
        try:
            data: Any = json.loads(text)
            self._stored = {
                str(device): (str(entry["key"]), int(entry["counter"]))
                for device, entry in dict(data).items()
            }
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # Not a reason to refuse to start: the counters are learnt again from now on.
            log.error("ble: ignoring %s (%s): %s", self.path, exc, AFRESH)
            self._stored = {}

    def _write(self, device: str, entry: tuple[str, int]) -> None:
        stored = {**self._stored, device: entry}
        text = json.dumps(
            {d: {"key": k, "counter": c} for d, (k, c) in stored.items()}, sort_keys=True
        )
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
        except OSError as exc:
            # The packet is accepted still (readings before a theoretical replay); the next
            # accepted packet tries again.
            self._warn.warning(
                ("write", device),
                "ble: cannot keep %s's encryption counter in %s (%s): after a restart, "
                "a replay of its recent advertisements could be accepted",
                device,
                self.path,
                exc,
            )
            return
        self._stored = stored


def _fsync_dir(directory: Path) -> None:
    """The rename itself durable (on Linux the directory's entry needs its own fsync)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
