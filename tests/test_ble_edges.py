"""Bluetooth LE edges that hold (issue 21), end to end: `python -m gateway run` (real bleak)
against the fake BlueZ on a private D-Bus bus and a real mosquitto, the daemon's HTTP endpoint
read with the stdlib.

A parser library that raises on an advertisement is contained (the status page answers, the
scanner keeps running, the count per parser moves); spoofed unknown advertisers are bounded as a
whole and never cost a configured device a reading; the encryption counter of BTHome survives a
restart, so a replay after one is refused.
"""

from __future__ import annotations

import functools
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from fakebluez import ThreadedFakeBlueZ
from helpers import FAST_BACKOFF, Broker, Daemon, Subscriber, gateway_config, wait_until
from httpprobe import _URL, SERVING, endpoint, get, scrape

from gateway.config.ble import INSTALL_HINT, LIBRARIES, installed_libraries
from gateway.decoders.ble import uuid16
from gateway.decoders.ble.bthome import encode_bthome
from gateway.limits import COUNTER_BLOCK

pytestmark = pytest.mark.timeout(60)

PREFIX = "gateway"
KITCHEN = "A4:C1:38:12:34:56"
ENV = uuid16(0x181A)
PVVX = bytes.fromhex("56341238c1a46b080c12860b5f1204")  # 21.55 °C, 46.2 %, 95 %, 2.95 V
RUUVI_ID = 0x0499
needs_parsers = pytest.mark.skipif(
    len(installed_libraries()) < len(LIBRARIES),
    reason=f"the ble-parsers extra is not installed ({INSTALL_HINT})",
)


@pytest.fixture
def bluez(dbus_address: str) -> Iterator[ThreadedFakeBlueZ]:
    fake = ThreadedFakeBlueZ(dbus_address, adv_interval=0.05)
    try:
        yield fake
    finally:
        fake.close()


def advert_device(device_id: str, address: str, decoder: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": device_id,
        "type": "ble_advert",
        "address": address,
        "decoder": decoder,
        "backoff": FAST_BACKOFF,
        **extra,
    }


def ble_config(broker: Broker, devices: list[dict[str, Any]], **ble: Any) -> dict[str, Any]:
    cfg = gateway_config(broker, devices)
    cfg["ble"] = {"adapter": "hci0", "backoff": FAST_BACKOFF, **ble}
    return cfg


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# -- item 8: a parser library that raises is contained -----------------------------------------
@needs_parsers
def test_a_parser_library_that_raises_costs_neither_the_status_page_nor_the_scanner(
    broker: Broker, subscriber: Subscriber, daemon: Daemon, bluez: ThreadedFakeBlueZ
) -> None:
    """Ruuvi's company id with an empty payload makes ruuvitag-ble's `supported()` raise
    IndexError: from a passer-by (the status page's table of unknown advertisers describes it)
    and from a configured `decoder: auto` device (its scanner callback parses it)."""
    fake = bluez.fake
    odd = {RUUVI_ID: b""}
    bluez.call(lambda: fake.add_device(KITCHEN, "ATC_123456", service_data={ENV: PVVX}))
    bluez.call(lambda: fake.add_device("CB:B8:33:4C:88:4F", "Ruuvi", manufacturer_data=odd))
    bluez.call(lambda: fake.add_device("CB:B8:33:4C:88:50", "Ruuvi 2", manufacturer_data=odd))
    devices = [
        advert_device("kitchen", KITCHEN, "pvvx"),
        advert_device("garden", "CB:B8:33:4C:88:50", "auto"),
    ]
    daemon.start(ble_config(broker, devices))
    subscriber.wait_value(f"{PREFIX}/kitchen/temperature", 21.55, timeout=15)
    base = endpoint(daemon)

    def counted() -> float | None:
        value = sample(scrape(base), "gateway_ble_parser_errors_total", parser="ruuvi")
        return value if value >= 3 else None

    wait_until(counted, 10.0, "ruuvitag-ble's errors counted")
    for path in ("/status", "/", "/status.html"):
        reply = get(f"{base}{path}")
        assert reply.status == 200, (path, reply.body[-2000:])
    status = get(f"{base}/status").json()
    (stranger,) = [s for s in status["ble"]["unknown"] if s["address"] == "CB:B8:33:4C:88:4F"]
    assert stranger["decoder"] is None  # no parser reads it; the hints say what it sent
    assert "mfr 0x0499" in stranger["values"]
    assert status["ble"]["adapters"]["hci0"]["state"] == "up"
    before = sample(scrape(base), "gateway_ble_adverts_total", adapter="hci0")
    wait_until(
        lambda: sample(scrape(base), "gateway_ble_adverts_total", adapter="hci0") > before + 20,
        10.0,
        "the scanner to keep hearing",
    )
    log = daemon.log()
    assert "Traceback" not in log
    # Logged, but once a minute per parser, not per advertisement.
    assert log.count("parser ruuvi raised") == 1


# -- item 20: what `gateway scan` prints of the air is escaped ---------------------------------
EVIL_NAME = "\x1b[2J\x1b[31mATC\r\nfake line\u202eexe.txt"
EVIL_TEXT = "\x1b]0;owned\x07\u202e"


def test_gateway_scan_prints_names_and_values_with_control_characters_escaped(
    bluez: ThreadedFakeBlueZ,
) -> None:
    """An advertised name (and a BTHome text value) with ANSI escapes, a carriage return, a
    newline and a bidi override: every line `gateway scan` prints shows them as Python escapes,
    so they can neither move the terminal's cursor, nor forge a line, nor reorder the text."""
    fake = bluez.fake
    text = EVIL_TEXT.encode()
    bthome = bytes([0x40, 0x53, len(text)]) + text  # a text object only: bthome-ble reads it
    bluez.call(lambda: fake.add_device(KITCHEN, EVIL_NAME, service_data={ENV: PVVX}))
    bluez.call(
        lambda: fake.add_device(
            "3C:2E:F5:00:11:22", EVIL_NAME, service_data={uuid16(0xFCD2): bthome}
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "scan", "--seconds", "1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert not set(out) & {"\x1b", "\r", "\x07", "\u202e"}, repr(out)
    assert "fake line" not in {line.strip() for line in out.splitlines()}  # no forged line
    assert "\\x1b[2J\\x1b[31mATC\\r\\nfake line\\u202eexe.txt" in out  # the live lines
    assert "\\x1b[2J\\x1b[31mATC\\r\\nfake" in out  # the table (its name column is cut short)
    assert "text=\\x1b]0;owned\\x07\\u202e" in out


# -- item 23: the encryption counter of BTHome survives a restart ------------------------------
BATH = "54:48:E6:8F:80:A5"
BINDKEY = "231d39c1d7cc1ab1aee224cd096db932"
BTHOME = uuid16(0xFCD2)


def sealed(temperature: float, counter: int) -> dict[str, bytes]:
    objects = b"\x02" + round(temperature * 100).to_bytes(2, "little", signed=True)
    key = bytes.fromhex(BINDKEY)
    return {BTHOME: encode_bthome(objects, mac=BATH, bindkey=key, counter=counter)}


def test_a_replay_after_a_restart_or_a_crash_is_refused_and_counted(
    broker: Broker, subscriber: Subscriber, daemon: Daemon, bluez: ThreadedFakeBlueZ
) -> None:
    fake = bluez.fake
    bath = bluez.call(lambda: fake.add_device(BATH, "BTHome", service_data=sealed(20.0, 100)))
    device = advert_device("bath", BATH, "bthome", bindkey=BINDKEY, republish_after=0)
    cfg = ble_config(broker, [device])
    topic = f"{PREFIX}/bath/temperature"

    def advertise(temperature: float, counter: int) -> None:
        bluez.call(lambda: bath.advertise(service_data=sealed(temperature, counter)))

    def published(value: float) -> int:
        """How many readings of this value were made: a reading still in the outbox at a
        SIGKILL is sent again after the restart (at least once), with its seq."""
        return len(
            {m.data["seq"] for m in subscriber.on_topic(topic) if m.value == value if m.data}
        )

    def refused(gateway: Daemon, start: int, at_least: float) -> None:
        # The daemons of this test share one log: the latest start's endpoint is the last.
        gateway.wait_log(SERVING, count=start)
        base = _URL.findall(gateway.log())[-1]
        wait_until(
            lambda: sample(
                scrape(base), "gateway_ble_adverts_dropped_total", device="bath", reason="replay"
            ) >= at_least,
            10.0,
            "the replays refused and counted",
        )  # fmt: skip

    daemon.start(cfg)
    subscriber.wait_value(topic, 20.0, timeout=15)
    advertise(21.0, 101)
    subscriber.wait_value(topic, 21.0)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(15) == 0

    # A clean restart: someone replays the recording of counter 100.
    advertise(20.0, 100)
    second = Daemon(daemon.workdir)
    try:
        second.start()
        refused(second, 2, 3)
        advertise(22.0, 102)  # the device's next packet: no gap after a clean stop
        subscriber.wait_value(topic, 22.0, timeout=10)
        assert published(20.0) == 1
        second.signal(signal.SIGKILL)  # a crash: counter 102 was accepted since the last stop
        second.wait(5)
    finally:
        second.close()

    advertise(22.0, 102)
    third = Daemon(daemon.workdir)
    try:
        third.start()
        refused(third, 3, 3)  # the replay of 102, accepted before the crash
        advertise(24.0, 103 + COUNTER_BLOCK)  # beyond the reservation: the device again
        subscriber.wait_value(topic, 24.0, timeout=10)
        assert published(22.0) == 1
    finally:
        third.close()
    assert "Traceback" not in daemon.log()


# -- item 11: spoofed unknown advertisers are bounded as a whole --------------------------------
SPOOFED = 400  # more than the per-address state the gateway keeps (UNKNOWN_TRACKED)


def spoofed_address(i: int) -> str:
    return f"C0:FF:EE:00:{i >> 8:02X}:{i & 0xFF:02X}"


def pvvx_of(address: str) -> bytes:
    return bytes.fromhex(address.replace(":", ""))[::-1] + PVVX[6:]


@pytest.mark.timeout(120)
def test_spoofed_unknown_advertisers_cost_no_configured_reading_and_no_state_per_address(
    broker: Broker, subscriber: Subscriber, dbus_address: str, daemon: Daemon
) -> None:
    """400 spoofed addresses with `unknown_devices: publish` while the broker is away: their
    readings are limited as a whole (rate, share of the outbox), the configured device's
    readings all arrive, and no metric series or outbox seqs row is made per address."""
    bluez = ThreadedFakeBlueZ(dbus_address, adv_interval=0.5)
    try:
        fake = bluez.fake
        bluez.call(lambda: fake.add_device(KITCHEN, "ATC_123456", service_data={ENV: PVVX}))
        for i in range(SPOOFED):
            address = spoofed_address(i)
            data = {ENV: pvvx_of(address)}
            bluez.call(functools.partial(fake.add_device, address, "ATC", service_data=data))
        cfg = ble_config(
            broker,
            [advert_device("kitchen", KITCHEN, "pvvx", republish_after=0)],
            unknown_devices="publish",
            unknown_devices_rate=50,
        )
        cfg["outbox"] = {"max_bytes": 64_000}
        daemon.start(cfg)
        subscriber.wait_value(f"{PREFIX}/kitchen/temperature", 21.55, timeout=20)
        subscriber.wait_for(lambda m: m.topic.startswith(f"{PREFIX}/ble_c0ffee"), timeout=10)
        base = endpoint(daemon)

        def kitchen(name: str) -> float:
            return sample(scrape(base), name, device="kitchen")

        broker.kill()  # the outbox keeps everything now
        start = kitchen("gateway_readings_received_total")
        wait_until(
            lambda: kitchen("gateway_readings_received_total") >= start + 40,
            30.0,
            "the kitchen's readings while the broker is away",
        )
        bluez.call(lambda: fake.hci0.go_silent("never"))  # nothing new from here on
        broker.start()
        wait_until(
            lambda: (
                kitchen("gateway_readings_published_total")
                >= kitchen("gateway_readings_received_total")
            ),
            30.0,
            "the kitchen's readings delivered",
        )
        samples = scrape(base)
    finally:
        bluez.close()
    dropped = {
        dict(labels).get("device"): value
        for (name, labels), value in samples.items()
        if name == "gateway_readings_dropped_total"
    }
    assert "kitchen" not in dropped, dropped
    assert sample(samples, "gateway_input_refused_total", edge="ble", reason="unknown_rate") > 0
    devices = {dict(labels).get("device") for (_, labels), _ in samples.items()}
    assert {d for d in devices if d and d.startswith("ble_")} == {"ble_unknown"}
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(15) == 0
    with sqlite3.connect(daemon.workdir / "state" / "outbox.sqlite3") as db:
        rows = [r[0] for r in db.execute("SELECT device FROM seqs")]
    assert set(rows) <= {"kitchen", "ble_unknown"}
