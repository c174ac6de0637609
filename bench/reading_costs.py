"""Where one reading's CPU goes on the batched path, stage by stage, in process (issue 10).

    .venv/bin/python bench/reading_costs.py [--readings 200000] [--batch 100] [--runs 3]

The same stages the gateway runs for a device with `batch: {max_items: N}`, each timed alone on
the real code with the bench's lines (`t=<stamp>`: one reading per line), median of --runs:

pipeline   framer + kv decoder + Readings (FramePipeline.feed, 4 KB chunks)
encode     the topic and fields of each reading (what the encoder does before the outbox)
outbox     Outbox.put + the commit of each loop turn's readings (a real SQLite file, WAL)
take       Outbox.take_nowait of the committed readings, as the publisher does
batch      each message's payload at take time (topics.render / render_batch), N readings each
ack        Outbox.ack of each message's records + the deletes' commit
aiomqtt    GatewayClient.publish_nowait of one message per N readings + its PUBACK (real
           mosquitto on loopback; per reading = per message / N)

The sum is a ceiling on one core: readings/s = 1e6 / (sum of us per reading). The MQTT part
shrinks with N; what is left is what every reading costs before it is a message.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchlib import Broker

from gateway.config import OutboxConfig, SerialDevice
from gateway.links.pipeline import FramePipeline
from gateway.metrics import Metrics
from gateway.models import Reading
from gateway.mqtt.aioclient import GatewayClient
from gateway.mqtt.topics import reading_fields, reading_topic, render, render_batch
from gateway.outbox import Outbox, Record

TURN = 500  # readings committed per loop turn (a burst from the port)


def lines(n: int) -> bytes:
    return b"".join(b"t=%d.%06d\n" % (1764074400 + i // 1000, i % 1000000) for i in range(n))


def timed(work: Callable[[], object]) -> float:
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


def stage_pipeline(data: bytes) -> tuple[float, list[Reading]]:
    device = SerialDevice.model_validate({"id": "dev", "type": "serial", "port": "x"})
    readings: list[Reading] = []
    pipeline = FramePipeline(device, readings.extend, Metrics())
    chunks = [data[i : i + 4096] for i in range(0, len(data), 4096)]

    def feed() -> None:
        for chunk in chunks:
            pipeline.feed(chunk, time.time())

    return timed(feed), readings


async def stage_outbox(readings: list[Reading], n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        box = Outbox(
            Path(tmp) / "outbox.sqlite3", OutboxConfig(memory_records=len(readings)), Metrics()
        )
        box.open()
        try:
            topics: list[tuple[str, bytes]] = []
            encode = timed(
                lambda: topics.extend(
                    (reading_topic("bench", r), reading_fields(r)) for r in readings
                )
            )

            def put() -> None:
                for i in range(0, len(readings), TURN):
                    for r, (topic, fields) in zip(
                        readings[i : i + TURN], topics[i : i + TURN], strict=True
                    ):
                        box.put(r.device, topic, r.sensor, fields, 1, r.ts)
                    box.flush()

            outbox = timed(put)
            taken: list[Record] = []
            take = timed(lambda: taken.extend(box.take_nowait(len(readings))))
            messages = [taken[i : i + n] for i in range(0, len(taken), n)]
            if n == 1:  # the payloads rendered at take time
                batch = timed(lambda: [render(m[0]) for m in messages])
            else:
                batch = timed(lambda: [render_batch(m) for m in messages])

            def ack() -> None:
                for message in messages:
                    box.ack(message)
                box.flush(deletes=True)

            acked = timed(ack)
        finally:
            box.close()
    return {"encode": encode, "outbox": outbox, "take": take, "batch": batch, "ack": acked}


async def stage_aiomqtt(port: int, messages: int, payload: bytes) -> float:
    done = asyncio.Event()
    count = 0

    def on_acks(acks: list[tuple[int, int]]) -> None:
        nonlocal count
        count += len(acks)
        if count >= messages:
            done.set()

    client = GatewayClient("127.0.0.1", port, on_acks=on_acks, connect_timeout=5.0)
    async with client:
        began = time.process_time()
        window = 256
        sent = 0
        while sent < messages:
            while sent - count < window and sent < messages:
                client.publish_nowait("bench/dev/batch", payload, 1)
                sent += 1
            await asyncio.sleep(0)
        await asyncio.wait_for(done.wait(), 60)
        return time.process_time() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=100, help="readings per message")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    n, count = args.batch, args.readings
    data = lines(count)
    item = (
        b'{"sensor": "t", "value": 1764074400.123456, "unit": null, "ts": 1764074400.1, "seq": 1}'
    )
    payload = b"[" + b", ".join([item] * n) + b"]"
    messages = max(1, count // n)
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp))
        broker.start()
        try:
            for _ in range(args.runs):
                seconds, readings = stage_pipeline(data)
                results.setdefault("pipeline", []).append(seconds)
                for name, value in asyncio.run(stage_outbox(readings, n)).items():
                    results.setdefault(name, []).append(value)
                cpu = asyncio.run(stage_aiomqtt(broker.port, messages, payload))
                results.setdefault("aiomqtt", []).append(cpu * count / (messages * n))
        finally:
            broker.close()
    total = 0.0
    print(f"{count:,} readings, {n} per message, median of {args.runs} run(s), us per reading:")
    for name, values in results.items():
        us = statistics.median(values) / count * 1e6
        total += us
        print(f"  {name:<9} {us:7.2f}")
    print(f"  {'sum':<9} {total:7.2f}  -> at most {1e6 / total:,.0f} readings/s on one core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
