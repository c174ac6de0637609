"""Modbus TCP at scale: 50 units x 20 registers polled every second, over one shared TCP
connection and over 10 connections (5 units each); the gateway's CPU, poll-cycle times,
readings/s and memory.

    .venv/bin/python bench/modbus.py [--seconds 60] [--units 50] [--connections 1,10]

pymodbus's own TCP server plays the units (`gateway.modbus.simulator`, in a child process of
this bench, all servers on one event loop) on loopback; the gateway (a subprocess) polls them
and publishes one JSON message per unit and cycle (`payload: device`) to a private mosquitto,
which `mosquitto_sub` reads. Each unit has 10 input and 10 holding registers (uint16): two
requests per cycle. Reported per scenario, over the measured window after a warm-up:

- CPU % of one core: utime + stime of the gateway (all threads) / wall time;
- poll cycle p50 / p99: from a cycle's start (the message's `ts`) to the message's arrival at
  the subscriber, so it includes the outbox and the broker (a few ms);
- readings/s: `gateway_readings_received_total` over the window (20 per unit and cycle);
- RSS: the gateway's VmRSS at the end, and VmHWM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from benchlib import (
    PREFIX,
    REPO,
    Broker,
    MosquittoSubReader,
    cpu_seconds,
    free_port,
    peak_rss_mb,
    port_open,
    rss_mb,
    scrape,
    start_gateway,
    stop,
    wait_until,
)

REGISTERS_PER_TABLE = 10  # input 0-9 and holding 0-9: 20 registers, two requests a cycle


def serve(ports: list[int], units: int) -> None:
    """The child process: `units` units spread over one TCP server per port."""
    from gateway.modbus.simulator import ModbusSimulator  # noqa: PLC0415 - the child only

    table = {f: dict.fromkeys(range(REGISTERS_PER_TABLE), 1) for f in ("input", "holding")}
    per = units // len(ports)

    async def main() -> None:
        sims = [
            ModbusSimulator(
                port,
                {i * per + u + 1: table for u in range(per)},
                transport="tcp",
            )
            for i, port in enumerate(ports)
        ]
        async with asyncio.TaskGroup() as tg:
            for sim in sims:
                tg.create_task(sim.serve())

    asyncio.run(main())


def gateway_config(work: Path, broker: int, metrics: int, ports: list[int], units: int) -> Path:
    per = units // len(ports)
    registers = [
        {"name": f"{f[0]}{a}", "address": a, "function": f}
        for f in ("input", "holding")
        for a in range(REGISTERS_PER_TABLE)
    ]
    devices = [
        {
            "id": f"u{i * per + u + 1}",
            "type": "modbus",
            "transport": "tcp",
            "host": "127.0.0.1",
            "port": port,
            "unit_id": i * per + u + 1,
            "poll_interval": 1.0,
            "timeout": 1.0,
            "payload": "device",
            "registers": registers,
        }
        for i, port in enumerate(ports)
        for u in range(per)
    ]
    config = {
        "gateway": {"id": "bench", "state_dir": str(work / "state")},
        "mqtt": {"port": broker, "topic_prefix": PREFIX, "qos": 1},
        "log": {"level": "WARNING"},
        "metrics": {"port": metrics},
        "devices": devices,
    }
    path = work / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


class Cycles:
    """Arrival - ts of every device message (seconds), once `measuring` is set."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.probed = threading.Event()
        self.measuring = False
        self._rest = b""

    def __call__(self, chunk: bytes) -> None:
        now = time.time()
        lines = (self._rest + chunk).split(b"\n")
        self._rest = lines.pop()
        for line in lines:
            topic, _, payload = line.partition(b" ")
            if topic.endswith(b"/probe"):
                self.probed.set()
            elif self.measuring and payload.startswith(b"{"):
                ts = json.loads(payload).get("ts")
                if isinstance(ts, int | float):
                    self.delays.append(now - ts)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def scenario(connections: int, units: int, seconds: float) -> dict[str, Any]:
    ports = [free_port() for _ in range(connections)]
    with tempfile.TemporaryDirectory(prefix="bench-modbus-") as tmp, Broker(Path(tmp)) as broker:
        work = Path(tmp)
        server = _start_servers(ports, units)
        cycles = Cycles()
        sub = MosquittoSubReader(broker.port, 1, cycles, (f"{PREFIX}/probe", "x"), cycles.probed)
        metrics_port = free_port()
        gw = start_gateway(
            gateway_config(work, broker.port, metrics_port, ports, units), work / "gateway.log"
        )
        try:
            wait_until("the gateway's metrics", lambda: port_open(metrics_port), 20, gw)
            time.sleep(5)  # warm-up: every link up, imports done
            return _measure(gw.pid, metrics_port, cycles, seconds)
        finally:
            stop(gw)
            sub.close()
            stop(server, 5)


def _start_servers(ports: list[int], units: int) -> subprocess.Popen[bytes]:
    spec = ",".join(map(str, ports))
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", spec, "--units", str(units)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    wait_until("the modbus servers", lambda: all(port_open(p) for p in ports), 20, proc)
    return proc


def _measure(pid: int, metrics_port: int, cycles: Cycles, seconds: float) -> dict[str, Any]:
    readings0 = scrape(metrics_port).get("gateway_readings_received_total", 0.0)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    cycles.measuring = True
    time.sleep(seconds)
    cycles.measuring = False
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    readings1 = scrape(metrics_port).get("gateway_readings_received_total", 0.0)
    wall = t1 - t0
    return {
        "cpu_pct": 100 * (cpu1 - cpu0) / wall,
        "cycle_p50_ms": 1000 * percentile(cycles.delays, 0.50),
        "cycle_p99_ms": 1000 * percentile(cycles.delays, 0.99),
        "readings_s": (readings1 - readings0) / wall,
        "messages": len(cycles.delays),
        "rss_mb": rss_mb(pid),
        "peak_rss_mb": peak_rss_mb(pid),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window")
    parser.add_argument("--units", type=int, default=50)
    parser.add_argument("--connections", default="1,10", help="scenarios: connections each")
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # the child: comma-separated ports
    args = parser.parse_args()
    if args.serve:
        serve([int(p) for p in args.serve.split(",")], args.units)
        return 0
    print(
        f"{args.units} units x {2 * REGISTERS_PER_TABLE} registers every 1 s, "
        f"{args.seconds:g} s measured; load average {Path('/proc/loadavg').read_text().split()[0]}"
    )
    print("| connections | CPU % of a core | cycle p50 | cycle p99 | readings/s | RSS (peak) |")
    print("|---|---|---|---|---|---|")
    for connections in (int(c) for c in args.connections.split(",")):
        r = scenario(connections, args.units, args.seconds)
        print(
            f"| {connections} | {r['cpu_pct']:.1f} | {r['cycle_p50_ms']:.1f} ms "
            f"| {r['cycle_p99_ms']:.1f} ms | {r['readings_s']:.0f} "
            f"| {r['rss_mb']:.1f} MB ({r['peak_rss_mb']:.1f}) |",
            flush=True,
        )
    per_core = "readings/s per core = readings/s / (CPU % / 100)"
    print(f"\n{per_core}; load average now {Path('/proc/loadavg').read_text().split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
