"""Zero loss, end to end: the daemon as a subprocess, real mosquitto killed, frozen and black-holed,
a real pty fed at ~1000 lines/s, the daemon itself SIGKILLed. Every reading is accounted for by the
per-device sequence number in its payload."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultproxy import ThreadedFaultProxy
from helpers import (
    Broker,
    Daemon,
    MqttBroker,
    SerialPair,
    Subscriber,
    both_brokers,
    gateway_config,
    serial_device,
    wait_until,
)
from httpprobe import endpoint, sample, scrape

PREFIX = "gateway"
pytestmark = pytest.mark.timeout(90)


class Feeder(threading.Thread):
    """Writes `n=<i>` lines into the pty at about `rate` lines per second."""

    def __init__(self, pair: SerialPair, rate: float, start_at: int = 1) -> None:
        super().__init__(daemon=True)
        self.pair, self.rate = pair, rate
        self.next = start_at
        self._halt = threading.Event()

    def run(self) -> None:
        fd = os.open(self.pair.peer, os.O_WRONLY | os.O_NOCTTY)
        try:
            batch, began = 10, time.monotonic()
            while not self._halt.is_set():
                lines = "".join(f"n={self.next + k}\n" for k in range(batch))
                os.write(fd, lines.encode())
                self.next += batch
                due = began + (self.next - 1) / self.rate
                if (pause := due - time.monotonic()) > 0:
                    time.sleep(pause)
        finally:
            os.close(fd)

    def stop(self) -> int:
        """Stop writing; returns the last number written."""
        self._halt.set()
        self.join(5)
        return self.next - 1


def values(sub: Subscriber, device: str = "boiler", sensor: str = "n") -> list[int]:
    return [m.value for m in sub.on_topic(f"{PREFIX}/{device}/{sensor}")]


def payload_seqs(sub: Subscriber, device: str = "boiler", sensor: str = "n") -> list[int]:
    out = []
    for m in sub.on_topic(f"{PREFIX}/{device}/{sensor}"):
        data = m.data
        assert data is not None
        out.append(data["seq"])
    return out


def wait_all_values(sub: Subscriber, last: int, timeout: float = 30.0) -> None:
    try:
        wait_until(
            lambda: set(values(sub)) >= set(range(1, last + 1)) or None,
            timeout,
            f"every reading 1..{last} to arrive",
        )
    except TimeoutError:
        missing = sorted(set(range(1, last + 1)) - set(values(sub)))
        raise AssertionError(f"{len(missing)} missing: {missing[:20]}...{missing[-5:]}") from None


def config(broker: MqttBroker, pair: SerialPair, **gateway: Any) -> dict[str, Any]:
    cfg = gateway_config(broker, [serial_device("boiler", pair)])
    cfg["log"] = {"level": "INFO"}
    cfg["mqtt"].update(keepalive=2, publish_timeout=3.0)
    cfg.update(gateway)
    return cfg


def wait_ready(daemon: Daemon) -> None:
    """The session is connected and the port open: readings written now are read."""
    daemon.wait_log("mqtt: connected")
    daemon.wait_log("opened ")


@both_brokers
def test_a_burst_as_fast_as_the_port_takes_it_is_delivered_in_order(
    broker: MqttBroker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    """Thousands of readings at once: the window fills, acknowledgements pile up past the
    outbox's lazy-delete threshold, and every reading still arrives, in order, exactly once."""
    daemon.start(config(broker, serial_pair))
    wait_ready(daemon)
    count = 12_000
    fd = os.open(serial_pair.peer, os.O_WRONLY | os.O_NOCTTY)
    try:
        for start in range(1, count + 1, 500):
            os.write(fd, "".join(f"n={i}\n" for i in range(start, start + 500)).encode())
    finally:
        os.close(fd)
    wait_all_values(subscriber, count)
    assert values(subscriber) == list(range(1, count + 1))
    assert payload_seqs(subscriber) == list(range(1, count + 1))


@both_brokers
def test_broker_killed_while_readings_flow_loses_nothing(
    broker: MqttBroker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    daemon.start(config(broker, serial_pair))
    wait_ready(daemon)
    feeder = Feeder(serial_pair, rate=1000)
    feeder.start()
    try:
        wait_until(lambda: len(values(subscriber)) > 500 or None, 10, "readings to flow")
        broker.kill()
        seen_at_kill = max(values(subscriber))
        time.sleep(4.0)  # the broker is away for 4 s while ~4000 lines arrive
        broker.start()
        daemon.wait_log("mqtt: connected", count=2, timeout=15)
        time.sleep(1.0)
    finally:
        last = feeder.stop()
    # The gateway's guarantee ends at the broker's PUBACK. A broker SIGKILLed right after it
    # acknowledged a message, before handing it to the subscriber or saving it, loses that
    # message: no publisher can help it. Those can only be readings published in the last
    # moment before the kill (at most a window's worth); everything read during the outage and
    # after, and everything before that moment, must arrive. (The frozen-broker and black-hole
    # tests below check the requeue path strictly: there nothing is acknowledged.)
    after_kill = set(range(seen_at_kill + 200, last + 1))
    wait_until(lambda: set(values(subscriber)) >= after_kill or None, 30, "the outage's readings")
    with contextlib.suppress(AssertionError):  # give stragglers a moment, then count
        wait_all_values(subscriber, last, timeout=3)
    got = values(subscriber)
    missing = sorted(set(range(1, last + 1)) - set(got))
    dupes = sum(c - 1 for c in Counter(got).values() if c > 1)
    print(
        f"{last} readings written, {len(got)} received, {dupes} duplicates, "
        f"{len(missing)} lost by the broker at the kill: {missing}"
    )
    assert all(seen_at_kill < n < seen_at_kill + 200 for n in missing), missing
    # At 1000/s only a few publishes are in flight at once; 64 bounds what one kill can take.
    assert len(missing) <= 64
    # Duplicates are what at-least-once allows; the payload's seq lets consumers drop them.
    seqs = payload_seqs(subscriber)
    assert len(set(seqs)) == last - len(missing)
    by_seq: dict[int, int] = {}
    for m in subscriber.on_topic(f"{PREFIX}/boiler/n"):
        data = m.data
        assert data is not None
        by_seq.setdefault(data["seq"], data["value"])
        assert by_seq[data["seq"]] == data["value"]  # a repeat is the same reading
    assert daemon.alive


def test_gateway_sigkilled_then_restarted_delivers_every_committed_reading(
    broker: Broker,
    serial_pair: SerialPair,
    subscriber: Subscriber,
    daemon: Daemon,
    tmp_path: Path,
) -> None:
    daemon.start(config(broker, serial_pair))
    wait_ready(daemon)
    broker.freeze()  # nothing gets acknowledged: readings pile up in the outbox
    try:
        serial_pair.write("".join(f"n={i}\n" for i in range(1, 501)).encode())
        db = tmp_path / "state" / "outbox.sqlite3"

        def committed() -> int:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])

        wait_until(lambda: committed() >= 500 or None, 10, "500 readings committed")
        daemon.signal(9)
        daemon.wait(5)
    finally:
        broker.thaw()
    assert daemon.returncode == -9
    restarted = Daemon(tmp_path)
    restarted.start()
    try:
        wait_all_values(subscriber, 500)
        assert set(values(subscriber)) == set(range(1, 501))
        # Replayed readings keep the time they were read and their sequence numbers.
        first = [m.data for m in subscriber.on_topic(f"{PREFIX}/boiler/n") if m.value == 1]
        assert first
        assert first[0] is not None
        assert first[0]["seq"] == 1
        assert "outbox" in restarted.log()
    finally:
        restarted.close()


def test_frozen_broker_is_detected_and_delivery_resumes(
    broker: Broker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    daemon.start(config(broker, serial_pair))
    wait_ready(daemon)
    broker.freeze()
    frozen_at = time.monotonic()
    try:
        serial_pair.write(b"n=1\n")
        daemon.wait_log("link mqtt: up -> backing_off", timeout=10)
        detected = time.monotonic() - frozen_at
        serial_pair.write(b"n=2\n")
    finally:
        broker.thaw()
    print(f"frozen broker detected after {detected:.2f}s (keepalive 2 s, publish_timeout 3 s)")
    assert detected < 3.0 * 1.5 + 1.0  # within ~1.5x the deadline, plus the watchdog's tick
    wait_all_values(subscriber, 2, timeout=20)
    assert daemon.alive


@pytest.fixture
def proxy(broker: Broker) -> Iterator[ThreadedFaultProxy]:
    p = ThreadedFaultProxy(broker.host, broker.port)
    try:
        yield p
    finally:
        p.close()


def test_black_hole_path_is_detected_and_delivery_resumes(
    broker: Broker,
    proxy: ThreadedFaultProxy,
    serial_pair: SerialPair,
    subscriber: Subscriber,
    daemon: Daemon,
) -> None:
    cfg = config(broker, serial_pair)
    cfg["mqtt"]["port"] = proxy.port
    daemon.start(cfg)
    wait_ready(daemon)
    proxy.blackhole = True  # bytes vanish both ways; TCP stays "up"
    began = time.monotonic()
    serial_pair.write(b"n=1\n")
    daemon.wait_log("link mqtt: up -> backing_off", timeout=10)
    detected = time.monotonic() - began
    print(f"black hole detected after {detected:.2f}s")
    assert detected < 3.0 * 1.5 + 1.0
    proxy.blackhole = False
    proxy.reset_all()  # the held connection dies; the next one goes through
    wait_all_values(subscriber, 1, timeout=20)


def test_full_outbox_drops_oldest_and_keeps_running(
    broker: Broker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    cfg = config(broker, serial_pair, outbox={"max_bytes": 20_000})
    daemon.start(cfg)
    wait_ready(daemon)
    broker.kill()
    serial_pair.write("".join(f"n={i}\n" for i in range(1, 1001)).encode())
    daemon.wait_log("dropped", timeout=10)
    assert "(outbox_full)" in daemon.log()
    broker.start()
    wait_until(lambda: 1000 in values(subscriber) or None, 20, "the newest reading")
    got = set(values(subscriber))
    assert 1 not in got  # the oldest were dropped
    assert daemon.alive


def test_disk_full_keeps_delivering(
    broker: Broker,
    serial_pair: SerialPair,
    subscriber: Subscriber,
    daemon: Daemon,
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    state = tmp_path / "small"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(state)], check=True)
    try:
        cfg = config(broker, serial_pair)
        cfg["gateway"]["state_dir"] = str(state)
        cfg["outbox"] = {"retry_interval": 0.2}
        daemon.start(cfg)
        wait_ready(daemon)
        fd = os.open(state / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"x" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        broker.kill()  # readings pile up: the outbox must write, and cannot
        serial_pair.write("".join(f"n={i}\n" for i in range(1, 3001)).encode())
        daemon.wait_log("keeping readings in memory", timeout=10)
        broker.start()
        wait_all_values(subscriber, 3000)
        assert daemon.alive
    finally:
        daemon.close()
        subprocess.run(["umount", "-l", str(state)], check=False)


def test_replayed_payload_keeps_timestamp_and_sequence(
    broker: Broker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    daemon.start(config(broker, serial_pair))
    wait_ready(daemon)
    broker.kill()
    written = time.time()
    serial_pair.write(b"n=1\nn=2\n")
    time.sleep(1.5)
    broker.start()
    wait_all_values(subscriber, 2, timeout=20)
    for message in subscriber.on_topic(f"{PREFIX}/boiler/n")[:2]:
        data = json.loads(message.payload)
        assert abs(data["ts"] - written) < 1.0  # when it was read, not when it was sent
        assert data["seq"] == data["value"]


# -- batched messages (`batch: {max_items, max_delay}`) ------------------------------------------
BATCH_TOPIC = f"{PREFIX}/boiler/batch"


def batch_config(
    broker: MqttBroker, pair: SerialPair, max_items: int, max_delay: float
) -> dict[str, Any]:
    cfg = config(broker, pair)
    cfg["devices"][0]["batch"] = {"max_items": max_items, "max_delay": max_delay}
    return cfg


def batched(sub: Subscriber) -> list[dict[str, Any]]:
    """Every reading carried by the batch messages, in arrival order."""
    items: list[dict[str, Any]] = []
    for m in sub.on_topic(BATCH_TOPIC):
        array = json.loads(m.payload)
        assert isinstance(array, list)
        items.extend(array)
    return items


def batched_values(sub: Subscriber) -> list[int]:
    return [item["value"] for item in batched(sub)]


@both_brokers
def test_a_batched_burst_arrives_complete_in_order_once_in_few_messages(
    broker: MqttBroker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    daemon.start(batch_config(broker, serial_pair, max_items=100, max_delay=0.05))
    wait_ready(daemon)
    count = 5000
    serial_pair.write("".join(f"n={i}\n" for i in range(1, count + 1)).encode())
    wait_until(lambda: len(batched(subscriber)) >= count or None, 30, f"{count} readings")
    items = batched(subscriber)
    assert [item["value"] for item in items] == list(range(1, count + 1))
    assert [item["seq"] for item in items] == list(range(1, count + 1))
    assert all(
        item["sensor"] == "n" and set(item) == {"sensor", "value", "unit", "ts", "seq"}
        for item in items
    )
    messages = subscriber.on_topic(BATCH_TOPIC)
    assert all(len(json.loads(m.payload)) <= 100 for m in messages)
    assert len(messages) < count / 10  # batched, not one message per reading
    assert not subscriber.on_topic(f"{PREFIX}/boiler/n")  # nothing went out one by one


def test_a_lone_batched_reading_goes_after_max_delay(
    broker: Broker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    daemon.start(batch_config(broker, serial_pair, max_items=100, max_delay=0.2))
    wait_ready(daemon)
    serial_pair.write(b"n=1\n")
    message = subscriber.wait_for(lambda m: m.topic == BATCH_TOPIC, timeout=10)
    (item,) = json.loads(message.payload)
    assert item["value"] == 1
    assert item["seq"] == 1


@both_brokers
def test_broker_killed_while_batches_flow_loses_nothing(
    broker: MqttBroker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    """As the one-by-one test above: only what the broker acknowledged in the moment of its
    kill may be lost by the broker; every message that failed went back whole, in order."""
    daemon.start(batch_config(broker, serial_pair, max_items=50, max_delay=0.02))
    wait_ready(daemon)
    feeder = Feeder(serial_pair, rate=1000)
    feeder.start()
    try:
        wait_until(lambda: len(batched(subscriber)) > 500 or None, 10, "batches to flow")
        broker.kill()
        seen_at_kill = max(batched_values(subscriber))
        time.sleep(3.0)
        broker.start()
        daemon.wait_log("mqtt: connected", count=2, timeout=15)
        time.sleep(1.0)
    finally:
        last = feeder.stop()
    after_kill = set(range(seen_at_kill + 400, last + 1))
    try:
        wait_until(
            lambda: set(batched_values(subscriber)) >= after_kill or None,
            30,
            "the outage's readings",
        )
    except TimeoutError as exc:
        # Seen once in CI (RabbitMQ, restart 11.6 s) and not since: say whether the gateway
        # still holds them (a stalled publisher) or had them acknowledged (the broker lost them).
        samples = scrape(endpoint(daemon))
        published = sample(samples, "gateway_readings_published_total", device="boiler")
        held = sample(samples, "gateway_outbox_records")
        missing = sorted(after_kill - set(batched_values(subscriber)))
        raise AssertionError(
            f"{len(missing)} readings after the kill missing ({missing[:5]}...{missing[-5:]}); "
            f"gateway: {published} published (acknowledged), {held} still in its outbox, "
            f"of {last} written"
        ) from exc
    with contextlib.suppress(TimeoutError):
        wait_until(
            lambda: set(batched_values(subscriber)) >= set(range(1, last + 1)) or None,
            3,
            "stragglers",
        )
    got = batched_values(subscriber)
    missing = sorted(set(range(1, last + 1)) - set(got))
    print(f"{last} readings written, {len(got)} received, {len(missing)} lost at the kill")
    # A kill can take what the broker acknowledged just before it: a few windows' worth of
    # readings right after `seen_at_kill`, nothing else.
    assert all(seen_at_kill < n < seen_at_kill + 400 for n in missing), missing
    by_seq: dict[int, int] = {}
    for item in batched(subscriber):
        by_seq.setdefault(item["seq"], item["value"])
        assert by_seq[item["seq"]] == item["value"]  # a repeat is the same reading
    assert daemon.alive
