"""What a sensor stream costs per reading, in process (issue 12).

    .venv/bin/python bench/streams.py [--readings 200000] [--runs 3]

Each chain is fed the same readings (one sensor, a noisy random walk) through
`DeviceStream.feed`, one frame of one reading at a time as a serial line gives them, median of
--runs. For scale, the same run times the framer + kv decoder (`FramePipeline.feed`) on lines
carrying the same readings: the ratio says what a chain adds to what every reading costs anyway.

none        no filters: `stream_for` gives no stream at all; measured: the dict lookup that
            Gateway.submit does to find out
light       offset + round
esphome     filter_out + offset + median(5, send_every 1) + round + or(delta, heartbeat) +
            timeout: the example in docs/streams.md
ble         what `republish_after` stands for: or(delta 0, heartbeat 60)
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from gateway.config import SerialDevice
from gateway.links.pipeline import FramePipeline
from gateway.metrics import Metrics
from gateway.models import Reading
from gateway.streams.device import DeviceStream, ble_default_filters

CHAINS: dict[str, list[dict[str, Any]]] = {
    "light": [{"offset": -0.4}, {"round": 1}],
    "esphome": [
        {"filter_out": 85.0},
        {"offset": -0.4},
        {"median": {"window_size": 5, "send_every": 1}},
        {"round": 1},
        {"or": [{"delta": 0.2}, {"heartbeat": 300}]},
        {"timeout": 600},
    ],
}


def device(filters: list[Any]) -> SerialDevice:
    return SerialDevice.model_validate(
        {"id": "b", "type": "serial", "port": "x", "sensors": {"temp": {"filters": filters}}}
    )


def readings(n: int) -> list[Reading]:
    rng = random.Random(7)
    value, out = 21.0, []
    for i in range(n):
        value += rng.uniform(-0.3, 0.3)
        out.append(Reading("b", "temp", round(value, 2), "°C", 1764074400.0 + i))
    return out


def timed(work: Callable[[], object]) -> float:
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


def feed_all(stream: DeviceStream, items: list[Reading]) -> Callable[[], None]:
    def run() -> None:
        feed = stream.feed
        for i, reading in enumerate(items):
            feed((reading,), float(i))

    return run


def framing(pipeline: FramePipeline, chunks: list[bytes]) -> Callable[[], None]:
    def run() -> None:
        for chunk in chunks:
            pipeline.feed(chunk, 0.0)

    return run


def lookups(items: list[Reading]) -> Callable[[], None]:
    """What a device without filters costs: Gateway.submit finds no stream for it."""
    streams: dict[str, DeviceStream] = {}

    def run() -> None:
        get = streams.get
        for reading in items:
            get(reading.device)

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    items = readings(args.readings)
    data = b"".join(b"temp=%r\n" % r.value for r in items)
    chunks = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    results: dict[str, list[float]] = {}
    for _ in range(args.runs):
        sink: list[Reading] = []
        pipeline = FramePipeline(device([]), sink.extend, Metrics())
        results.setdefault("pipeline", []).append(timed(framing(pipeline, chunks)))
        results.setdefault("none", []).append(timed(lookups(items)))
        for name, filters in CHAINS.items():
            stream = DeviceStream(device(filters), lambda _s, _f: None)
            results.setdefault(name, []).append(timed(feed_all(stream, items)))
        ble = DeviceStream(device(ble_default_filters(60.0, "temp")), lambda _s, _f: None)
        results.setdefault("ble", []).append(timed(feed_all(ble, items)))
    n = args.readings
    base = statistics.median(results["pipeline"]) * 1e6 / n
    print(f"{n} readings, median of {args.runs} runs, microseconds per reading:")
    print(f"  {'pipeline':<10} {base:7.2f}   (framer + kv decoder: what every reading costs)")
    for name in ("none", "light", "esphome", "ble"):
        us = statistics.median(results[name]) * 1e6 / n
        print(f"  {name:<10} {us:7.2f}   ({us / base:4.2f} x the pipeline)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
