"""Serial devices as they are in the field, end to end: `gateway run` as a subprocess, a real
mosquitto, socat pty pairs and `gateway simulate serial` playing the devices.

- a device matched by its by-id name follows it to a new tty across five unplug/replug cycles
  and leaks no fd;
- the NMEA GPS and the polled binary meter of the simulator arrive as readings with units;
- a port another program holds is reported with that program, and opened once it lets go;
- MQTT commands write what they name and nothing more: `set/raw` only where a device opts in,
  no payload that carries a second command.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import serial
from helpers import (
    FAST_BACKOFF,
    Broker,
    Daemon,
    Message,
    PeerReader,
    SerialPair,
    SerialPairFactory,
    Subscriber,
    gateway_config,
    send_until_seen,
    serial_device,
    wait_path,
    wait_until,
)
from httpprobe import endpoint, get, sample, scrape

from gateway.simdevices import METER_DECODER, METER_FRAMING, METER_QUERY

pytestmark = pytest.mark.timeout(40)

PREFIX = "gateway"


def repoint(link: Path, target: str) -> None:
    """Replace a symlink atomically, as udev does when a device comes back."""
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target)
    tmp.replace(link)


def test_device_matched_by_id_follows_it_to_new_ttys_without_leaking_fds(
    tmp_path: Path,
    broker: Broker,
    make_serial_pair: SerialPairFactory,
    subscriber: Subscriber,
    daemon: Daemon,
) -> None:
    by_id = tmp_path / "by-id"  # a by-id directory of our own: /dev/serial/by-id in the field
    by_id.mkdir()
    name = by_id / "usb-Acme_Sensor_42-if00-port0"
    pairs = [make_serial_pair("A"), make_serial_pair("B")]
    pairs[1].unplug()
    repoint(name, pairs[0].dev)
    device = {
        "id": "sensor",
        "type": "serial",
        "match": {"by_id": "usb-Acme_*_42-*", "by_id_dir": str(by_id)},
        "backoff": dict(FAST_BACKOFF),
    }
    daemon.start(gateway_config(broker, [device]))
    daemon.wait_log("mqtt: connected")
    send_until_seen(pairs[0], subscriber, PREFIX, "sensor")
    baseline = daemon.fds()
    assert daemon.pty_fds() == [pairs[0].realpath]

    for cycle in range(1, 6):
        old, new = pairs[(cycle - 1) % 2], pairs[cycle % 2]
        new.plug()  # while the old tty still exists: the device comes back under a new name
        old_tty = old.realpath
        old.unplug()
        daemon.wait_log("went away", count=cycle)
        assert daemon.pty_fds() == [], f"cycle {cycle}: the unplugged pty is still open"
        repoint(name, new.dev)
        assert new.realpath != old_tty
        daemon.wait_log(f"opened {new.realpath} (match by_id=usb-Acme_*_42-*: ")
        send_until_seen(new, subscriber, PREFIX, "sensor")
        assert daemon.pty_fds() == [new.realpath], f"cycle {cycle}"

    assert len(daemon.fds()) == len(baseline), (baseline, daemon.fds())
    assert daemon.alive


@pytest.fixture
def simulate(tmp_path: Path) -> Iterator[Any]:
    """Start `gateway simulate serial` on a new pty behind a symlink; returns its path."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(profile: str, *args: str) -> str:
        link = tmp_path / f"tty{profile}"
        log = (tmp_path / f"simulate-{profile}.log").open("ab")
        cmd = [sys.executable, "-m", "gateway", "simulate", "serial", "--profile", profile]
        procs.append(subprocess.Popen([*cmd, "--link", str(link), *args], stderr=log))
        log.close()
        wait_path(str(link))
        return str(link)

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        proc.wait(5)


def test_nmea_gps_readings_with_units(
    broker: Broker, subscriber: Subscriber, daemon: Daemon, simulate: Any
) -> None:
    port = simulate("nmea", "--rate", "10", "--seed", "1")
    gps = {"id": "gps", "type": "serial", "port": port, "decoder": "nmea", "baudrate": 4800}
    daemon.start(gateway_config(broker, [gps]))

    def reading(sensor: str) -> Any:
        topic = f"{PREFIX}/gps/{sensor}"
        return subscriber.wait_for(lambda m: m.topic == topic, timeout=10, what=topic).data

    lat, lon, alt, speed = (reading(s) for s in ("lat", "lon", "alt", "speed"))
    assert (lat["unit"], lon["unit"], alt["unit"], speed["unit"]) == ("°", "°", "m", "m/s")
    assert lat["value"] == pytest.approx(48.1173, abs=0.01)
    assert lon["value"] == pytest.approx(11.5167, abs=0.01)
    assert reading("fix_quality")["value"] == 1
    assert 0.5 < speed["value"] < 2.5
    assert "GSV" not in daemon.log()  # other sentences are ignored, not errors


def test_polled_binary_meter_with_missed_responses(
    broker: Broker, subscriber: Subscriber, daemon: Daemon, simulate: Any
) -> None:
    port = simulate("meter", "--miss-every", "3")
    meter = {
        "id": "meter",
        "type": "serial",
        "port": port,
        "framing": METER_FRAMING,
        "decoder": METER_DECODER,
        "poll": {"query_hex": METER_QUERY.hex(" "), "interval": 0.2, "timeout": 0.1},
        "backoff": dict(FAST_BACKOFF),
    }
    daemon.start(gateway_config(broker, [meter]))
    daemon.wait_log("no response to the poll within 0.1s")  # the 3rd poll
    daemon.wait_log("responding again after 1 missed poll(s)")  # the 4th

    # The 4th poll's reading is logged on arrival, and reaches the subscriber through the
    # broker a moment later: wait for it rather than race it.
    def voltages() -> list[Message] | None:  # None, not [], until there are three
        found = [m for m in subscriber.messages if m.topic == f"{PREFIX}/meter/voltage"]
        return found if len(found) >= 3 else None

    volts = wait_until(voltages, 5, "three voltage readings (polls 1, 2 and 4)")
    assert len(volts) >= 3
    for message in volts:
        assert message.data is not None
        assert message.data["unit"] == "V"
        assert 215 <= message.data["value"] <= 245
    energy = subscriber.wait_for(lambda m: m.topic == f"{PREFIX}/meter/energy", what="energy")
    assert energy.data is not None
    assert energy.data["unit"] == "Wh"
    assert daemon.log_count("frame(s) (") == 0  # no frame was damaged or undecodable


def test_port_held_by_another_program_is_named_then_opened_when_free(
    broker: Broker,
    make_serial_pair: SerialPairFactory,
    subscriber: Subscriber,
    daemon: Daemon,
) -> None:
    pair = make_serial_pair("GW0")
    holding = (
        "import serial, sys, time\n"
        "port = serial.Serial(sys.argv[1], exclusive=True)\n"
        "print('holding', flush=True)\n"
        "time.sleep(60)\n"
    )
    cmd = [sys.executable, "-c", holding, pair.dev]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == b"holding\n"
            daemon.start(gateway_config(broker, [serial_device("boiler", pair)]))
            # The lock's owner, from /proc/locks: socat has the pty open too, but no lock.
            daemon.wait_log(f"{pair.dev} is in use by another program: pid {holder.pid} (python")
            assert "stop the other program or set exclusive: false" in daemon.log()
        finally:
            holder.kill()
    send_until_seen(pair, subscriber, PREFIX, "boiler")

    # Now the gateway holds it: a second program that asks for the port exclusively is refused.
    with pytest.raises(serial.SerialException, match="Could not exclusively lock port"):
        serial.Serial(pair.dev, exclusive=True)


def command(sub: Subscriber, device: str, name: str, payload: bytes) -> str:
    """Publish a command and return its reply."""
    topic = f"{PREFIX}/{device}/set/{name}"
    before = len(sub.on_topic(f"{topic}/result"))
    sub._client.publish(topic, payload, qos=1)
    return wait_until(
        lambda: sub.on_topic(f"{topic}/result")[before:] or None, 10, f"a reply on {topic}"
    )[0].text


def test_commands_write_what_they_name_and_nothing_more(
    broker: Broker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    commands = {"setpoint": "SP {payload}", "blob": {"template": "B{payload}", "payload": "bytes"}}
    boiler = serial_device("boiler", serial_pair, commands=commands)
    daemon.start(gateway_config(broker, [boiler]))
    daemon.wait_log("mqtt: connected")
    send_until_seen(serial_pair, subscriber, PREFIX, "boiler")
    peer = PeerReader(serial_pair)
    try:
        assert command(subscriber, "boiler", "raw", b"RESET_FACTORY") == (
            "error: `raw` is off for this device (set raw_commands: true "
            "to write payloads as they are)"
        )
        reply = command(subscriber, "boiler", "setpoint", b"21\nRESET_FACTORY")
        assert reply.startswith("error: payload refused: it contains the line terminator")
        assert command(subscriber, "boiler", "blob", b"\x00\n") == "ok"  # bytes: as asked
        assert command(subscriber, "boiler", "setpoint", b"21") == "ok"
        assert peer.wait_for(b"SP 21\n") == b"B\x00\nSP 21\n"  # nothing refused got through
    finally:
        peer.close()
    assert daemon.alive


def rss(pid: int) -> int:
    """Resident memory of a process, bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        line = next(x for x in status if x.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def wait_replies(sub: Subscriber, topic: str, count: int) -> None:
    wait_until(lambda: len(sub.on_topic(topic)) >= count or None, 20, f"{count} replies")


@pytest.mark.timeout(90)
def test_a_flood_of_commands_to_a_device_that_does_not_read_is_busy_not_memory(
    broker: Broker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    """Nobody reads the pty's other end: the port takes a few KiB and no more. 2,000 commands
    of 4 KiB (8 MB) used to be answered `ok` while the gateway's memory grew by their size."""
    boiler = serial_device("boiler", serial_pair, raw_commands=True, write_timeout=0.05)
    daemon.start(gateway_config(broker, [boiler]))
    daemon.wait_log("mqtt: connected")
    send_until_seen(serial_pair, subscriber, PREFIX, "boiler")
    topic, block = f"{PREFIX}/boiler/set/raw", b"x" * 4096
    for batch in range(1, 51):  # in batches, each answered before the next: no queue overflows
        if batch == 6:  # the port is full by now; what the gateway holds from here is ours
            before = rss(daemon.pid)
        for _ in range(40):
            subscriber._client.publish(topic, block, qos=1)
        wait_replies(subscriber, f"{topic}/result", 40 * batch)
    replies = [m.text for m in subscriber.on_topic(f"{topic}/result")]
    growth = rss(daemon.pid) - before
    assert growth < 3_000_000, f"RSS grew by {growth} bytes over 1,800 commands"
    busy = "error: busy: the device has not taken"
    assert all(reply.startswith(busy) for reply in replies[-40:]), replies[-40:]
    assert daemon.alive


@pytest.mark.timeout(90)
def test_a_replugged_port_is_read_within_2s_of_every_replug(
    broker: Broker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    """Unplugged for a while, the retries' delays grow (up to 30 s with the default backoff,
    and a device replugged often never stays up for `reset_after`): a replug must not wait
    them out. The gateway watches for the port to come back instead."""
    backoff = {"initial": 1.0, "max": 30.0, "multiplier": 2.0, "reset_after": 30.0}
    daemon.start(gateway_config(broker, [serial_device("boiler", serial_pair, backoff=backoff)]))
    daemon.wait_log("mqtt: connected")
    send_until_seen(serial_pair, subscriber, PREFIX, "boiler")
    for cycle in range(1, 6):
        serial_pair.unplug()
        daemon.wait_log("went away", count=cycle)
        time.sleep(2.5)  # unplugged a while: retried meanwhile, each delay longer
        serial_pair.plug()
        send_until_seen(serial_pair, subscriber, PREFIX, "boiler", timeout=2.0)
    assert daemon.log_count("went away") == 5  # and no flapping in between
    assert daemon.alive


def write_until_seen(pair: SerialPair, line: bytes, subscriber: Subscriber, topic: str) -> None:
    """Write `line` until its reading arrives: the daemon may not read the port yet."""

    def seen() -> bool:
        pair.write(line)
        return bool(subscriber.on_topic(topic))

    wait_until(seen, 10, topic)


def test_a_huge_number_is_a_counted_decode_error_and_the_rest_goes_on(
    broker: Broker,
    make_serial_pair: SerialPairFactory,
    subscriber: Subscriber,
    daemon: Daemon,
) -> None:
    """Issue 21, item 7: a 400-digit value (kv or json) does not fit a float. It once raised
    OverflowError in the port's callback (the rest of the chunk lost) and made /metrics answer
    500 while `sensor_values` was on; now the frame is a counted decode error."""
    kv_pair, json_pair = make_serial_pair("KV"), make_serial_pair("JS")
    devices = [
        serial_device("boiler", kv_pair),
        serial_device("meter", json_pair, decoder="json"),
    ]
    config = gateway_config(broker, devices)
    config["metrics"]["sensor_values"] = True
    daemon.start(config)
    base = endpoint(daemon)
    send_until_seen(kv_pair, subscriber, PREFIX, "boiler")
    write_until_seen(json_pair, b'{"up": 1}\n', subscriber, f"{PREFIX}/meter/up")
    huge = "9" * 400
    # One write: the good lines around the bad one arrive in the same chunk.
    kv_pair.write(f"temp=1\nbig={huge}\ntemp=2\n".encode())
    json_pair.write(f'{{"temp": 1}}\n{{"big": {huge}}}\n{{"temp": 2}}\n'.encode())
    for device in ("boiler", "meter"):
        subscriber.wait_value(f"{PREFIX}/{device}/temp", 2)
    kv_pair.write(b"temp=3\n")
    json_pair.write(b'{"temp": 3}\n')
    for device in ("boiler", "meter"):
        subscriber.wait_value(f"{PREFIX}/{device}/temp", 3)
        assert subscriber.on_topic(f"{PREFIX}/{device}/big") == []
        assert [m.value for m in subscriber.on_topic(f"{PREFIX}/{device}/temp")][-3:] == [1, 2, 3]

    samples = scrape(base)  # asserts 200
    for device in ("boiler", "meter"):
        errors = sample(samples, "gateway_frame_errors_total", device=device, reason="decode")
        assert errors == 1, device
        assert sample(samples, "gateway_sensor_value", device=device, sensor="temp", unit="") == 3
    assert "Traceback" not in daemon.log()


def test_a_hostile_line_for_a_backtracking_regex_does_not_block_the_gateway(
    broker: Broker,
    make_serial_pair: SerialPairFactory,
    subscriber: Subscriber,
    daemon: Daemon,
) -> None:
    """Issue 21, item 19: `(\\d+)+` backtracks exponentially in Python's engine (a 25-byte line
    held the event loop for a minute). Patterns run on RE2: the hostile lines are plain
    mismatches, and the other device, MQTT and /healthz go on."""
    hostile, good = make_serial_pair("RX"), make_serial_pair("OK")
    regex = {"type": "regex", "pattern": r"T=(?P<temp>(\d+)+)C"}
    devices = [serial_device("probe", hostile, decoder=regex), serial_device("boiler", good)]
    daemon.start(gateway_config(broker, devices))
    base = endpoint(daemon)
    send_until_seen(good, subscriber, PREFIX, "boiler")
    write_until_seen(hostile, b"T=21C\n", subscriber, f"{PREFIX}/probe/temp")
    hostile.write(b"T=" + b"1" * 32 + b"x\n" + b"T=" + b"2" * 40 + b"!\n")
    good.write(b"temp=22\n")
    subscriber.wait_value(f"{PREFIX}/boiler/temp", 22)
    assert get(f"{base}/healthz").json() == {"status": "ok", "reasons": []}
    hostile.write(b"T=23C\n")
    subscriber.wait_value(f"{PREFIX}/probe/temp", 23)
    samples = scrape(base)
    assert sample(samples, "gateway_frame_errors_total", device="probe", reason="decode") == 2
