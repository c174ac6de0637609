"""Simulated serial devices on a pseudo-terminal, so demos and tests need no hardware.

`gateway simulate serial --profile kv --link /tmp/ttySIM` opens a pty pair, points the symlink at
the device side (open it as the gateway's `port:`) and plays a device on the other side.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import signal
import sys
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path

Profile = Callable[[random.Random, int], bytes]


def _kv(rng: random.Random, n: int, state: dict[str, float] = {"t": 21.0, "h": 40.0}) -> bytes:  # noqa: B006 - a random walk keeps its state between lines on purpose
    state["t"] = min(35.0, max(5.0, state["t"] + rng.uniform(-0.1, 0.1)))
    state["h"] = min(90.0, max(10.0, state["h"] + rng.uniform(-0.3, 0.3)))
    return f"temp={state['t']:.2f},hum={state['h']:.1f},seq={n}\n".encode()


def _json(rng: random.Random, n: int) -> bytes:
    return (
        json.dumps(
            {"pm25": round(rng.uniform(2, 30), 1), "pm10": round(rng.uniform(5, 50), 1), "seq": n}
        )
        + "\n"
    ).encode()


PROFILES: dict[str, Profile] = {"kv": _kv, "json": _json}


@contextlib.contextmanager
def pty_device(link: Path | None) -> Iterator[tuple[int, str]]:
    """A pty pair in raw mode; yields (controller fd, device path). The symlink `link`, if
    given, points at the device path while the context is open."""
    controller, device = os.openpty()
    tty.setraw(device)
    # Keep our own handle on the device side: the pty then survives the gateway closing and
    # reopening it, as a real port would.
    path = os.ttyname(device)
    os.set_blocking(controller, False)
    try:
        if link is not None:
            link.parent.mkdir(parents=True, exist_ok=True)
            tmp = link.with_name(link.name + ".tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(path)
            tmp.replace(link)  # atomic: the gateway never sees a half-made link
        yield controller, path
    finally:
        if link is not None:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
        os.close(controller)
        os.close(device)


def play(fd: int, profile: Profile, rate: float, count: int | None, seed: int | None) -> int:
    """Write lines at `rate` per second; a full buffer (nobody reading) drops the line, as a
    real device would. Returns the number of lines written."""
    rng = random.Random(seed)
    interval = 1.0 / rate
    next_at = time.monotonic()
    n = written = 0
    while count is None or n < count:
        line = profile(rng, n)
        n += 1
        try:
            os.write(fd, line)
            written += 1
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EIO):
                raise
        next_at += interval
        if (pause := next_at - time.monotonic()) > 0:
            time.sleep(pause)
    return written


def simulate_serial(
    profile: str, link: Path | None, rate: float, count: int | None, seed: int | None
) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with pty_device(link) as (fd, path):
        print(f"simulating a {profile} device on {link or path}", file=sys.stderr, flush=True)
        try:
            written = play(fd, PROFILES[profile], rate, count, seed)
        except KeyboardInterrupt:
            return 0
        print(f"wrote {written} lines", file=sys.stderr)
    return 0
