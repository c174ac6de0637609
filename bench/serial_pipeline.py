"""Throughput of the serial frame pipeline (framer -> decoder -> Readings), in process.

    .venv/bin/python bench/serial_pipeline.py [--seconds 2]

Feeds a recorded stream of each kind of device (kv lines, NMEA from the GPS simulator, binary
meter frames, CSV lines; and the same streams with 10 % of the frames damaged) to the
`FramePipeline` a `SerialLink` uses, in 4 KB chunks as a fast port delivers them, and reports
frames and readings per second of one core. Everything from the transport's `data_received` to
the outbox's `put` is in this loop, so it bounds what one serial device can sustain.
"""

from __future__ import annotations

import argparse
import random
import struct
import time
from collections.abc import Callable
from typing import Any

from gateway.config import SerialDevice
from gateway.links.pipeline import FramePipeline
from gateway.metrics import Metrics
from gateway.models import Reading
from gateway.simdevices import (
    METER_DECODER,
    METER_FORMAT,
    METER_FRAMING,
    GpsReceiver,
    KvSensor,
    meter_frame,
)


def stream(make: Callable[[random.Random, int], bytes], n: int, damage: float) -> bytes:
    rng = random.Random(1)
    out = bytearray()
    for i in range(n):
        frame = bytearray(make(rng, i))
        if rng.random() < damage:
            frame[rng.randrange(len(frame))] ^= 0x5A
        out += frame
    return bytes(out)


def meter(rng: random.Random, n: int) -> bytes:
    payload = struct.pack(METER_FORMAT, 0x81, 2300 + n % 50, 415, 12345 + n, 955)
    return meter_frame(payload)


def csv_line(rng: random.Random, n: int) -> bytes:
    return f"{20 + rng.random():.2f},{40 + rng.random():.1f},{1013 + n % 7},ok\n".encode()


CASES: list[tuple[str, dict[str, Any], Callable[[random.Random, int], bytes]]] = [
    ("kv lines", {"decoder": "kv"}, KvSensor()),
    ("nmea (GGA+RMC+GSV)", {"decoder": "nmea"}, GpsReceiver()),
    ("binary meter (crc16, struct)", {"framing": METER_FRAMING, "decoder": METER_DECODER}, meter),
    (
        "csv lines",
        {"decoder": {"type": "csv", "columns": ["temp", "hum", "pres", "state"]}},
        csv_line,
    ),
]


def run(config: dict[str, Any], data: bytes, seconds: float) -> tuple[float, float, float]:
    device = SerialDevice.model_validate({"id": "b", "type": "serial", "port": "x", **config})
    readings: list[Reading] = []
    metrics = Metrics()
    pipeline = FramePipeline(device, readings.extend, metrics)
    chunks = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    frames = passes = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for chunk in chunks:
            pipeline.feed(chunk, 0.0)
        passes += 1
        readings.clear()
    elapsed = time.perf_counter() - started
    # Count frames once, by feeding a fresh pipeline.
    counted: list[Reading] = []
    probe = FramePipeline(device, counted.extend, Metrics())
    seen = 0

    def count() -> None:
        nonlocal seen
        seen += 1

    probe.on_frame = count
    for chunk in chunks:
        probe.feed(chunk, 0.0)
    frames = seen * passes
    bad = sum(
        s.value
        for m in metrics.frame_errors.collect()
        for s in m.samples
        if s.name.endswith("_total")
    )
    return frames / elapsed, len(counted) * passes / elapsed, bad / passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per case")
    parser.add_argument("--frames", type=int, default=2000, help="frames per recorded stream")
    args = parser.parse_args()
    print(f"{'stream':34} {'damaged':>8} {'frames/s':>10} {'readings/s':>11} {'errors/pass':>12}")
    for name, config, make in CASES:
        for damage in (0.0, 0.1):
            data = stream(make, args.frames, damage)
            fps, rps, errors = run(config, data, args.seconds)
            print(f"{name:34} {damage:>8.0%} {fps:>10,.0f} {rps:>11,.0f} {errors:>12,.0f}")


if __name__ == "__main__":
    main()
