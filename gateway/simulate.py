"""Simulated serial devices, so demos, tests and benchmarks need no hardware.

`gateway simulate serial --profile kv --link /tmp/ttySIM` opens a pty pair, points the symlink at
the device side (open it as the gateway's `port:`) and plays a device on the other side;
`--port PATH` plays it on an existing tty instead (the far end of a socat pair, a USB-serial
adapter looped back to the gateway's). Line devices (kv, json, nmea) report at `--rate`; the
meter answers the gateway's polls (see `gateway.simdevices`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import selectors
import signal
import sys
import time
import tty
from collections.abc import Iterator
from pathlib import Path

from gateway.simdevices import PROFILES, LineProfile, Meter, line_profiles

__all__ = ["PROFILES", "answer_polls", "play", "pty_device", "simulate_serial"]


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


@contextlib.contextmanager
def existing_port(path: Path) -> Iterator[tuple[int, str]]:
    """An existing tty, raw and non-blocking; yields (fd, path)."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        tty.setraw(fd)
        yield fd, str(path)
    finally:
        os.close(fd)


def play(fd: int, profile: LineProfile, rate: float, count: int | None, seed: int | None) -> int:
    """Write reports at `rate` per second; a full buffer (nobody reading) drops the report, as a
    real device would. Returns the number of reports written."""
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


def answer_polls(fd: int, meter: Meter, count: int | None, seed: int | None) -> int:
    """Answer the gateway's requests until `count` answers; returns the answers sent."""
    rng = random.Random(seed)
    answered = 0
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while count is None or answered < count:
            selector.select()
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: nobody has the device side open right now
                    raise
                time.sleep(0.05)
                continue
            for answer in meter.receive(data, rng):
                with contextlib.suppress(BlockingIOError):
                    os.write(fd, answer)
                answered += 1
    return answered


def simulate_serial(
    profile: str,
    link: Path | None,
    rate: float,
    count: int | None,
    seed: int | None,
    *,
    port: Path | None = None,
    miss_every: int = 0,
) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    opened = existing_port(port) if port is not None else pty_device(link)
    with opened as (fd, path):
        where = port or link or path
        print(f"simulating a {profile} device on {where}", file=sys.stderr, flush=True)
        try:
            if profile == "meter":
                sent = answer_polls(fd, Meter(miss_every=miss_every), count, seed)
            else:
                sent = play(fd, line_profiles()[profile], rate, count, seed)
        except KeyboardInterrupt:
            return 0
        print(f"wrote {sent} {'answers' if profile == 'meter' else 'lines'}", file=sys.stderr)
    return 0
