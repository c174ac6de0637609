"""Delivery bench (issues 3 and 10): the gateway and `mosquitto_pub -l`, side by side, in one run.

    writer -> socat pty pair -> PROGRAM -> private mosquitto (127.0.0.1) -> mosquitto_sub -v

PROGRAM is `gateway run` (durable outbox, QoS 1, one serial device, decoder kv, one message per
reading) and `mosquitto_pub -l -q 1` reading the same kind of pty (C, no parsing, one message per
line) as the reference. Every line is `t=<send time>` (wall clock in whole microseconds, unique
and increasing): one reading `t` in the gateway whose value is the send time, one message in
mosquitto_pub whose payload is the line. The subscriber is mosquitto_sub (C, QoS 1), read by a
thread that takes the receive time of every chunk; the send time in a message identifies its
line, so lost lines and duplicates are counted exactly and latency = receive - send time.

With --batch N the gateway's device gets `batch: {max_items: N, max_delay: --batch-delay}`: its
readings go out as JSON arrays to `bench/dev/batch`, `[{"sensor": "t", "value": <send time>,
"unit": null, "ts": ..., "seq": ...}, ...]`, and every element counts as its reading (lost,
duplicates and latency stay exact per reading; a reading waits up to max_delay for its batch).
mosquitto_pub still sends one message per line. The table then shows messages/s next to
readings/s, and the p99 latency target (for one message per reading) is not judged.

Each measurement gets a fresh broker, pty, subscriber and program, and is repeated --runs times
(the programs take turns); the table shows medians.

throughput  --lines lines written as fast as the pty takes them: readings/s (and the messages/s
            that carried them) from the first write to the last message; CPU seconds per
            100k readings and peak RSS of that run too.
latency     one line every 1/--rate s for --seconds: p50/p99 latency, CPU seconds per 100k
            readings (utime + stime of /proc/PID/stat, 10 ms ticks), peak RSS (VmHWM).
outage      lines at --rate; after --before s the broker is SIGKILLed, after --outage s more it
            is started again on the same port. The program is paused (SIGSTOP) from just before
            the restart until a new subscriber holds its subscription (about 0.1 s), so nothing
            is published to a broker nobody listens to yet; the clock starts when it resumes.
            Reported: the backlog (lines sent before the restart and not delivered before the
            kill), restart -> first delivery, restart -> the whole backlog delivered, the drain
            rate (backlog / that time; live lines keep flowing meanwhile) and the same from the
            first delivery on (the reconnection left out), then lost lines and duplicates over
            the whole run (both subscribers; the one that sees the broker die subscribes at
            QoS 0, see Receiver).

What the rig itself can carry (2 shared cores, noisy; 20-byte lines `t=1764074400.123456`),
each part measured alone, 2026-12-01:
- the writer (a line stamped and formatted at a time, 64 lines a write) into a socat pty that
  a plain reader drains, nobody publishing: 400,000-495,000 lines/s, 1.5 us of CPU a line; the
  pty pair alone (lines made beforehand) 3.9 M lines/s (77 MB/s): one pty is not a limit, so
  there is one device (and one pty) only.
- mosquitto_sub -v draining a queue of messages into the reader thread: 130,000-340,000
  messages/s of one reading, 3.5 M readings/s in arrays of 100.
- the reader thread only counts (a C scan, ~3 M readings/s); the stamps are parsed afterwards
  (`Arrivals.add`, 400,000-1,000,000 readings/s of one core).
- all of it end to end with a stand-in program that costs next to nothing (`--rig-check`):
  210,000-520,000 readings/s in arrays of 100 (the low end at a load of 3 from other work),
  the writer being the first limit. The gateway with --batch 100 measured 17,000-51,000
  readings/s (36,000 the median of 3 runs of 300,000 lines), at 1.7-2.6 CPU s per 100k
  readings: its own CPU limits it, not the rig.

Measurements on a 2-core machine shared with other work are noisy (+-30 % between runs of a
minute apart is common): compare the two programs of one run, and use --runs 3 or more.

Run from the repository root (needs mosquitto, mosquitto_pub, mosquitto_sub and socat:
./scripts/setup.sh); a full run takes about 3.5 minutes:

    .venv/bin/python bench/delivery.py [--runs 3] [--only throughput latency outage] [--sub-qos 0]
        [--lines 20000] [--rate 1000] [--seconds 10] [--outage 10] [--inflight N]
        [--batch N [--batch-delay 0.05]] [--backoff-max 1] [--set KEY=VALUE]
        [--gateway-src DIR] [--profile-dir DIR]
    .venv/bin/python bench/delivery.py --rig-check [--lines 500000] [--batch 100] [--runs 3]

For batched throughput use --lines 200000 or more: at 50,000 readings/s the default 20,000
lines are over in 0.4 s.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from benchlib import (
    PREFIX,
    REPO,
    Broker,
    MosquittoSubReader,
    cpu_seconds,
    missing_tools,
    peak_rss_mb,
    pty_pair,
    start_gateway,
    start_mosquitto_pub,
    stop,
    write_gateway_config,
)

US = 1_000_000
# The send stamp in what mosquitto_sub prints: `bench/dev/t {"value": 1764074400.123456, ...}`
# (the gateway), `bench/dev/batch [{"sensor": "t", "value": 1764074400.123456, ...}, ...]` (the
# gateway with --batch) or `bench/ref t=1764074400.123456` (mosquitto_pub).
STAMP = re.compile(rb'(?:"value": | t=)(\d+)\.(\d{1,6})')
STAMP_MARKS = (b'"value": ', b" t=")  # each match of STAMP holds one of these
CHUNK = 64  # lines per write when writing as fast as the pty takes them
Chunk = tuple[int, bytes]  # (receive time ns, the whole lines of one read)


def stamp_of(whole: bytes, frac: bytes) -> int:
    return int(whole) * US + int(frac.ljust(6, b"0"))


class Stamper:
    """Send stamps: wall-clock microseconds, unique and increasing; remembers every line sent."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self._last = 0

    def line(self) -> bytes:
        us = max(time.time_ns() // 1000, self._last + 1)
        self._last = us
        self.sent.append(us)
        return b"t=%d.%06d\n" % divmod(us, US)


class PtyStalledError(TimeoutError):
    pass


def write_all(fd: int, data: bytes, stall: float) -> None:
    """Write to the non-blocking pty, waiting while it is full (at most `stall` s at a time)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            if not select.select([], [fd], [], stall)[1]:
                raise PtyStalledError(f"the pty took nothing for {stall:g} s") from None


class Feeder(threading.Thread):
    """Writes one line every 1/rate s. A line the full pty refuses (the program stopped reading)
    is counted as refused, not sent, so the schedule never blocks."""

    def __init__(self, fd: int, rate: float, stamper: Stamper) -> None:
        super().__init__(name="feeder", daemon=True)
        self.fd, self.rate, self.stamper = fd, rate, stamper
        self.refused = 0
        self.error: OSError | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        began, n = time.monotonic(), 0
        try:
            while not self._halt.is_set():
                line = self.stamper.line()
                try:
                    written = os.write(self.fd, line)
                except BlockingIOError:
                    written = 0
                if written == 0:
                    self.stamper.sent.pop()
                    self.refused += 1
                elif written < len(line):
                    write_all(self.fd, line[written:], 5.0)
                n += 1
                if (pause := began + n / self.rate - time.monotonic()) > 0:
                    time.sleep(pause)
        except OSError as exc:
            self.error = exc

    def stop(self) -> None:
        self._halt.set()
        self.join(10)
        if self.error is not None:
            raise self.error


class Receiver:
    """`mosquitto_sub -v` on `bench/#`: a C subscriber that is not the bottleneck. A reader
    thread takes the receive time of each read and keeps its whole lines; it only counts what
    may be stamps (`STAMP_MARKS`, a C scan: never fewer than the stamps), and the stamps are
    parsed later, by `Arrivals.add`, so that the reader costs the machine as little as possible
    while it is being measured (see the docstring of the module for the rig's limits).

    At QoS 1 (the default) it acknowledges each message; when the broker dies, it reads one
    packet, fails to send its PUBACK and drops what it had not read yet: lines the program had
    already handed to the broker. A subscriber that is to see the broker die subscribes at
    QoS 0, which reads everything up to the end of the connection."""

    def __init__(self, port: int, qos: int = 1) -> None:
        self.count = 0  # stamps received (at least), duplicates included
        self.last_at = time.monotonic()  # when a stamp last arrived
        self.warm = threading.Event()
        self._probed = threading.Event()
        self._chunks: list[Chunk] = []
        self._changed = threading.Condition()
        self._rest = b""  # a line split between two reads counts on the second
        self._sub = MosquittoSubReader(
            port, qos, self._read, (f"{PREFIX}/probe", "probe"), self._probed
        )

    def _read(self, chunk: bytes) -> None:
        now = time.time_ns()
        buf = self._rest + chunk
        end = buf.rfind(b"\n") + 1
        data, self._rest = buf[:end], buf[end:]
        if b"warm" in data:
            self.warm.set()
        if b" probe" in data:
            self._probed.set()
        if marks := sum(data.count(mark) for mark in STAMP_MARKS):
            with self._changed:
                self._chunks.append((now, data))
                self.count += marks
                self.last_at = time.monotonic()
                self._changed.notify_all()

    def wait_count(
        self, n: int, timeout: float, proc: subprocess.Popen[bytes], *, quiet: float = 5.0
    ) -> bool:
        """Wait until `n` stamps (counted as `count` counts them) arrived; give up after
        `timeout`, after `quiet` s without a new one, or when the program exits."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.count < n:
                now = time.monotonic()
                if now > deadline or now - self.last_at > quiet or proc.poll() is not None:
                    return False
                self._changed.wait(0.1)
        return True

    def take(self) -> list[Chunk]:
        """What arrived since the last call."""
        with self._changed:
            chunks, self._chunks = self._chunks, []
        return chunks

    def close(self) -> None:
        self._sub.close()


class Arrivals:
    """The first receive time of each send stamp, how many arrived again, and how many messages
    carried them (a batch is one message of many stamps; mosquitto_sub prints one a line)."""

    def __init__(self) -> None:
        self.first: dict[int, int] = {}  # stamp (us) -> receive time (ns)
        self.duplicates = 0
        self.messages = 0  # messages with at least one stamp, repeats included

    def add(self, chunks: Sequence[Chunk]) -> list[int]:
        """Record `chunks`; returns the stamps that arrived for the first time."""
        new = []
        first = self.first
        for received, data in chunks:
            for line in data.splitlines():
                if not (found := STAMP.findall(line)):
                    continue
                self.messages += 1
                for whole, frac in found:
                    stamp = stamp_of(whole, frac)
                    if stamp in first:
                        self.duplicates += 1
                    else:
                        first[stamp] = received
                        new.append(stamp)
        return new

    def lost(self, sent: Sequence[int]) -> int:
        return sum(s not in self.first for s in sent)

    def last_ns(self) -> int:
        return max(self.first.values(), default=0)


def collect(
    rx: Receiver,
    arrivals: Arrivals,
    sent: Sequence[int],
    proc: subprocess.Popen[bytes],
    timeout: float,
    *,
    quiet: float = 5.0,
) -> None:
    """Wait until every line in `sent` has arrived (a duplicate does not stand in for a line
    still on its way); give up as `Receiver.wait_count` does."""
    deadline = time.monotonic() + timeout
    while True:
        arrivals.add(rx.take())
        missing = arrivals.lost(sent)
        left = deadline - time.monotonic()
        if not missing or not rx.wait_count(rx.count + missing, left, proc, quiet=quiet):
            arrivals.add(rx.take())
            return


# -- the programs under test ---------------------------------------------------------------------
class Program(Protocol):
    label: str

    def start(self, pty: Path, port: int, tmp: Path, name: str) -> subprocess.Popen[bytes]: ...


@dataclass
class Gateway:
    inflight: int | None
    backoff_max: float
    src: Path
    profile_dir: Path | None
    overrides: Sequence[str] = ()
    batch: tuple[int, float] | None = None  # (max_items, max_delay s) of the device
    label: str = "gateway"
    _profiles: int = 0

    def start(self, pty: Path, port: int, tmp: Path, name: str) -> subprocess.Popen[bytes]:
        config = tmp / "gateway.yaml"
        write_gateway_config(
            config,
            pty=pty,
            port=port,
            state_dir=tmp / "state",
            qos=1,
            inflight=self.inflight,
            backoff_max=self.backoff_max,
            batch=self.batch,
            overrides=self.overrides,
        )
        profile = None
        if self.profile_dir is not None:
            self._profiles += 1
            profile = self.profile_dir / f"gateway-{name}-{self._profiles}.prof"
        return start_gateway(config, tmp / "gateway.log", src=self.src, profile=profile)


@dataclass
class MosquittoPub:
    label: str = "mosquitto_pub"

    def start(self, pty: Path, port: int, tmp: Path, name: str) -> subprocess.Popen[bytes]:
        return start_mosquitto_pub(pty, port, 1, f"{PREFIX}/ref")


# The stand-in of --rig-check: reads the pty in 64 KB reads, turns each `key=value` line into the
# element the gateway would send and pipes every `per` of them as one JSON array (one line) into
# `mosquitto_pub -l -q 1`; argv: pty, port, topic, per.
STAND_IN = r"""
import os, subprocess, sys, tty
pty, port, topic, per = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
fd = os.open(pty, os.O_RDONLY | os.O_NOCTTY)
tty.setraw(fd)
pub = subprocess.Popen(
    ["mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-q", "1", "-t", topic, "-l"],
    stdin=subprocess.PIPE,
)
rest, seq = b"", 0
while chunk := os.read(fd, 1 << 16):
    buf = rest + chunk
    end = buf.rfind(b"\n") + 1
    rest, items = buf[end:], []
    for line in buf[:end].split(b"\n")[:-1]:
        key, _, value = line.partition(b"=")
        seq += 1
        items.append(b'{"sensor": "%s", "value": %s, "unit": null, "ts": 0.0, "seq": %d}'
                     % (key, value, seq))
    pub.stdin.write(b"".join(b"[" + b", ".join(items[i:i + per]) + b"]\n"
                             for i in range(0, len(items), per)))
    pub.stdin.flush()
"""


@dataclass
class StandIn:
    """What the rig alone can carry (--rig-check): a program that costs next to nothing in
    place of the gateway, batching as the gateway does with --batch."""

    per: int
    label: str = "stand-in"

    def start(self, pty: Path, port: int, tmp: Path, name: str) -> subprocess.Popen[bytes]:
        topic = f"{PREFIX}/dev/batch"
        return subprocess.Popen(
            [sys.executable, "-c", STAND_IN, str(pty), str(port), topic, str(self.per)]
        )


@dataclass
class Rig:
    """One measurement's parts: broker, pty (non-blocking write fd), subscriber, program."""

    broker: Broker
    fd: int
    rx: Receiver
    proc: subprocess.Popen[bytes] | None = None
    first_message: float = math.nan  # s from starting the program to its first message

    def stats(self) -> tuple[float, float]:
        """(CPU seconds so far, peak RSS MB) of the program; NaN once it has exited."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            return math.nan, math.nan
        return cpu_seconds(self.proc.pid), peak_rss_mb(self.proc.pid)

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)


@contextlib.contextmanager
def rig(program: Program, name: str, sub_qos: int = 1) -> Iterator[Rig]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-") as tmpdir,
        Broker(Path(tmpdir)) as broker,
        pty_pair(Path(tmpdir), nonblocking=True) as (pty, fd),
    ):
        parts = Rig(broker, fd, Receiver(broker.port, sub_qos))
        try:
            started = time.perf_counter()
            parts.proc = program.start(pty, broker.port, Path(tmpdir), name)
            try:
                parts.first_message = warm_up(parts, started)
                yield parts
            finally:
                stop(parts.proc)
        finally:
            parts.rx.close()  # (the outage measurement replaces the subscriber)


def warm_up(parts: Rig, started: float) -> float:
    """Write `warm=1` lines until one arrives: the program is up end to end. Returns the
    seconds from starting it to that first delivered message."""
    proc = parts.proc
    assert proc is not None
    deadline = time.monotonic() + 30
    while not parts.rx.warm.wait(0.05):
        if proc.poll() is not None:
            raise RuntimeError(f"the program exited with {proc.returncode} during warm-up")
        if time.monotonic() > deadline:
            raise TimeoutError("no warm-up message arrived within 30 s")
        with contextlib.suppress(BlockingIOError):
            os.write(parts.fd, b"warm=1\n")
    first = time.perf_counter() - started
    time.sleep(0.3)  # let the last warm-up messages drain
    return first


# -- measurements --------------------------------------------------------------------------------
@dataclass
class Throughput:
    lines: int
    received: int  # distinct lines delivered
    duplicates: int
    seconds: float  # first write -> last message
    cpu: float
    rss: float
    first_message: float
    messages: int  # that carried the lines, repeats included

    @property
    def rate(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else 0.0

    @property
    def message_rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def lost(self) -> int:
        return self.lines - self.received

    @property
    def cpu_per_100k(self) -> float:
        return self.cpu / self.received * 100_000 if self.received else math.nan

    def brief(self) -> str:
        per_message = self.received / self.messages if self.messages else math.nan
        return (
            f"{self.rate:,.0f} readings/s in {self.message_rate:,.0f} messages/s "
            f"({per_message:.1f} a message), {self.cpu_per_100k:.1f} CPU s/100k, "
            f"{self.rss:.0f} MB, lost {self.lost}, dup {self.duplicates}"
        )


def throughput(program: Program, args: argparse.Namespace) -> Throughput:
    lines: int = args.lines
    with rig(program, "throughput", sub_qos=args.sub_qos) as parts:
        assert parts.proc is not None
        stamper = Stamper()
        cpu0, _ = parts.stats()
        began = time.time_ns()
        for i in range(0, lines, CHUNK):
            data = b"".join(stamper.line() for _ in range(min(CHUNK, lines - i)))
            write_all(parts.fd, data, stall=args.timeout)
        arrivals = Arrivals()
        collect(parts.rx, arrivals, stamper.sent, parts.proc, args.timeout)
        cpu, rss = parts.stats()
    seconds = (arrivals.last_ns() - began) / 1e9
    received = len(arrivals.first)
    return Throughput(
        lines,
        received,
        arrivals.duplicates,
        seconds,
        cpu - cpu0,
        rss,
        parts.first_message,
        arrivals.messages,
    )


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


@dataclass
class Latency:
    sent: int
    received: int
    duplicates: int
    refused: int
    seconds: float  # of writing
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu: float
    rss: float

    @property
    def lost(self) -> int:
        return self.sent - self.received

    @property
    def cpu_per_100k(self) -> float:
        return self.cpu / self.received * 100_000 if self.received else math.nan

    def brief(self) -> str:
        return (
            f"{self.sent / self.seconds:,.0f} lines/s, p50 {self.p50_ms:.2f} ms, "
            f"p99 {self.p99_ms:.2f} ms, max {self.max_ms:.1f} ms, "
            f"{self.cpu_per_100k:.1f} CPU s/100k, {self.rss:.0f} MB, lost {self.lost}, "
            f"dup {self.duplicates}" + (f", the pty refused {self.refused}" if self.refused else "")
        )


def latency(program: Program, args: argparse.Namespace) -> Latency:
    with rig(program, "latency") as parts:
        assert parts.proc is not None
        stamper = Stamper()
        feeder = Feeder(parts.fd, args.rate, stamper)
        cpu0, _ = parts.stats()
        began = time.monotonic()
        feeder.start()
        time.sleep(args.seconds)
        feeder.stop()
        seconds = time.monotonic() - began
        arrivals = Arrivals()
        collect(parts.rx, arrivals, stamper.sent, parts.proc, args.timeout)
        cpu, rss = parts.stats()
    delays = sorted((ns / 1000 - s) / 1000 for s, ns in arrivals.first.items())
    return Latency(
        len(stamper.sent),
        len(arrivals.first),
        arrivals.duplicates,
        feeder.refused,
        seconds,
        percentile(delays, 50),
        percentile(delays, 99),
        delays[-1] if delays else math.nan,
        cpu - cpu0,
        rss,
    )


@dataclass
class Outage:
    sent: int = 0
    refused: int = 0  # lines the full pty did not take (the program stopped reading)
    backlog: int = 0  # sent before the restart, not delivered before the kill
    drained: int = 0  # of the backlog, delivered after the restart
    reconnect_s: float = math.nan  # restart -> first message
    drain_s: float = math.nan  # restart -> the last of the backlog delivered
    lost: int = 0
    duplicates: int = 0
    rss: float = math.nan
    exit_code: int | None = None  # the program exited during the run
    notes: list[str] = field(default_factory=list)

    @property
    def drain_rate(self) -> float:
        return self.drained / self.drain_s if self.drain_s > 0 else math.nan

    @property
    def drain_rate_connected(self) -> float:
        """The backlog / (first message -> the last of the backlog): the reconnection left
        out (it dominates `drain_rate` when the backlog is small or batched)."""
        seconds = self.drain_s - self.reconnect_s
        return self.drained / seconds if seconds > 0 else math.nan

    def brief(self) -> str:
        text = (
            f"backlog {self.backlog}, first message {self.reconnect_s:.2f} s after restart, "
            f"{self.drained} drained in {self.drain_s:.2f} s ({self.drain_rate:,.0f}/s; "
            f"{self.drain_rate_connected:,.0f}/s from the first message), "
            f"lost {self.lost}, dup {self.duplicates}, {self.rss:.0f} MB"
        )
        if self.refused:
            text += f"; the pty refused {self.refused} lines"
        if self.exit_code is not None:
            text += f"; exited with {self.exit_code}"
        return text


def outage(program: Program, args: argparse.Namespace) -> Outage:
    result = Outage()
    with rig(program, "outage", sub_qos=0) as parts:  # (see Receiver)
        assert parts.proc is not None
        stamper, arrivals = Stamper(), Arrivals()
        feeder = Feeder(parts.fd, args.rate, stamper)
        feeder.start()
        try:
            time.sleep(args.before)
            parts.broker.kill()
            time.sleep(0.5)  # the subscriber prints what was already in its socket
            parts.rx.close()  # (it would reconnect by itself, racing the program)
            arrivals.add(parts.rx.take())
            time.sleep(args.outage)
            restart = restart_broker(parts)
            cut = restart // 1000  # lines stamped up to here were sent before the restart
            backlog = {s for s in list(stamper.sent) if s <= cut and s not in arrivals.first}
            result.backlog = len(backlog)
            drain(parts, arrivals, backlog, restart, result=result, args=args)
            time.sleep(1.0)  # live lines keep flowing a little after the drain
        finally:
            feeder.stop()
        collect(parts.rx, arrivals, stamper.sent, parts.proc, 10, quiet=3)
        _, result.rss = parts.stats()
        result.exit_code = parts.proc.poll()
    result.sent, result.refused = len(stamper.sent), feeder.refused
    result.lost, result.duplicates = arrivals.lost(stamper.sent), arrivals.duplicates
    return result


def restart_broker(parts: Rig) -> int:
    """Start the broker again and a new subscriber, the program paused meanwhile; returns the
    time (ns) the program resumed."""
    parts.signal(signal.SIGSTOP)
    try:
        parts.broker.start()
        parts.rx = Receiver(parts.broker.port)
    finally:
        parts.signal(signal.SIGCONT)
    return time.time_ns()


def drain(
    parts: Rig,
    arrivals: Arrivals,
    backlog: set[int],
    restart: int,
    *,
    result: Outage,
    args: argparse.Namespace,
) -> None:
    """Wait until the whole backlog arrived; give up after `args.timeout`, when it stops
    progressing for `args.quiet` s, or when the program exits."""
    assert parts.proc is not None
    left = set(backlog)
    first = last = 0
    progress = deadline = time.monotonic()
    deadline += args.timeout
    while left and parts.proc.poll() is None:
        now = time.monotonic()
        if now > deadline or now - progress > args.quiet:
            break
        time.sleep(0.01)
        for stamp in arrivals.add(parts.rx.take()):
            received = arrivals.first[stamp]
            first = min(first, received) if first else received
            if stamp in left:
                left.discard(stamp)
                last, progress = max(last, received), now
    result.drained = len(backlog) - len(left)
    if first:
        result.reconnect_s = (first - restart) / 1e9
    if last:
        result.drain_s = (last - restart) / 1e9
    if left:
        result.notes.append(f"{len(left)} of the backlog never arrived")


# -- report --------------------------------------------------------------------------------------
Measurement = Throughput | Latency | Outage
MEASUREMENTS: dict[str, Callable[[Program, argparse.Namespace], Measurement]] = {
    "throughput": throughput,
    "latency": latency,
    "outage": outage,
}


@dataclass
class Row:
    label: str
    kind: str  # the measurement
    attr: str  # its attribute
    fmt: str = ",.0f"
    target: Callable[[float], bool] | None = None
    target_text: str = ""
    batch_only: bool = False  # shown for a --batch run only
    unbatched_target: bool = False  # the target is for one message per reading
    batch_target: Callable[[float], bool] | None = None  # instead of `target` with --batch
    batch_target_text: str = ""


ROWS = [
    Row(
        "readings/s, QoS 1, max rate",
        "throughput",
        "rate",
        ",.0f",
        lambda v: v >= 12_000,
        ">= 12,000/s",
        batch_target=lambda v: v >= 100_000,
        batch_target_text=">= 100,000/s",
    ),
    Row("  messages/s at max rate", "throughput", "message_rate", batch_only=True),
    Row("  CPU s per 100k at max rate", "throughput", "cpu_per_100k", ".1f"),
    Row("  peak RSS at max rate, MB", "throughput", "rss", ".1f"),
    Row("  start -> first message, s", "throughput", "first_message", ".2f"),
    Row("p50 latency @rate, ms", "latency", "p50_ms", ".2f"),
    Row(
        "p99 latency @rate, ms",
        "latency",
        "p99_ms",
        ".2f",
        lambda v: v <= 2.0,
        "<= 2 ms",
        unbatched_target=True,
    ),
    Row(
        "CPU s per 100k readings @rate",
        "latency",
        "cpu_per_100k",
        ".1f",
        lambda v: v <= 36.0,
        "<= 36 s",
        unbatched_target=True,
    ),
    Row("peak RSS @rate, MB", "latency", "rss", ".1f"),
    Row("outage: backlog at restart", "outage", "backlog"),
    Row("outage: restart -> 1st message, s", "outage", "reconnect_s", ".2f"),
    Row("outage: restart -> backlog in, s", "outage", "drain_s", ".2f"),
    Row(
        "outage: drain rate, readings/s",
        "outage",
        "drain_rate",
        ",.0f",
        lambda v: v >= 10_000,
        ">= 10,000/s",
    ),
    Row("  from the 1st message, readings/s", "outage", "drain_rate_connected"),
    Row("outage: peak RSS, MB", "outage", "rss", ".1f"),
]


def median(values: Sequence[float]) -> float:
    real = [v for v in values if not math.isnan(v)]
    return statistics.median(real) if real else math.nan


def fmt(value: float, spec: str) -> str:
    return "n/a" if math.isnan(value) else format(value, spec)


def print_table(
    results: dict[tuple[str, str], list[Measurement]], labels: Sequence[str], *, batch: bool
) -> int:
    """The medians side by side; returns the number of targets not met. With `batch` (the
    gateway batches, mosquitto_pub does not) the messages/s row is shown too, and the latency
    target, which is for one message per reading, is not judged."""
    gateway, reference = labels
    head = f"{'':<34} {gateway:>10} {reference:>14} {'ratio':>7}   target (issue 10)"
    print(f"\n{head}\n{'-' * len(head)}")
    missed = 0
    for row in ROWS:
        if row.batch_only and not batch:
            continue
        got = [
            median([getattr(m, row.attr) for m in results.get((row.kind, lab), [])])
            for lab in labels
        ]
        if all(math.isnan(v) for v in got):
            continue
        ratio = got[0] / got[1] if got[1] and not math.isnan(got[1]) else math.nan
        verdict = ""
        if batch and row.batch_target is not None:
            met = row.batch_target(got[0])
            missed += not met
            verdict = f"{row.batch_target_text}: {'met' if met else 'NOT MET'}"
        elif row.target is not None and row.unbatched_target and batch:
            verdict = f"{row.target_text}: not judged (a target for one message per reading)"
        elif row.target is not None and not math.isnan(got[0]):
            met = row.target(got[0])
            missed += not met
            verdict = f"{row.target_text}: {'met' if met else 'NOT MET'}"
        print(
            f"{row.label:<34} {fmt(got[0], row.fmt):>10} {fmt(got[1], row.fmt):>14} "
            f"{fmt(ratio, '.2f'):>7}   {verdict}"
        )
    lost = [
        [sum(m.lost for m in results.get((k, lab), [])) for k in MEASUREMENTS] for lab in labels
    ]
    dups = [
        sum(m.duplicates for k in MEASUREMENTS for m in results.get((k, lab), [])) for lab in labels
    ]
    cells = ["/".join(map(str, counts)) for counts in lost]
    gateway_lost = sum(lost[0])
    missed += gateway_lost > 0
    print(
        f"{'lost (thr/lat/outage), all runs':<34} {cells[0]:>10} {cells[1]:>14} {'':>7}   "
        f"0 lost: {'met' if gateway_lost == 0 else 'NOT MET'}"
    )
    print(f"{'duplicates, all runs':<34} {dups[0]:>10} {dups[1]:>14}")
    return missed


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each measurement")
    parser.add_argument("--only", nargs="+", choices=list(MEASUREMENTS), default=list(MEASUREMENTS))
    parser.add_argument("--lines", type=int, default=20_000, help="lines, throughput run")
    parser.add_argument("--rate", type=float, default=1000.0, help="lines/s, latency and outage")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of a latency run")
    parser.add_argument("--before", type=float, default=2.0, help="s of flow before the kill")
    parser.add_argument("--outage", type=float, default=10.0, help="s the broker is down")
    parser.add_argument("--timeout", type=float, default=60.0, help="s to wait for messages")
    parser.add_argument(
        "--quiet", type=float, default=5.0, help="give up a drain that made no progress this long"
    )
    parser.add_argument(
        "--sub-qos",
        type=int,
        choices=[0, 1],
        default=1,
        help="QoS of the subscriber in the throughput run (publishing is QoS 1 either way)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=0,
        metavar="N",
        help="the gateway batches N readings a message (the device's batch.max_items; 0: off)",
    )
    parser.add_argument(
        "--batch-delay",
        type=float,
        default=0.05,
        metavar="S",
        help="the device's batch.max_delay with --batch (s)",
    )
    parser.add_argument("--inflight", type=int, help="the gateway's mqtt.inflight (default 64)")
    parser.add_argument(
        "--backoff-max",
        type=float,
        default=1.0,
        help="the gateway's mqtt.backoff.max (s); mosquitto_pub retries every 1 s",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a gateway config setting, e.g. outbox.commit_interval=0.01 (repeatable)",
    )
    parser.add_argument(
        "--gateway-src", type=Path, default=REPO, help="source tree of the gateway to run"
    )
    parser.add_argument(
        "--rig-check",
        action="store_true",
        help="only the throughput of a stand-in that costs next to nothing instead of the "
        "gateway, batching --batch readings a message (100 if 0): what the rig can carry",
    )
    parser.add_argument(
        "--profile-dir", type=Path, help="run the gateway under cProfile; .prof files go here"
    )
    return parser.parse_args(argv)


def rig_check(args: argparse.Namespace) -> int:
    """The throughput of the stand-in, --runs times: the ceiling of the measurement itself."""
    program = StandIn(args.batch or 100)
    rates = []
    for run in range(1, args.runs + 1):
        print(f"run {run}/{args.runs} rig check {program.label} ", end="", flush=True)
        measured = throughput(program, args)
        rates.append(measured.rate)
        print(f"{measured.brief()} (load {os.getloadavg()[0]:.1f})")
    print(
        f"\nthe rig carries {median(rates):,.0f} readings/s ({args.lines:,} lines, "
        f"{program.per} a message; median of {args.runs})"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if missing := missing_tools():
        print(f"needs {', '.join(missing)}: run ./scripts/setup.sh")
        return 2
    if args.rig_check:
        return rig_check(args)
    if args.profile_dir is not None:
        args.profile_dir.mkdir(parents=True, exist_ok=True)
        args.profile_dir = args.profile_dir.resolve()
    programs: list[Program] = [
        Gateway(
            args.inflight,
            args.backoff_max,
            args.gateway_src.resolve(),
            args.profile_dir,
            args.set,
            (args.batch, args.batch_delay) if args.batch > 0 else None,
        ),
        MosquittoPub(),
    ]
    results: dict[tuple[str, str], list[Measurement]] = {}
    load_before, began = os.getloadavg(), time.monotonic()
    for run in range(1, args.runs + 1):
        for kind in args.only:
            for program in programs:
                print(f"run {run}/{args.runs} {kind:<10} {program.label:<13} ", end="", flush=True)
                try:
                    measured = MEASUREMENTS[kind](program, args)
                except (OSError, RuntimeError) as exc:
                    print(f"failed: {exc}")
                    continue
                print(f"{measured.brief()} (load {os.getloadavg()[0]:.1f})")
                if isinstance(measured, Outage) and measured.notes:
                    print(f"{'':<30} {'; '.join(measured.notes)}")
                results.setdefault((kind, program.label), []).append(measured)
    load_after = os.getloadavg()
    missed = print_table(results, [p.label for p in programs], batch=args.batch > 0)
    batching = (
        f"the gateway batches up to {args.batch} readings a message (max_delay "
        f"{args.batch_delay:g} s), mosquitto_pub sends one a line"
        if args.batch > 0
        else "one message per reading"
    )
    print(
        f"\nmedians of {args.runs} run(s); {time.monotonic() - began:.0f} s; load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after, on {os.cpu_count()} CPUs; "
        f"latency and outage at {args.rate:,.0f} lines/s; {batching}; "
        "ratio = gateway / mosquitto_pub"
    )
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
