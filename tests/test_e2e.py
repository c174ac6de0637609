"""End to end: `python -m gateway run` as a subprocess against a real mosquitto and real ptys.

Each test drives real faults (SIGKILL of the broker, socat unplugged, signals to the daemon) and
asserts what a user would observe: messages on the broker, exit codes, open file descriptors.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    Broker,
    Daemon,
    SerialPair,
    SerialPairFactory,
    Subscriber,
    SubscriberFactory,
    gateway_config,
    is_reading,
    run_cli,
    send_until_seen,
    serial_device,
    unique,
    wait_consumed,
)

pytestmark = pytest.mark.timeout(40)

PREFIX = "gateway"
GATEWAY_ID = "gw1"
STATUS = f"{PREFIX}/{GATEWAY_ID}/status"
SENSORS = {"temp": {"unit": "°C"}}
SHUTDOWN_SLACK_INSIDE = 0.5  # seconds beyond gateway.shutdown_timeout, by the daemon's log
SHUTDOWN_SLACK_OUTSIDE = 2.0  # ... as the parent process sees it (process start/exit included)


def boiler_config(broker: Broker, pair: SerialPair, **kwargs: Any) -> dict[str, Any]:
    return gateway_config(
        broker, [serial_device("boiler", pair, SENSORS)], gateway_id=GATEWAY_ID, **kwargs
    )


def start_flowing(daemon: Daemon, config: dict[str, Any], pair: SerialPair, sub: Subscriber) -> int:
    """Start the daemon and wait until a reading makes it through to the subscriber."""
    daemon.start(config)
    daemon.wait_log("mqtt: connected")
    return send_until_seen(pair, sub, PREFIX, "boiler")


def sigterm_and_expect_exit_0_in_time(daemon: Daemon, shutdown_timeout: float) -> None:
    """SIGTERM; the daemon must exit 0 within `gateway.shutdown_timeout`. Judged twice: by the
    daemon's own log (tight: its shutdown logic) and from outside (with slack for signal
    delivery and interpreter teardown on a busy machine)."""
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    code = daemon.wait(timeout=shutdown_timeout + 10)
    elapsed = time.monotonic() - started
    assert code == 0
    inside = daemon.log_time("gateway stopped") - daemon.log_time("SIGTERM received")
    assert inside < shutdown_timeout + SHUTDOWN_SLACK_INSIDE
    assert elapsed < shutdown_timeout + SHUTDOWN_SLACK_OUTSIDE


def test_readings_are_published_with_units_and_garbage_is_skipped(
    broker: Broker,
    serial_pair: SerialPair,
    subscriber: Subscriber,
    make_subscriber: SubscriberFactory,
    daemon: Daemon,
) -> None:
    start_flowing(daemon, boiler_config(broker, serial_pair), serial_pair, subscriber)

    serial_pair.write(b"temp=21.5,hum=40\n")
    temp = subscriber.wait_value(f"{PREFIX}/boiler/temp", 21.5)
    hum = subscriber.wait_value(f"{PREFIX}/boiler/hum", 40)
    assert temp.data is not None
    assert hum.data is not None
    assert temp.data["unit"] == "°C"
    assert hum.data["unit"] is None  # no sensors: entry for hum
    assert isinstance(hum.data["value"], int)
    assert temp.data["ts"] == pytest.approx(time.time(), abs=30)
    assert temp.qos == 1

    # Garbage in between: skipped and counted, and the next good line still arrives.
    serial_pair.write(b"\xff\xfe garbage\nno equals sign\ntemp=22.25\n")
    subscriber.wait_value(f"{PREFIX}/boiler/temp", 22.25)
    log = daemon.log()
    assert "skipped 1 frame(s) (decode): not UTF-8 text" in log
    assert "skipped 1 frame(s) (decode): not a key=value pair" in log
    topics = {m.topic for m in subscriber.messages}
    sensors = ("seq", "temp", "hum", "availability")
    assert topics == {STATUS, *(f"{PREFIX}/boiler/{s}" for s in sensors)}
    assert daemon.alive

    # A newcomer gets the status as a retained message.
    late = make_subscriber(STATUS)
    status = late.wait_for(lambda m: m.topic == STATUS, what="the retained status")
    assert (status.text, status.retain) == ("online", True)


def test_broker_killed_and_restarted_publishing_resumes_and_nothing_is_lost(
    broker: Broker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    start_flowing(daemon, boiler_config(broker, serial_pair), serial_pair, subscriber)
    pid = daemon.pid

    broker.kill()
    daemon.wait_log("link mqtt down")
    marks = [unique() for _ in range(5)]
    for mark in marks:
        serial_pair.write(f"queued={mark}\n".encode())
    wait_consumed(daemon, serial_pair)  # the daemon holds them (in memory); the broker is down
    daemon.wait_log("link mqtt down: cannot connect")  # and it has retried in vain meanwhile

    broker.start()  # same port
    topic = f"{PREFIX}/boiler/queued"
    subscriber.wait_all(
        [is_reading(topic, mark) for mark in marks],
        timeout=20,
        what=f"the {len(marks)} readings queued while the broker was down",
    )
    delivered = [m.value for m in subscriber.on_topic(topic)]
    assert sorted(set(delivered), key=delivered.index) == marks  # in the order they were read

    send_until_seen(serial_pair, subscriber, PREFIX, "boiler")  # and new readings flow
    assert daemon.alive
    assert daemon.pid == pid
    assert daemon.log_count("mqtt: connected") == 2


def test_unplug_replug_cycles_resume_without_leaking_fds(
    broker: Broker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    start_flowing(daemon, boiler_config(broker, serial_pair), serial_pair, subscriber)
    baseline = daemon.fds()
    assert daemon.pty_fds() == [serial_pair.realpath]
    opened = f"opened {serial_pair.dev}"

    for cycle in range(1, 6):
        serial_pair.unplug()
        daemon.wait_log("went away", count=cycle)
        assert daemon.pty_fds() == [], f"cycle {cycle}: the unplugged pty is still open"
        serial_pair.plug()
        daemon.wait_log(opened, count=cycle + 1)
        send_until_seen(serial_pair, subscriber, PREFIX, "boiler")
        assert daemon.pty_fds() == [serial_pair.realpath], f"cycle {cycle}"

    after = daemon.fds()
    assert len(after) == len(baseline), (baseline, after)
    assert daemon.pty_fds() == [serial_pair.realpath]
    assert daemon.alive


def test_sigterm_exits_zero_in_time_and_leaves_offline_retained(
    broker: Broker,
    serial_pair: SerialPair,
    subscriber: Subscriber,
    make_subscriber: SubscriberFactory,
    daemon: Daemon,
) -> None:
    shutdown_timeout = 2.0
    config = boiler_config(broker, serial_pair, shutdown_timeout=shutdown_timeout)
    start_flowing(daemon, config, serial_pair, subscriber)
    pty = serial_pair.realpath
    assert pty in daemon.fds().values()

    last = unique()
    serial_pair.write(f"last={last}\n".encode())
    wait_consumed(daemon, serial_pair)  # read by the daemon: it must be published before exiting

    sigterm_and_expect_exit_0_in_time(daemon, shutdown_timeout)

    subscriber.wait_value(f"{PREFIX}/boiler/last", last, timeout=2)
    status = make_subscriber(STATUS).wait_for(lambda m: m.topic == STATUS, what="status")
    assert (status.text, status.retain) == ("offline", True)
    assert "gateway stopped" in daemon.log()
    assert "not published before shutdown" not in daemon.log()


@pytest.mark.parametrize("shutdown_timeout", [1.0, 3.0])
def test_sigterm_with_a_frozen_broker_still_exits_within_the_shutdown_timeout(
    broker: Broker,
    serial_pair: SerialPair,
    make_subscriber: SubscriberFactory,
    daemon: Daemon,
    shutdown_timeout: float,
) -> None:
    config = boiler_config(broker, serial_pair, shutdown_timeout=shutdown_timeout)
    start_flowing(daemon, config, serial_pair, make_subscriber("#"))

    broker.freeze()  # connections stay up, nothing is acknowledged any more
    serial_pair.write(b"temp=30\n")
    wait_consumed(daemon, serial_pair)

    sigterm_and_expect_exit_0_in_time(daemon, shutdown_timeout)
    assert "not published before shutdown" in daemon.log()

    broker.thaw()  # the broker then sees the dropped connection: the will says offline
    status = make_subscriber(STATUS).wait_for(
        lambda m: m.topic == STATUS and m.text == "offline", what="status offline"
    )
    assert status.retain


def test_invalid_config_exits_2_and_points_at_file_line_col(tmp_path: Path, daemon: Daemon) -> None:
    text = (
        "gateway:\n"
        "  id: gw1\n"
        "mqtt:\n"
        "  port: 1\n"
        "devices:\n"
        "  - id: boiler\n"
        "    type: serial\n"
        "    port: /dev/null\n"
        "  - id: attic\n"
        "    type: serial\n"
        "    port: /dev/null\n"
        "    baudrate: fast\n"
    )
    conf = daemon.write_config(text)
    daemon.start()
    assert daemon.wait(timeout=20) == 2
    log = daemon.log()
    assert f"{conf}:12:5: devices[1].baudrate: Input should be a valid integer" in log
    assert "Traceback" not in log

    check = run_cli("check-config", str(conf))
    assert check.returncode == 2
    assert f"{conf}:12:5: devices[1].baudrate: Input should be a valid integer" in check.stderr

    good = tmp_path / "good.yaml"
    good.write_text(text.replace("baudrate: fast", "baudrate: 115200"))
    check = run_cli("check-config", str(good))
    assert check.returncode == 0, check.stderr
    assert "ok (2 device(s))" in check.stdout


def test_sighup_rejects_invalid_config_and_applies_a_new_device(
    broker: Broker,
    serial_pair: SerialPair,
    make_serial_pair: SerialPairFactory,
    subscriber: Subscriber,
    daemon: Daemon,
) -> None:
    config = boiler_config(broker, serial_pair)
    start_flowing(daemon, config, serial_pair, subscriber)
    pid = daemon.pid

    # Invalid: rejected with a located error, the daemon keeps running on the old config.
    broken = dict(config, devices=[dict(config["devices"][0], baudrate="fast")])
    daemon.write_config(broken)
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("reload rejected")
    located = rf"{re.escape(str(daemon.config_path))}:\d+:\d+: devices\[0\]\.baudrate: "
    assert re.search(located + "Input should be a valid integer", daemon.log())
    send_until_seen(serial_pair, subscriber, PREFIX, "boiler")
    assert daemon.alive

    # Valid, with a second device on a second pty: only the new link starts.
    attic = make_serial_pair("GW1")
    added = dict(config, devices=[*config["devices"], serial_device("attic", attic)])
    daemon.write_config(added)
    daemon.signal(signal.SIGHUP)
    daemon.wait_log(f"opened {attic.dev}")
    send_until_seen(attic, subscriber, PREFIX, "attic")
    send_until_seen(serial_pair, subscriber, PREFIX, "boiler")
    attic.write(b"temp=5.5\n")
    subscriber.wait_value(f"{PREFIX}/attic/temp", 5.5)

    assert daemon.pid == pid
    assert daemon.alive
    assert daemon.log_count(f"opened {serial_pair.dev}") == 1  # the boiler link was left alone
    assert daemon.log_count("mqtt: connected") == 1  # and so was the MQTT session
    assert sorted(daemon.pty_fds()) == sorted([serial_pair.realpath, attic.realpath])
