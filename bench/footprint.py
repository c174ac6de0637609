"""The gateway's footprint on an edge box: N serial devices at a given rate, per durability mode.

    N socat pty pairs -> gateway run (N serial devices, decoder kv) -> private mosquitto
                                                                       -> mosquitto_sub (counts)

Each device sends `temp=21.50,hum=40.1` lines (2 readings each) at --rate lines/s. Per mode
(`outbox.durability: disk` and `spill`) it prints:

- start to first message: from starting the process to the first reading at the subscriber
  (the devices send from the start);
- idle CPU %: of one core, over --idle seconds with the devices silent;
- CPU % under load: over --seconds at the rate;
- peak RSS: VmHWM at the end;
- disk bytes written per reading: `/proc/PID/io` write_bytes over the load phase (what the
  process made the kernel write, page-cache dirtying included) / readings delivered.

The state directory is on the disk the bench runs from (not tmpfs: tmpfs writes count nothing),
`--state-dir` chooses another. Extra `--set key=value` overrides go into the gateway's config,
e.g. `--set outbox.commit_interval=0.01`.

    .venv/bin/python bench/footprint.py [--devices 10] [--rate 10] [--seconds 30] [--idle 10]
        [--modes disk spill] [--set outbox.commit_interval=0.01]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
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
    stop,
)


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text(encoding="ascii").splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


class Received:
    """Counts readings (lines of mosquitto_sub -v output under PREFIX/dev)."""

    def __init__(self) -> None:
        self.count = 0
        self.first_at = 0.0
        self.probed = threading.Event()
        self._lock = threading.Lock()

    def chunk(self, data: bytes) -> None:
        n = data.count(f"{PREFIX}/dev".encode())
        if b"probe" in data:
            self.probed.set()
        with self._lock:
            if n and not self.first_at:
                self.first_at = time.monotonic()
            self.count += n


class Devices(threading.Thread):
    """Writes one line per device every 1/rate s (each 2 readings), while `on` is set."""

    def __init__(self, fds: list[int], rate: float) -> None:
        super().__init__(name="devices", daemon=True)
        self.fds, self.rate = fds, rate
        self.on = threading.Event()
        self.stopped = threading.Event()
        self.lines = 0

    def run(self) -> None:
        period = 1.0 / self.rate
        # The devices' lines are spread over the period, as unsynchronised devices are.
        offsets = [i * period / len(self.fds) for i in range(len(self.fds))]
        start = time.monotonic()
        tick = 0
        while not self.stopped.is_set():
            for fd, offset in zip(self.fds, offsets, strict=True):
                due = start + tick * period + offset
                time.sleep(max(0.0, due - time.monotonic()))
                if self.on.is_set():
                    os.write(fd, f"temp={20 + tick % 10}.5,hum={40 + tick % 7}.1\n".encode())
                    self.lines += 1
            tick += 1


@dataclass
class Footprint:
    mode: str
    start_to_first: float
    idle_cpu: float
    load_cpu: float
    rss: float
    bytes_per_reading: float
    readings: int
    rate: float


def config(
    tmp: Path, state: Path, port: int, ptys: list[Path], *, mode: str, sets: Sequence[str]
) -> Path:
    """`mode` "legacy": no durability key (a source tree from before it, see --src)."""
    cfg: dict[str, Any] = {
        "gateway": {"id": "bench", "state_dir": str(state)},
        "mqtt": {"port": port, "topic_prefix": PREFIX, "qos": 1},
        "outbox": {} if mode == "legacy" else {"durability": mode},
        "log": {"level": "WARNING"},
        "metrics": {"port": 0},
        "devices": [
            {"id": f"dev{i}", "type": "serial", "port": str(p), "baudrate": 115200}
            for i, p in enumerate(ptys)
        ],
    }
    for item in sets:
        key, _, value = item.partition("=")
        *parents, last = key.split(".")
        node = cfg
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(value)
    path = tmp / f"gateway-{mode}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def measure(args: argparse.Namespace, mode: str) -> Footprint:
    with tempfile.TemporaryDirectory(prefix="footprint-") as t, ExitStack() as stack:
        tmp = Path(t)
        state = Path(tempfile.mkdtemp(prefix="footprint-state-", dir=args.state_dir))
        broker = stack.enter_context(Broker(tmp))
        ptys, fds = [], []
        for i in range(args.devices):
            program_side, fd = stack.enter_context(pty_pair(tmp, f"tty{i}"))
            ptys.append(program_side)
            fds.append(fd)
        received = Received()
        sub = MosquittoSubReader(
            broker.port, 1, received.chunk, (f"{PREFIX}/probe", "probe"), received.probed
        )
        stack.callback(sub.close)
        devices = Devices(fds, args.rate)
        devices.start()
        stack.callback(devices.stopped.set)
        devices.on.set()
        began = time.monotonic()
        cfg = config(tmp, state, broker.port, ptys, mode=mode, sets=args.set)
        proc = start_gateway(cfg, tmp / "gw.log", src=Path(args.src))
        try:
            while not received.first_at:
                if proc.poll() is not None or time.monotonic() - began > 30:
                    raise RuntimeError((tmp / "gw.log").read_text(encoding="utf-8"))
                time.sleep(0.005)
            start_to_first = received.first_at - began
            time.sleep(2)  # warm: every link up, the first commits and checkpoints done
            cpu0, bytes0, n0, t0 = (
                cpu_seconds(proc.pid),
                write_bytes(proc.pid),
                received.count,
                time.monotonic(),
            )
            time.sleep(args.seconds)
            cpu1, bytes1, n1, t1 = (
                cpu_seconds(proc.pid),
                write_bytes(proc.pid),
                received.count,
                time.monotonic(),
            )
            devices.on.clear()
            time.sleep(3)  # the last acknowledgements and deletes
            cpu2, t2 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(args.idle)
            cpu3, t3 = cpu_seconds(proc.pid), time.monotonic()
            rss = peak_rss_mb(proc.pid)
        finally:
            stop(proc)
        readings = n1 - n0
        return Footprint(
            mode,
            start_to_first,
            (cpu3 - cpu2) / (t3 - t2) * 100,
            (cpu1 - cpu0) / (t1 - t0) * 100,
            rss,
            (bytes1 - bytes0) / readings if readings else float("nan"),
            readings,
            readings / (t1 - t0),
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--rate", type=float, default=10.0, help="lines/s per device")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the load phase")
    parser.add_argument("--idle", type=float, default=10.0, help="length of the idle phase")
    parser.add_argument("--modes", nargs="+", default=["disk", "spill"])
    parser.add_argument("--state-dir", default=str(REPO / ".bench"), help="on a real disk")
    parser.add_argument("--set", action="append", default=[], help="config key=value")
    parser.add_argument("--src", default=str(REPO), help="source tree to run (mode legacy: old)")
    args = parser.parse_args(argv)
    if missing := missing_tools():
        print(f"missing: {', '.join(missing)} (run ./scripts/setup.sh)", file=sys.stderr)
        return 1
    Path(args.state_dir).mkdir(parents=True, exist_ok=True)
    print(
        f"{args.devices} serial devices x {args.rate:g} lines/s (2 readings a line), "
        f"load {args.seconds:g} s, idle {args.idle:g} s {' '.join(args.set)}"
    )
    print(
        f"{'durability':<11} {'readings/s':>10} {'start->1st s':>12} {'idle CPU %':>10} "
        f"{'load CPU %':>10} {'peak RSS MB':>11} {'disk B/reading':>14}"
    )
    for mode in args.modes:
        f = measure(args, mode)
        print(
            f"{f.mode:<11} {f.rate:>10.0f} {f.start_to_first:>12.2f} {f.idle_cpu:>10.2f} "
            f"{f.load_cpu:>10.2f} {f.rss:>11.1f} {f.bytes_per_reading:>14.0f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
