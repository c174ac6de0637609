"""A soak: one gateway at a steady rate for a long time, sampled every minute.

    synthetic devices (built in, no ptys) -> gateway run -> private mosquitto -> mosquitto_sub

`--devices` synthetic devices share `--rate` readings/s (one counter reading per frame), for
`--seconds`. Every `--sample` seconds it prints the gateway's RSS (VmRSS), its CPU % of one core
over the interval, its open fds, the outbox depth (`gateway_outbox_records`), the event loop's
lag, and readings produced (`gateway_readings_received_total`) and delivered (seen by the
subscriber). At the end, when every device has made its frames, it waits for the last deliveries
and prints lost and duplicated readings, found by each reading's `seq` (every seq of every
device must arrive once), and the RSS drift: the last sample against the first one after
`--settle` seconds (the goal: within 5 %).

    .venv/bin/python bench/soak.py [--rate 1000] [--devices 10] [--seconds 3600] [--sample 60]
        [--settle 300] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from benchlib import (
    PREFIX,
    Broker,
    MosquittoSubReader,
    SeqTally,
    apply_overrides,
    cpu_seconds,
    free_port,
    missing_tools,
    open_fds,
    peak_rss_mb,
    rss_mb,
    scrape,
    start_gateway,
    stop,
    synthetic_devices,
    wait_until,
)

READING = re.compile(rb"^" + PREFIX.encode() + rb"/dev(\d+)/n \{.*\"seq\": (\d+)\}$", re.M)


class Seqs(SeqTally):
    """The soak's readings: `bench/dev<i>/n`, one stream per device."""

    def chunk(self, data: bytes) -> None:
        lines = self.lines(data)
        with self.lock:
            for m in READING.finditer(lines):
                self.mark(int(m[1]), int(m[2]))


def write_config(path: Path, args: argparse.Namespace, broker_port: int, metrics: int) -> int:
    """The gateway's config; returns the frames each device makes."""
    interval = args.devices / args.rate
    frames = round(args.seconds / interval)
    config: dict[str, Any] = {
        "gateway": {"id": "soak", "state_dir": str(path.parent / "state")},
        "mqtt": {"port": broker_port, "topic_prefix": PREFIX, "qos": 1},
        "log": {"level": "WARNING"},
        "metrics": {"port": metrics},
        "devices": synthetic_devices(args.devices, interval=interval, frames=frames),
    }
    apply_overrides(config, args.set)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return int(frames)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="readings/s in all")
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=3600.0)
    parser.add_argument("--sample", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=300.0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if missing := missing_tools():
        print(f"missing: {', '.join(missing)} (apt-get install -y mosquitto mosquitto-clients)")
        return 2
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp_name, Broker(Path(tmp_name)) as broker:
        tmp = Path(tmp_name)
        metrics_port = free_port()
        frames = write_config(tmp / "gateway.yaml", args, broker.port, metrics_port)
        seqs = Seqs(args.devices, frames)
        reader = MosquittoSubReader(
            broker.port, 1, seqs.chunk, (f"{PREFIX}/probe", "x"), seqs.probed
        )
        try:
            return soak(args, tmp, frames, seqs, metrics_port)
        finally:
            reader.close()


def soak(args: argparse.Namespace, tmp: Path, frames: int, seqs: Seqs, metrics_port: int) -> int:
    produced_goal = frames * args.devices
    print(
        f"soak: {args.devices} synthetic devices, {args.rate:g} readings/s, {args.seconds:g} s "
        f"({produced_goal} readings), sampled every {args.sample:g} s",
        flush=True,
    )
    gateway = start_gateway(tmp / "gateway.yaml", tmp / "gateway.log")
    try:
        wait_until("gateway metrics", lambda: _try_scrape(metrics_port) is not None, 30, gateway)
        print("   t (s)  RSS MB  CPU %  fds  outbox  lag ms  produced  delivered", flush=True)
        started = last_t = time.monotonic()
        last_cpu = cpu_seconds(gateway.pid)
        samples: list[tuple[float, float]] = []
        end = started + args.seconds
        while (now := time.monotonic()) < end:
            time.sleep(min(args.sample, end - now))
            now, cpu = time.monotonic(), cpu_seconds(gateway.pid)
            m = _try_scrape(metrics_port) or {}
            rss = rss_mb(gateway.pid)
            samples.append((now - started, rss))
            print(
                f"{now - started:8.0f} {rss:7.1f} {100 * (cpu - last_cpu) / (now - last_t):6.1f} "
                f"{open_fds(gateway.pid):4d} {m.get('gateway_outbox_records', 0):7.0f} "
                f"{1000 * m.get('gateway_event_loop_lag_seconds', 0):7.2f} "
                f"{m.get('gateway_readings_received_total', 0):9.0f} {seqs.delivered:10d}",
                flush=True,
            )
            last_t, last_cpu = now, cpu
        # A busy machine makes the devices late: wait until they have made every frame, then
        # for the last deliveries (what is still missing then is reported as lost).
        with contextlib.suppress(TimeoutError):
            wait_until(
                "the last frames",
                lambda: _produced(metrics_port) >= produced_goal,
                args.seconds,
                gateway,
            )
        produced_at = time.monotonic()
        with contextlib.suppress(TimeoutError):
            wait_until("the last deliveries", lambda: seqs.delivered >= produced_goal, 60, gateway)
        print(f"devices done {produced_at - end:+.0f} s after the nominal end", flush=True)
        peak = peak_rss_mb(gateway.pid)
    finally:
        code = stop(gateway, 30)
    report(samples, settle=args.settle, peak=peak, seqs=seqs, produced=produced_goal, code=code)
    return 0


def _produced(port: int) -> float:
    return (_try_scrape(port) or {}).get("gateway_readings_received_total", 0.0)


def _try_scrape(port: int) -> dict[str, float] | None:
    try:
        return scrape(port)
    except OSError:
        return None


def report(
    samples: list[tuple[float, float]],
    *,
    settle: float,
    peak: float,
    seqs: Seqs,
    produced: int,
    code: int,
) -> None:
    print(
        f"\nproduced {produced}, delivered {seqs.delivered}, lost {seqs.lost()}, "
        f"duplicates {seqs.duplicates}, unexpected {seqs.unexpected}; exit code {code}"
    )
    after = [rss for t, rss in samples if t >= settle]
    if len(after) >= 2:
        first, last = after[0], after[-1]
        print(
            f"RSS after {settle:g} s: {first:.1f} MB; last {last:.1f} MB; "
            f"drift {100 * (last - first) / first:+.1f} %; max after settling "
            f"{max(after):.1f} MB; peak (VmHWM) {peak:.1f} MB"
        )
    else:
        print(f"too short to judge drift (needs samples after {settle:g} s); peak {peak:.1f} MB")


if __name__ == "__main__":
    sys.exit(main())
