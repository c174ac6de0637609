"""A real sd_notify receiver: the AF_UNIX datagram socket systemd would give us as NOTIFY_SOCKET.

Each datagram is kept with its arrival time, parsed into `KEY=value` fields, so tests can ask
for "READY=1 arrived", "no WATCHDOG=1 for 2 s", "STOPPING=1 came after RELOADING=1".
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self


@dataclass(frozen=True, slots=True)
class Notification:
    fields: dict[str, str]
    at: float  # time.monotonic() on arrival

    def __contains__(self, key: str) -> bool:
        return key in self.fields

    def get(self, key: str) -> str | None:
        return self.fields.get(key)


class NotifySocket:
    """Bind a datagram socket on a short path (AF_UNIX paths are limited to 107 bytes)."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="sdn", dir="/tmp"))
        self.path = str(self._dir / "notify")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self.received: list[Notification] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _receive(self, timeout: float) -> Notification | None:
        self._sock.settimeout(max(timeout, 0.001))
        try:
            data = self._sock.recv(65536)
        except TimeoutError:
            return None
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        note = Notification(fields, time.monotonic())
        self.received.append(note)
        return note

    def wait_for(self, key: str, value: str | None = None, timeout: float = 10.0) -> Notification:
        """The next datagram carrying `key` (with `value`, if given)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            note = self._receive(left)
            if note is not None and key in note and (value is None or note.get(key) == value):
                return note
        raise TimeoutError(f"no {key}={value or '*'} within {timeout:g}s; got {self.received}")

    def drain(self) -> list[Notification]:
        """What arrived already (sent before now)."""
        out = []
        while (note := self._receive(0.001)) is not None:
            out.append(note)
        return out

    def collect(self, seconds: float) -> list[Notification]:
        """Everything sent from now on, for `seconds` (what was sent before is drained)."""
        self.drain()
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            note = self._receive(left)
            if note is not None:
                out.append(note)
        return out
