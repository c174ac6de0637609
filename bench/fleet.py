"""A fleet on one broker: N gateway processes, each with a few synthetic devices, for a while.

    N x gateway run (synthetic devices) -> mosquitto, or a 3-node RabbitMQ cluster -> mosquitto_sub

Gateway i is `gw<i>`, publishes under `fleet/{gateway}` (the topic template of issue 16) and,
on the cluster, lists all three nodes in `mqtt.servers`, starting at node i mod 3, so the fleet
is spread over the nodes. Every device makes `--seconds / --interval` frames of one counter
reading, then falls silent, so what was produced is known exactly. One subscriber (on node 1 of
the cluster) counts what arrives by each reading's `seq`. It prints:

- readings produced and delivered, lost (a seq that never arrived: must be 0), duplicates;
- per-gateway RSS (VmRSS in the steady phase, median and max) and CPU % of one core (median,
  max and the fleet's sum), over the steady phase: from when every gateway is connected until
  the devices are done;
- the broker's CPU % over the same phase (beam.smp of every node for RabbitMQ);
- how long the fleet took to start (every gateway connected).

    .venv/bin/python bench/fleet.py [--gateways 100] [--devices 10] [--interval 1] [--seconds 300]
        [--broker mosquitto|rabbitmq]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from benchlib import (
    REPO,
    Broker,
    MosquittoSubReader,
    SeqTally,
    cpu_seconds,
    missing_tools,
    rss_mb,
    start_gateway,
    stop,
    synthetic_devices,
    wait_until,
)

sys.path.insert(0, str(REPO / "tests"))  # the RabbitMQ cluster is the tests' own fixture

PREFIX = "fleet"
READING = re.compile(rb"^fleet/gw(\d+)/dev(\d+)/n \{.*\"seq\": (\d+)\}$", re.M)
ONLINE = re.compile(rb"^fleet/gw(\d+)/gw\d+/status online$", re.M)


class Counts(SeqTally):
    """The fleet's readings, one stream per (gateway, device), and who is online."""

    def __init__(self, gateways: int, devices: int, per_device: int) -> None:
        super().__init__(gateways * devices, per_device)
        self.devices = devices
        self.online: set[int] = set()

    def chunk(self, data: bytes) -> None:
        lines = self.lines(data)
        with self.lock:
            self.online.update(int(m[1]) for m in ONLINE.finditer(lines))
            for m in READING.finditer(lines):
                gw, dev, seq = int(m[1]), int(m[2]), int(m[3])
                self.mark(gw * self.devices + dev if dev < self.devices else len(self.seen), seq)


class Mosquitto:
    """The fleet's broker: one mosquitto."""

    name = "mosquitto"

    def __init__(self, tmp: Path) -> None:
        self._broker = Broker(tmp)

    def __enter__(self) -> Mosquitto:
        self._broker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._broker.close()

    def servers(self, i: int) -> list[str]:
        return [f"127.0.0.1:{self._broker.port}"]

    @property
    def sub_port(self) -> int:
        return self._broker.port

    def pids(self) -> list[int]:
        pid = self._broker.pid
        return [] if pid is None else [pid]


class RabbitMqCluster:
    """The fleet's broker: three RabbitMQ nodes in one cluster (tests/rabbitmq.py)."""

    name = "RabbitMQ 3-node cluster"

    def __init__(self, tmp: Path) -> None:
        from rabbitmq import RabbitCluster  # noqa: PLC0415 - only for --broker rabbitmq

        self._cluster = RabbitCluster(tmp / "cluster")

    def __enter__(self) -> RabbitMqCluster:
        self._cluster.start()
        print(f"cluster up in {self._cluster.up_seconds:.1f} s", flush=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._cluster.close()

    def servers(self, i: int) -> list[str]:
        nodes = self._cluster.nodes
        return [f"127.0.0.1:{nodes[(i + k) % len(nodes)].port}" for k in range(len(nodes))]

    @property
    def sub_port(self) -> int:
        return self._cluster.nodes[0].port

    def pids(self) -> list[int]:
        return [n.proc_pid for n in self._cluster.nodes]


def write_config(path: Path, i: int, servers: list[str], args: argparse.Namespace) -> None:
    frames = round(args.seconds / args.interval)
    config: dict[str, Any] = {
        "gateway": {"id": f"gw{i}", "state_dir": str(path.parent / "state")},
        "mqtt": {"servers": servers, "topic_prefix": f"{PREFIX}/{{gateway}}", "qos": 1},
        "log": {"level": "WARNING"},
        "metrics": {"port": 0},  # enabled, as by default, on a port of its own
        "devices": synthetic_devices(args.devices, interval=args.interval, frames=frames),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


@contextlib.contextmanager
def fleet(
    tmp: Path, broker: Mosquitto | RabbitMqCluster, args: argparse.Namespace
) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(args.gateways):
            config = tmp / f"gw{i}" / "gateway.yaml"
            write_config(config, i, broker.servers(i), args)
            procs.append(start_gateway(config, config.with_name("gateway.log")))
        yield procs
    finally:
        for proc in procs:  # all at once: one at a time, a hundred take minutes
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        codes = [stop(p, 30) for p in procs]
        bad = [i for i, code in enumerate(codes) if code != 0]
        if bad:
            print(f"gateways that did not exit 0: {bad[:10]}{' ...' if len(bad) > 10 else ''}")


def cpu(pids: Sequence[int]) -> list[float]:
    out = []
    for pid in pids:
        try:
            out.append(cpu_seconds(pid))
        except OSError:
            out.append(0.0)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateways", type=int, default=100)
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--broker", choices=["mosquitto", "rabbitmq"], default="mosquitto")
    args = parser.parse_args(argv)
    if missing := missing_tools():
        print(f"missing: {', '.join(missing)} (apt-get install -y mosquitto mosquitto-clients)")
        return 2
    with tempfile.TemporaryDirectory(prefix="fleet-") as tmp_name:
        tmp = Path(tmp_name)
        kind = Mosquitto if args.broker == "mosquitto" else RabbitMqCluster
        with kind(tmp) as broker:
            return run(tmp, broker, args)


def run(tmp: Path, broker: Mosquitto | RabbitMqCluster, args: argparse.Namespace) -> int:
    frames = round(args.seconds / args.interval)
    produced = args.gateways * args.devices * frames
    counts = Counts(args.gateways, args.devices, frames)
    print(
        f"fleet: {args.gateways} gateways x {args.devices} synthetic devices x "
        f"{1 / args.interval:g} reading/s for {args.seconds:g} s on {broker.name} "
        f"({produced} readings)",
        flush=True,
    )
    reader = MosquittoSubReader(
        broker.sub_port,
        1,
        counts.chunk,
        (f"{PREFIX}/probe", "x"),
        counts.probed,
        topic=f"{PREFIX}/#",
    )
    try:
        started = time.monotonic()
        with fleet(tmp, broker, args) as procs:
            wait_until("every gateway online", lambda: len(counts.online) >= len(procs), 600)
            up = time.monotonic() - started
            print(f"all {len(procs)} gateways connected after {up:.1f} s", flush=True)
            pids = [p.pid for p in procs]
            t0, gw0, br0 = time.monotonic(), cpu(pids), cpu(broker.pids())
            # Steady until the first gateway's devices are done (they started within `up`).
            steady = max(10.0, args.seconds - up)
            time.sleep(steady / 2)
            rss = [rss_mb(pid) for pid in pids]
            time.sleep(steady / 2)
            t1, gw1, br1 = time.monotonic(), cpu(pids), cpu(broker.pids())
            wait_until(
                "the last readings",
                lambda: counts.delivered >= produced,
                args.seconds + 120,
            )
            elapsed = time.monotonic() - started
    except TimeoutError as exc:
        print(f"stopped waiting: {exc}")
        elapsed = time.monotonic() - started
        rss, gw0, gw1, br0, br1, t0, t1 = [0.0], [0.0], [0.0], [0.0], [0.0], 0.0, 1.0
    finally:
        reader.close()
    window = t1 - t0
    per_gw = [100 * (b - a) / window for a, b in zip(gw0, gw1, strict=True)]
    print(f"\n| {broker.name} | |\n|---|---|")
    rows = [
        (
            "gateways x devices x rate",
            f"{args.gateways} x {args.devices} x {1 / args.interval:g}/s",
        ),
        ("run", f"{elapsed:.0f} s (fleet connected after {up:.1f} s)"),
        ("readings produced", f"{produced}"),
        ("delivered", f"{counts.delivered}"),
        ("lost", f"{counts.lost()}"),
        ("duplicates", f"{counts.duplicates} (unexpected {counts.unexpected})"),
        ("RSS per gateway", f"median {statistics.median(rss):.1f} MB, max {max(rss):.1f} MB"),
        (
            "CPU per gateway",
            f"median {statistics.median(per_gw):.2f} %, max {max(per_gw):.2f} %, "
            f"fleet {sum(per_gw):.0f} % of one core",
        ),
        ("broker CPU", f"{100 * (sum(br1) - sum(br0)) / window:.1f} % of one core"),
    ]
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
