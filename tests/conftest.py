"""Shared fixtures: a real mosquitto broker, socat pty pairs, MQTT subscribers and the daemon.

The helpers themselves live in `helpers.py`; fixtures here only create them, skip when a program
is missing, and guarantee cleanup (every process is killed and reaped, every file closed).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    Broker,
    Daemon,
    MqttBroker,
    SerialPair,
    SerialPairFactory,
    Subscriber,
    SubscriberFactory,
    missing_programs,
)
from rabbitmq import RabbitBroker, make_template, server_program

from gateway.config import OutboxConfig
from gateway.metrics import Metrics
from gateway.outbox import Outbox


def _require(*programs: str) -> None:
    if missing := missing_programs(*programs):
        pytest.skip(f"needs {', '.join(missing)} (apt-get install -y {' '.join(missing)})")


@pytest.fixture
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MqttBroker]:
    """A running mosquitto on a free loopback port (killable, restartable on the same port).
    Tests marked `@both_brokers` (helpers.py) run once with it and once with RabbitMQ's MQTT
    plugin (`RabbitBroker`, the same interface)."""
    b: MqttBroker
    if getattr(request, "param", "mosquitto") == "rabbitmq":
        _require_rabbitmq()
        b = RabbitBroker(tmp_path, template=request.getfixturevalue("rabbitmq_template"))
    else:
        _require("mosquitto")
        b = Broker(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def make_serial_pair(tmp_path: Path) -> Iterator[SerialPairFactory]:
    """Create and plug more pty pairs: `make_serial_pair("GW1")`."""
    _require("socat")
    pairs: list[SerialPair] = []

    def make(name: str) -> SerialPair:
        pair = SerialPair(tmp_path, name)
        pairs.append(pair)
        pair.plug()
        return pair

    try:
        yield make
    finally:
        for pair in pairs:
            pair.close()


@pytest.fixture
def serial_pair(make_serial_pair: SerialPairFactory) -> SerialPair:
    """A plugged socat pty pair: the daemon opens `.dev`, the test writes `.peer`."""
    return make_serial_pair("GW0")


@pytest.fixture
def make_subscriber(broker: MqttBroker) -> Iterator[SubscriberFactory]:
    """Connected subscribers: `make_subscriber(topic="#", persistent=False)`."""
    subs: list[Subscriber] = []

    def make(topic: str = "#", *, persistent: bool = False) -> Subscriber:
        sub = Subscriber(broker, topic, persistent=persistent)
        subs.append(sub)
        return sub.connect()

    try:
        yield make
    finally:
        for sub in subs:
            sub.close()


@pytest.fixture
def subscriber(make_subscriber: SubscriberFactory) -> Subscriber:
    """Subscribed to `#` with a persistent session: survives a broker restart without losing
    what the gateway publishes before it reconnects."""
    return make_subscriber("#", persistent=True)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """The gateway daemon (not started yet: call `.start(config)`). Its log is printed at
    teardown so that a failing test shows what the daemon did."""
    d = Daemon(tmp_path)
    try:
        yield d
    finally:
        d.close()
        if d.log_path.exists():
            print(f"--- daemon log ({d.log_path}) ---\n{d.log()}")


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    """An open outbox with the default settings in the test's directory (in-process tests of
    the MQTT session)."""
    box = Outbox(tmp_path / "outbox.sqlite3", OutboxConfig(), Metrics())
    box.open()
    try:
        yield box
    finally:
        box.close()


# -- Bluetooth LE: a private D-Bus bus for the fake BlueZ ----------------------------------------


@pytest.fixture(scope="session")
def dbus_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private dbus-daemon; DBUS_SYSTEM_BUS_ADDRESS points at it for the rest of the test
    process (bleak and bleak-retry-connector read it when BLE code first runs, and remember a
    failed probe, so it must be set before that) and for the daemons it starts."""
    _require("dbus-daemon")
    from fakebluez import start_private_bus  # noqa: PLC0415 - needs dbus-fast, BLE tests only

    proc, address = start_private_bus(tmp_path_factory.mktemp("dbus"))
    before = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
    os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = address
    try:
        yield address
    finally:
        if before is None:
            os.environ.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = before
        proc.terminate()
        proc.wait(5)


# -- a second MQTT broker: RabbitMQ with its MQTT plugin -----------------------------------------


def _require_rabbitmq() -> None:
    if server_program() is None:  # /usr/lib/rabbitmq/bin: /usr/sbin's wrapper su's to rabbitmq
        pytest.skip("needs rabbitmq-server (apt-get install -y rabbitmq-server)")


@pytest.fixture(scope="session")
def rabbitmq_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data dir of a RabbitMQ node that booted once (9-12 s) and stopped: nodes started
    from a copy skip the first boot's wait for Raft peers (3-6 s instead)."""
    _require_rabbitmq()
    return make_template(tmp_path_factory.mktemp("rabbitmq-template"))


@pytest.fixture
def rabbitmq(tmp_path: Path, rabbitmq_template: Path) -> Iterator[RabbitBroker]:
    """A running RabbitMQ MQTT broker on free loopback ports, with the interface of `broker`
    (killable, restartable on the same ports). See `RabbitBroker.MQTT_DIFFERENCES`."""
    b = RabbitBroker(tmp_path, template=rabbitmq_template)
    b.start()
    try:
        yield b
    finally:
        b.close()
