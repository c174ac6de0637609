"""Throughput of the serial -> MQTT slice, with `mosquitto_pub -l` as the reference, in one run.

    socat pty pair -> PROGRAM -> private mosquitto (loopback) -> subscriber (paho or mosquitto_sub)

PROGRAM is `gateway run` (a subprocess, one serial device, decoder kv) and then
`mosquitto_pub -l` reading the same pty (C, no parsing: one message per line). N lines like
`temp=21.50,hum=40.0,seq=123` are written into the pty as fast as it takes them; each makes 3
readings in the gateway and 1 message in mosquitto_pub. We count the messages the subscriber
receives until all have arrived (or the timeout passes) and report readings (messages) per
second from the first write to the last message, the CPU time and peak RSS of the program, and
the time from starting it to its first delivered message.

Run from the repository root (needs mosquitto, mosquitto_pub and socat: ./scripts/setup.sh):

    .venv/bin/python bench/serial_to_mqtt.py [--lines 20000] [--qos 1] [--runs 3]
        [--subscriber paho|mosquitto_sub] [--sub-qos 1] [--inflight N]

The paho subscriber (the default) caps the reference program (on a 2-core machine about 20k
messages/s at QoS 0, 8-10k at QoS 1); `--subscriber mosquitto_sub` counts with the C client.

Everything is on loopback and in a temporary directory; nothing is left running. The delivery
bench (QoS 1 throughput, latency, CPU, memory and a broker outage, one reading per line) is
bench/delivery.py; the parts both use are in bench/benchlib.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from benchlib import (
    PREFIX,
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
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode


# -- subscribers ---------------------------------------------------------------------------------
def is_warmup(topic: str, payload: bytes | bytearray) -> bool:
    return topic.endswith("/warm") or payload.startswith(b"warm")


class Counter:
    """Counts the messages under `bench/#` except status and warm-up messages; `done` is set
    once `target` have arrived, `last_at` is when the last one did."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.last_at = 0.0
        self.warm = threading.Event()
        self.done = threading.Event()

    def expect(self, target: int) -> None:
        self.count, self.target, self.last_at = 0, target, 0.0
        self.done.clear()

    def add(self, n: int) -> None:
        self.count += n
        self.last_at = time.perf_counter()
        if self.count >= self.target > 0:
            self.done.set()

    def close(self) -> None:
        raise NotImplementedError


class PahoSubscriber(Counter):
    """paho-mqtt in its network thread: the Python client a consumer would typically use."""

    def __init__(self, port: int, qos: int) -> None:
        super().__init__()
        self._subscribed = threading.Event()
        self._qos = qos
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{port}")
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise TimeoutError("subscriber: no SUBACK")

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        rc: ReasonCode,
        props: Properties | None,
    ) -> None:
        client.subscribe(f"{PREFIX}/#", qos=self._qos)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        rcs: list[ReasonCode],
        props: Properties | None,
    ) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        topic = msg.topic
        if topic.endswith("/status"):
            return
        if is_warmup(topic, msg.payload):
            self.warm.set()
            return
        self.add(1)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class MosquittoSubscriber(Counter):
    """`mosquitto_sub -v` (C), its output counted in bulk: a subscriber that is not the
    bottleneck, so the reference program is not capped by the measuring side."""

    def __init__(self, port: int, qos: int) -> None:
        super().__init__()
        self._sub = MosquittoSubReader(
            port, qos, self._count, (f"{PREFIX}/probe/warm", "warm"), self.warm
        )

    def _count(self, chunk: bytes) -> None:
        # Lines are `topic payload`; warm-up and status lines are few and never split the
        # counts that matter, so counting in bulk is exact enough and cheap.
        warm = chunk.count(b"warm")
        if warm:
            self.warm.set()
        data = chunk.count(b"\n") - warm - chunk.count(b"/status ")
        if data > 0:
            self.add(data)

    def close(self) -> None:
        self._sub.close()


# -- the programs under test ---------------------------------------------------------------------
class Program(Protocol):
    label: str
    per_line: int  # messages per line written

    def start(self, pty: Path, port: int, tmp: Path) -> subprocess.Popen[bytes]: ...


@dataclass
class Gateway:
    qos: int
    inflight: int | None
    label: str = "gateway run"
    per_line: int = 3

    def start(self, pty: Path, port: int, tmp: Path) -> subprocess.Popen[bytes]:
        config = tmp / "gateway.yaml"
        write_gateway_config(
            config,
            pty=pty,
            port=port,
            state_dir=tmp / "state",
            qos=self.qos,
            inflight=self.inflight,
        )
        return start_gateway(config, tmp / "gateway.log")


@dataclass
class MosquittoPub:
    qos: int
    label: str = "mosquitto_pub -l"
    per_line: int = 1

    def start(self, pty: Path, port: int, tmp: Path) -> subprocess.Popen[bytes]:
        return start_mosquitto_pub(pty, port, self.qos, f"{PREFIX}/ref")


# -- one measurement -----------------------------------------------------------------------------
@dataclass
class Result:
    label: str
    lines: int
    expected: int
    received: int
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    first_publish: float

    @property
    def rate(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else 0.0


def make_lines(n: int) -> list[bytes]:
    return [
        f"temp={20 + (i % 100) / 10:.2f},hum={40 + (i % 50) / 10:.1f},seq={i}\n".encode()
        for i in range(n)
    ]


def warm_up(fd: int, sub: Counter, proc: subprocess.Popen[bytes], started: float) -> float:
    """Write `warm=1` lines until one arrives: the program is up end to end. Returns the
    seconds from starting the program to that first delivered message."""
    sub.warm.clear()
    deadline = time.monotonic() + 30
    while not sub.warm.wait(0.05):
        if proc.poll() is not None:
            raise RuntimeError(f"program exited with {proc.returncode} during warm-up")
        if time.monotonic() > deadline:
            raise TimeoutError("no warm-up message arrived within 30 s")
        os.write(fd, b"warm=1\n")
    return time.perf_counter() - started


def measure(
    program: Program, port: int, sub: Counter, lines: Sequence[bytes], timeout: float
) -> Result:
    with (
        tempfile.TemporaryDirectory(prefix="bench-") as tmpdir,
        pty_pair(Path(tmpdir), "tty") as (pty, fd),
    ):
        started = time.perf_counter()
        proc = program.start(pty, port, Path(tmpdir))
        try:
            first = warm_up(fd, sub, proc, started)
            time.sleep(0.2)  # let the last warm-up messages drain
            expected = len(lines) * program.per_line
            sub.expect(expected)
            cpu0 = cpu_seconds(proc.pid)
            t0 = time.perf_counter()
            for line in lines:
                os.write(fd, line)
            sub.done.wait(timeout)
            seconds = (sub.last_at or time.perf_counter()) - t0
            cpu = cpu_seconds(proc.pid) - cpu0
            rss = peak_rss_mb(proc.pid)
        finally:
            stop(proc)
    return Result(program.label, len(lines), expected, sub.count, seconds, cpu, rss, first)


# -- report --------------------------------------------------------------------------------------
def print_table(results: Sequence[Result], qos: int) -> None:
    head = (
        f"{'program':<18} {'lines':>7} {'expected':>9} {'received':>9} {'seconds':>8} "
        f"{'readings/s':>11} {'lines/s':>8} {'CPU s/100k':>10} {'peak RSS':>9} {'1st msg':>8}"
    )
    print(f"\nserial -> MQTT on loopback, QoS {qos} (readings/s = messages received per second)")
    print(head)
    print("-" * len(head))
    for r in results:
        lines_per_s = r.rate / (r.expected / r.lines)
        cpu_per_100k = r.cpu_seconds / r.received * 100_000 if r.received else 0.0
        print(
            f"{r.label:<18} {r.lines:>7} {r.expected:>9} {r.received:>9} {r.seconds:>8.2f} "
            f"{r.rate:>11,.0f} {lines_per_s:>8,.0f} {cpu_per_100k:>10.1f} "
            f"{r.peak_rss_mb:>7.1f}MB {r.first_publish:>7.2f}s"
        )


def summary(results: Sequence[Result]) -> str:
    def median_rate(label: str) -> float:
        return statistics.median(r.rate for r in results if r.label == label)

    gateway, reference = median_rate("gateway run"), median_rate("mosquitto_pub -l")
    lost = sum(r.expected - r.received for r in results if r.label == "gateway run")
    ratio = gateway / reference if reference else 0.0
    return (
        f"\nmedian readings/s: gateway {gateway:,.0f}, mosquitto_pub {reference:,.0f}; "
        f"ratio gateway/mosquitto_pub = {ratio:.2f}; gateway readings missing: {lost}"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=20_000, help="lines written per run")
    parser.add_argument("--qos", type=int, choices=[0, 1, 2], default=1, help="publish QoS")
    parser.add_argument("--runs", type=int, default=1, help="runs of each program (median)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait per run")
    parser.add_argument("--inflight", type=int, help="the gateway's mqtt.inflight")
    parser.add_argument(
        "--subscriber",
        choices=["paho", "mosquitto_sub"],
        default="paho",
        help="what counts the messages; paho caps the reference (~20k msg/s at QoS 0)",
    )
    parser.add_argument(
        "--sub-qos", type=int, choices=[0, 1, 2], default=1, help="the subscriber's QoS"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if missing := missing_tools():
        print(f"needs {', '.join(missing)}: run ./scripts/setup.sh", file=sys.stderr)
        return 2
    lines = make_lines(args.lines)
    programs: list[Program] = [
        Gateway(args.qos, args.inflight),
        MosquittoPub(args.qos),
    ]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-broker-") as tmp, Broker(Path(tmp)) as broker:
        port = broker.port
        sub: Counter = (
            PahoSubscriber(port, args.sub_qos)
            if args.subscriber == "paho"
            else MosquittoSubscriber(port, args.sub_qos)
        )
        try:
            for run in range(args.runs):
                for program in programs:
                    print(f"run {run + 1}/{args.runs}: {program.label} ...", flush=True)
                    results.append(measure(program, port, sub, lines, args.timeout))
        finally:
            sub.close()
    print_table(results, args.qos)
    print(summary(results))
    complete = all(r.received >= r.expected for r in results)
    return 0 if complete else 1


if __name__ == "__main__":
    raise SystemExit(main())
