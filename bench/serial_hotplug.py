"""Soak: unplug and replug a serial device many times under a running gateway, matched by its
by-id name while it comes back under a new tty each time; report detection and reopen latency
and the daemon's open fds.

    .venv/bin/python bench/serial_hotplug.py [--cycles 50]

A socat pty pair plays the USB adapter: killing socat is the unplug (the tty vanishes), a new
socat is the replug (a new /dev/pts/N), and a symlink in a private by-id directory is repointed
at it, as udev does. The gateway (a subprocess, no broker needed: serial links do not wait for
MQTT) logs `went away` and `opened`; latencies come from its log timestamps, measured from the
moment the test unplugged (killed socat) or repointed the name. Backoff is set small
(initial 0.05 s, max 0.2 s), so reopen latency is mostly backoff.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.005)


class Pair:
    def __init__(self, directory: Path, name: str) -> None:
        self.dev, self.peer = directory / f"tty{name}", directory / f"tty{name}.peer"
        self.proc: subprocess.Popen[bytes] | None = None

    def plug(self) -> str:
        self.proc = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={self.dev}", f"pty,raw,echo=0,link={self.peer}"],
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: self.dev.exists() and self.peer.exists(), 5, "socat links")
        return os.path.realpath(self.dev)

    def unplug(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(5)
            self.proc = None


def log_times(log: Path, text: str) -> list[float]:
    times = []
    for line in log.read_text(errors="replace").splitlines():
        if text in line:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=UTC)
            times.append(stamp.timestamp())
    return times


def logged(log: Path, text: str, count: int) -> Callable[[], bool]:
    return lambda: len(log_times(log, text)) >= count


def fds(pid: int) -> list[str]:
    out = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{name}"))
        except FileNotFoundError:
            continue
    return out


def repoint(link: Path, target: Path) -> None:
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target)
    tmp.replace(link)


def soak(work: Path, cycles: int) -> None:
    by_id = work / "by-id"
    by_id.mkdir()
    name = by_id / "usb-Bench_Sensor_1-if00-port0"
    pairs = [Pair(work, "A"), Pair(work, "B")]
    pairs[0].plug()
    repoint(name, pairs[0].dev)
    config = work / "gateway.yaml"
    config.write_text(
        "gateway: {id: bench, state_dir: state}\n"
        "mqtt: {port: 1, backoff: {initial: 5, max: 30}}\n"
        "devices:\n"
        "  - id: sensor\n"
        "    type: serial\n"
        f"    match: {{by_id: 'usb-Bench_*', by_id_dir: '{by_id}'}}\n"
        "    backoff: {initial: 0.05, max: 0.2, reset_after: 0.5}\n"
    )
    log = work / "gateway.log"
    with log.open("wb") as err:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(config)], stderr=err, cwd=work
        )
    try:
        wait_for(logged(log, "opened ", 1), 20, "first open")
        time.sleep(0.3)
        baseline = len(fds(daemon.pid))
        unplugged_at: list[float] = []
        repointed_at: list[float] = []
        for cycle in range(cycles):
            old, new = pairs[cycle % 2], pairs[(cycle + 1) % 2]
            new.plug()
            unplugged_at.append(time.time())
            old.unplug()
            wait_for(logged(log, "went away", cycle + 1), 10, "went away")
            repointed_at.append(time.time())
            repoint(name, new.dev)
            wait_for(logged(log, "opened ", cycle + 2), 10, "reopen")
        time.sleep(0.3)
        after = len(fds(daemon.pid))
        gone = [t - u for t, u in zip(log_times(log, "went away"), unplugged_at, strict=True)]
        opened = log_times(log, "opened ")[1:]
        back = [t - r for t, r in zip(opened, repointed_at, strict=True)]
        print(f"cycles: {cycles}; daemon fds before: {baseline}, after: {after}")
        for label, values in (("unplug noticed", gone), ("reopened after replug", back)):
            ms = sorted(v * 1000 for v in values)
            p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
            print(
                f"{label:22} median {statistics.median(ms):6.1f} ms   p95 {p95:6.1f} ms"
                f"   max {ms[-1]:6.1f} ms  (log timestamps have 1 ms resolution)"
            )
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(15)
        for pair in pairs:
            pair.unplug()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gateway-hotplug-") as tmp:
        soak(Path(tmp), args.cycles)


if __name__ == "__main__":
    main()
