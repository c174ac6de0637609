"""What a large backlog costs the event loop: the outbox's periodic work with N rows on disk.

Fills an outbox (a real SQLite file) with --rows readings, as a long outage at the default
50 MB bound leaves it (~400k), then times, on the event loop, the calls that used to scan the
table: the max_age check (once a second) and the age gauge (every scrape), plus a put + commit.
Issue 11 measured 54 ms and 48 ms for the first two at 400k rows before the fix.

    .venv/bin/python bench/outbox_stalls.py [--rows 400000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from gateway.config import OutboxConfig
from gateway.metrics import Metrics
from gateway.models import Reading
from gateway.mqtt.topics import reading_fields
from gateway.outbox import Outbox

FIELDS = reading_fields(Reading("dev0", "temp", 21.5, "°C", 1_800_000_000.0))


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def measure(rows: int, directory: Path) -> dict[str, list[float]]:
    clock = Clock()
    cfg = OutboxConfig.model_validate({"max_bytes": 10**9, "memory_records": 1000})
    box = Outbox(directory / "o.sqlite3", cfg, Metrics(), clock=clock)
    box.open()
    for i in range(rows):
        box.put(f"dev{i % 10}", "gw/dev/temp", "temp", FIELDS, 1, clock.now)
        if i % 5000 == 0:
            await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    times: dict[str, list[float]] = {"max_age check": [], "age gauge": [], "put + commit": []}
    for _ in range(20):
        clock.now += 1.5
        t = time.perf_counter()
        box.writer.bounds.expired(box.writer.deletes)
        times["max_age check"].append(time.perf_counter() - t)
        t = time.perf_counter()
        box.oldest_age()
        times["age gauge"].append(time.perf_counter() - t)
        box.writer.bounds._first_ts = (0, None)  # (measure the lookup, not its cache)
        t = time.perf_counter()
        box.put("dev0", "gw/dev/temp", "temp", FIELDS, 1, clock.now)
        box.flush()
        times["put + commit"].append(time.perf_counter() - t)
    print(f"{len(box)} readings in the outbox ({box.bytes / 1e6:.0f} MB)")
    box.close()
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rows", type=int, default=400_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stalls-", dir="/var/tmp") as tmp:
        times = asyncio.run(measure(args.rows, Path(tmp)))
    for name, values in times.items():
        print(
            f"{name:<14} median {statistics.median(values) * 1e3:7.3f} ms, "
            f"max {max(values) * 1e3:7.3f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
