"""sd_notify over the stdlib: tell systemd we are ready, reloading, stopping, and what we do.

No-op when NOTIFY_SOCKET is unset (not started by systemd with Type=notify). The watchdog pinger
that sends `WATCHDOG=1` is in `watchdog.py`; `watchdog_timeout()` says whether systemd wants it.
"""

from __future__ import annotations

import os
import socket


def notify(*lines: str) -> bool:
    """Send `KEY=value` lines to systemd; returns whether a notify socket was there."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto("\n".join(lines).encode(), address)
        except OSError:
            return False
    return True


def watchdog_timeout() -> float | None:
    """systemd's WatchdogSec= in seconds, if it is meant for this process (WATCHDOG_PID)."""
    usec, pid = os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        seconds = int(usec) / 1e6
    except ValueError:
        return None
    return seconds if seconds > 0 else None
