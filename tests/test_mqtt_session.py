"""The MQTT session against real mosquitto: commands to devices (MQTT 3.1.1 and 5), state restored
after a broker restart, and mutual TLS with `require_certificate`."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    Broker,
    Daemon,
    MqttBroker,
    SerialPair,
    Subscriber,
    SubscriberFactory,
    both_brokers,
    free_port,
    gateway_config,
    serial_device,
    wait_until,
)
from httpprobe import endpoint, sample, scrape
from paho.mqtt.client import Client, MQTTMessage, MQTTv5
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.limits import (
    COMMANDS_CONCURRENT,
    COMMANDS_WAITING_PER_DEVICE,
    MQTT_MAX_INCOMING_PACKET,
)

PREFIX = "gateway"
pytestmark = pytest.mark.timeout(60)


def read_pty(pair: SerialPair, want: bytes, timeout: float = 5.0) -> bytes:
    """Read from the test's end of the pty until `want` has arrived."""
    fd = os.open(pair.peer, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    got = b""
    try:

        def arrived() -> bool:
            nonlocal got
            with contextlib.suppress(BlockingIOError):
                got += os.read(fd, 4096)
            return want in got

        wait_until(lambda: arrived() or None, timeout, f"{want!r} on the pty")
    finally:
        os.close(fd)
    return got


def start(daemon: Daemon, broker: MqttBroker, pair: SerialPair, **mqtt: Any) -> None:
    device = serial_device("boiler", pair, commands={"setpoint": "SP {payload}"}, raw_commands=True)
    daemon.start(gateway_config(broker, [device], mqtt=mqtt))
    daemon.wait_log("mqtt: connected")
    daemon.wait_log("opened ")


@both_brokers
def test_command_is_written_to_the_port_and_answered(
    broker: MqttBroker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    start(daemon, broker, serial_pair)
    subscriber.wait_for(lambda m: m.topic == f"{PREFIX}/boiler/availability" and m.text == "online")
    publisher = subscriber._client  # the subscriber's connection can publish too
    # Reading happens on the other end of the pty; open it before the command is written.
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(read_pty(serial_pair, b"RESET\n")))
    reader.start()
    publisher.publish(f"{PREFIX}/boiler/set/raw", b"RESET", qos=1)
    reply = subscriber.wait_for(lambda m: m.topic == f"{PREFIX}/boiler/set/raw/result")
    reader.join(10)
    assert reply.text == "ok"
    assert result == [b"RESET\n"] or b"RESET\n" in result[0]

    publisher.publish(f"{PREFIX}/boiler/set/setpoint", b"21.5", qos=1)
    reply = subscriber.wait_for(lambda m: m.topic == f"{PREFIX}/boiler/set/setpoint/result")
    assert reply.text == "ok"

    publisher.publish(f"{PREFIX}/boiler/set/launch", b"now", qos=1)
    reply = subscriber.wait_for(lambda m: m.topic == f"{PREFIX}/boiler/set/launch/result")
    assert reply.text.startswith("error: unknown command 'launch'")

    publisher.publish(f"{PREFIX}/nosuch/set/raw", b"x", qos=1)
    reply = subscriber.wait_for(lambda m: m.topic == f"{PREFIX}/nosuch/set/raw/result")
    assert reply.text.startswith("error: no device 'nosuch'")
    assert daemon.alive


def test_command_for_an_unplugged_device_gets_an_error(
    broker: Broker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    start(daemon, broker, serial_pair)
    serial_pair.unplug()
    daemon.wait_log("went away")
    subscriber.wait_for(
        lambda m: m.topic == f"{PREFIX}/boiler/availability" and m.text == "offline"
    )
    subscriber._client.publish(f"{PREFIX}/boiler/set/raw", b"PING", qos=1)
    reply = subscriber.wait_for(lambda m: m.topic == f"{PREFIX}/boiler/set/raw/result")
    assert reply.text == "error: device boiler is not connected"
    serial_pair.plug()
    online = f"{PREFIX}/boiler/availability"
    wait_until(
        lambda: [m.text for m in subscriber.on_topic(online)][-1:] == ["online"] or None,
        10,
        "the device online again",
    )


def test_command_waits_up_to_its_ttl_for_the_device(
    broker: Broker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    start(daemon, broker, serial_pair, command_ttl=10)
    serial_pair.unplug()
    daemon.wait_log("went away")
    subscriber._client.publish(f"{PREFIX}/boiler/set/raw", b"LATER", qos=1)
    serial_pair.plug()
    reply = subscriber.wait_for(lambda m: m.topic == f"{PREFIX}/boiler/set/raw/result", timeout=15)
    assert reply.text == "ok"


def test_mqtt5_response_topic_and_correlation_data_are_honoured(
    broker: Broker, serial_pair: SerialPair, daemon: Daemon
) -> None:
    start(daemon, broker, serial_pair, protocol="5")
    replies: list[MQTTMessage] = []
    got = threading.Event()

    def on_message(client: Client, userdata: Any, msg: MQTTMessage) -> None:
        replies.append(msg)
        got.set()

    client = Client(CallbackAPIVersion.VERSION2, protocol=MQTTv5)
    client.on_message = on_message
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.subscribe("replies/me", qos=1)
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = "replies/me"
        props.CorrelationData = b"req-42"
        wait_until(lambda: client.is_connected() or None, 5, "the MQTT 5 client")
        client.publish(f"{PREFIX}/boiler/set/raw", b"HELLO", qos=1, properties=props)
        assert got.wait(10), "no reply on the response topic"
    finally:
        client.disconnect()
        client.loop_stop()
    assert replies[0].payload == b"ok"
    assert replies[0].properties is not None
    assert replies[0].properties.CorrelationData == b"req-42"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "asked",
    [
        f"{PREFIX}/victim/set/raw",
        "other-gateway/victim/set/raw",  # another gateway's command topic (issue 21, 15)
        "site/a/other/victim/set/raw",
    ],
)
def test_a_response_topic_that_is_a_command_topic_is_refused(
    broker: Broker,
    make_serial_pair: Any,
    subscriber: Subscriber,
    daemon: Daemon,
    asked: str,
) -> None:
    """An MQTT 5 command whose response topic is another device's `set/raw` (of this gateway
    or of any other: all `.../set/<command>`) must not make the gateway write its reply into
    that device's port: the reply goes to the default result topic, and the refusal is
    counted and logged."""
    boiler, victim = make_serial_pair("GW0"), make_serial_pair("GW1")
    devices = [
        serial_device("boiler", boiler, raw_commands=True),
        serial_device("victim", victim, raw_commands=True),
    ]
    daemon.start(gateway_config(broker, devices, mqtt={"protocol": "5"}))
    daemon.wait_log("mqtt: connected")
    daemon.wait_log("opened ", count=2)
    client = Client(CallbackAPIVersion.VERSION2, protocol=MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    captured: list[bytes] = []

    def watch_victim() -> None:
        with contextlib.suppress(TimeoutError):  # the expected outcome: nothing arrives
            captured.append(read_pty(victim, b"ok", timeout=3.0))

    reader = threading.Thread(target=watch_victim, daemon=True)
    try:
        wait_until(lambda: client.is_connected() or None, 5, "the MQTT 5 client")
        reader.start()
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = asked
        client.publish(f"{PREFIX}/boiler/set/raw", b"HELLO", qos=1, properties=props)
        reply = subscriber.wait_for(lambda m: m.topic == f"{PREFIX}/boiler/set/raw/result")
        reader.join(5)
    finally:
        client.disconnect()
        client.loop_stop()
    assert reply.text == "ok"
    assert captured == []  # nothing reached the victim's port
    assert not subscriber.on_topic(f"{PREFIX}/victim/set/raw/result")
    assert not subscriber.on_topic(asked)
    daemon.wait_log(f"response topic {asked!r} refused")


def commands_total(base: str, **labels: str) -> float | None:
    return sample(scrape(base), "gateway_commands_total", **labels)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_retained_commands_are_not_run(
    broker: Broker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon, protocol: str
) -> None:
    """Issue 21 (4): a retained command ran again at every (re)connect, and clearing it (an
    empty retained payload) was run too, writing a lone line ending. Commands that arrive with
    the retain flag are counted and ignored; over MQTT 5 the gateway subscribes with "retain
    as published", so a retained publish (the clearing too) carries the flag live as well."""
    command = f"{PREFIX}/boiler/set/raw"
    publisher = subscriber._client
    publisher.publish(command, b"RETAINED", qos=1, retain=True).wait_for_publish(5)
    start(daemon, broker, serial_pair, protocol=protocol)
    base = endpoint(daemon)
    wait_until(
        lambda: commands_total(base, device="boiler", result="retained") == 1 or None,
        10,
        "the retained command counted as such",
    )
    if protocol == "5":
        publisher.publish(command, b"", qos=1, retain=True)  # clearing it
        wait_until(
            lambda: commands_total(base, device="boiler", result="retained") == 2 or None,
            10,
            "the clearing counted as retained",
        )
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(read_pty(serial_pair, b"LIVE\n")))
    reader.start()
    publisher.publish(command, b"LIVE", qos=1)
    reply = subscriber.wait_for(lambda m: m.topic == f"{command}/result")
    reader.join(10)
    assert reply.text == "ok"
    assert [m.text for m in subscriber.on_topic(f"{command}/result")] == ["ok"]  # LIVE's alone
    assert got == [b"LIVE\n"]


def test_commands_to_made_up_devices_grow_no_metric_series(
    broker: Broker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    """Issue 21 (6): every made-up device id made a metric series of its own, forever. Now
    they all count as `device="unknown"`, and the refusal is logged once."""
    start(daemon, broker, serial_pair)
    base = endpoint(daemon)
    made_up = 50
    for i in range(made_up):
        subscriber._client.publish(f"{PREFIX}/made-up-{i}/set/raw", b"x", qos=1)
    wait_until(
        lambda: (
            len([m for m in subscriber.messages if m.topic.endswith("/set/raw/result")]) >= made_up
            or None
        ),
        10,
        f"{made_up} replies",
    )
    samples = scrape(base)
    labelled = {
        dict(labels)["device"] for name, labels in samples if name == "gateway_commands_total"
    }
    assert labelled == {"unknown"}
    assert sample(samples, "gateway_commands_total", device="unknown", result="error") == made_up
    assert daemon.log_count("accepts commands") == 1


def test_commands_waiting_for_a_down_device_do_not_hold_up_another(
    broker: Broker, make_serial_pair: Any, subscriber: Subscriber, daemon: Daemon
) -> None:
    """Issue 21 (14): with command_ttl, commands waiting for a device that is down took every
    slot, and a command to a healthy device waited for their ttl. Waiting now holds no slot,
    and at most COMMANDS_WAITING_PER_DEVICE wait per device (more are `error: busy`)."""
    away, here = make_serial_pair("GW0"), make_serial_pair("GW1")
    devices = [
        serial_device("away", away, raw_commands=True),
        serial_device("here", here, raw_commands=True),
    ]
    daemon.start(gateway_config(broker, devices, mqtt={"command_ttl": 30}))
    daemon.wait_log("mqtt: connected")
    daemon.wait_log("opened ", count=2)
    away.unplug()
    daemon.wait_log("went away")
    sent = max(COMMANDS_CONCURRENT, COMMANDS_WAITING_PER_DEVICE) + 2
    publisher = subscriber._client
    for i in range(sent):
        publisher.publish(f"{PREFIX}/away/set/raw", b"A%d" % i, qos=1)
    publisher.publish(f"{PREFIX}/here/set/raw", b"HERE", qos=1)
    reply = subscriber.wait_for(lambda m: m.topic == f"{PREFIX}/here/set/raw/result", timeout=10)
    assert reply.text == "ok"  # well within the 30 s the others may wait

    def away_replies() -> list[str]:
        return [m.text for m in subscriber.on_topic(f"{PREFIX}/away/set/raw/result")]

    busy = sent - COMMANDS_WAITING_PER_DEVICE
    wait_until(lambda: len(away_replies()) >= busy or None, 10, "the busy replies")
    assert all(text.startswith("error: busy") for text in away_replies())
    away.plug()  # the waiting ones are carried out when it is back
    wait_until(lambda: len(away_replies()) >= sent or None, 15, "the waiting ones answered")
    assert away_replies()[busy:] == ["ok"] * COMMANDS_WAITING_PER_DEVICE


def peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def test_an_oversized_command_never_reaches_the_gateway(
    broker: Broker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    """Issue 21 (13): a command payload was read whole before its size was checked (three
    150 MB messages: 649 MB resident). Over MQTT 5 the gateway announces its Maximum Packet
    Size in CONNECT, and the broker drops what is larger instead of sending it."""
    start(daemon, broker, serial_pair, protocol="5")
    publisher = subscriber._client
    raw = f"{PREFIX}/boiler/set/raw"
    publisher.publish(raw, b"WARM", qos=1)
    assert subscriber.wait_for(lambda m: m.topic == f"{raw}/result").text == "ok"
    before = peak_rss(daemon.pid)
    big = b"x" * (4 * MQTT_MAX_INCOMING_PACKET)
    for _ in range(3):
        publisher.publish(raw, big, qos=1).wait_for_publish(10)
    publisher.publish(f"{PREFIX}/boiler/set/setpoint", b"21", qos=1)
    reply = subscriber.wait_for(
        lambda m: m.topic == f"{PREFIX}/boiler/set/setpoint/result", timeout=15
    )
    assert reply.text == "ok"  # the normal command after them still works
    assert [m.text for m in subscriber.on_topic(f"{raw}/result")] == ["ok"]  # WARM's alone
    grown = peak_rss(daemon.pid) - before
    assert grown < MQTT_MAX_INCOMING_PACKET, f"peak RSS grew by {grown} bytes"
    assert daemon.alive


def test_state_is_restored_after_the_broker_loses_it(
    broker: Broker, serial_pair: SerialPair, make_subscriber: SubscriberFactory, daemon: Daemon
) -> None:
    start(daemon, broker, serial_pair)
    # Wipe the broker: a new one without the old one's retained messages or subscriptions.
    broker.kill()
    for stale in broker.dir.glob("*.db"):
        stale.unlink()
    broker.start()
    daemon.wait_log("mqtt: connected", count=2, timeout=15)
    sub = make_subscriber("#")
    retained = {
        m.topic: m.text
        for m in sub.wait_all(
            [
                lambda m: m.topic == f"{PREFIX}/gw1/status",
                lambda m: m.topic == f"{PREFIX}/boiler/availability",
            ],
            timeout=5,
            what="the retained status and availability",
        )
    }
    assert retained == {f"{PREFIX}/gw1/status": "online", f"{PREFIX}/boiler/availability": "online"}
    sub._client.publish(f"{PREFIX}/boiler/set/raw", b"AGAIN", qos=1)  # re-subscribed?
    assert sub.wait_for(lambda m: m.topic == f"{PREFIX}/boiler/set/raw/result").text == "ok"


@pytest.mark.rabbitmq
@pytest.mark.timeout(180)
@pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
def test_state_is_restored_after_a_rabbitmq_restart(
    broker: MqttBroker, serial_pair: SerialPair, make_subscriber: SubscriberFactory, daemon: Daemon
) -> None:
    """RabbitMQ writes its retained store a moment (about 2 s) after the last change, so a kill
    right after the gateway connected loses the status and availability it had published. The
    gateway publishes them again on the reconnect. RabbitMQ hands retained messages only to
    subscriptions of the exact topic (not `#` or `+`), so each topic is read on its own."""
    start(daemon, broker, serial_pair)
    broker.kill()
    broker.start()
    daemon.wait_log("mqtt: connected", count=2, timeout=30)
    for topic, state in (
        (f"{PREFIX}/gw1/status", "online"),
        (f"{PREFIX}/boiler/availability", "online"),
    ):
        sub = make_subscriber(topic)  # (subscribed to that topic alone: all it gets is that)
        message = sub.wait_for(lambda m: True, timeout=10)
        assert message.topic == topic
        assert message.retain
        assert message.text == state
    replies = make_subscriber(f"{PREFIX}/boiler/set/raw/result")
    replies._client.publish(f"{PREFIX}/boiler/set/raw", b"AGAIN", qos=1)  # re-subscribed?
    assert replies.wait_for(lambda m: True).text == "ok"


# -- TLS -------------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    d = tmp_path / "pki"
    d.mkdir()
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        cwd=d,
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            cwd=d,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            f"{name}.crt",
            cwd=d,
        )
    return d


@pytest.fixture
def tls_port(broker: Broker, certs: Path) -> int:
    """Add a TLS listener that requires client certificates to the test broker."""
    port = free_port()
    broker.reconfigure(
        f"listener {port} 127.0.0.1",
        f"cafile {certs / 'ca.crt'}",
        f"certfile {certs / 'server.crt'}",
        f"keyfile {certs / 'server.key'}",
        "require_certificate true",
    )
    return port


def test_mutual_tls_with_client_certificate(
    broker: Broker,
    tls_port: int,
    certs: Path,
    serial_pair: SerialPair,
    subscriber: Subscriber,
    daemon: Daemon,
) -> None:
    tls = {
        "ca_file": str(certs / "ca.crt"),
        "cert_file": str(certs / "client.crt"),
        "key_file": str(certs / "client.key"),
    }
    start(daemon, broker, serial_pair, port=tls_port, tls=tls)
    serial_pair.write(b"temp=19.5\n")
    subscriber.wait_for(lambda m: m.topic == f"{PREFIX}/boiler/temp" and m.value == 19.5)


def test_tls_without_client_certificate_is_refused_and_retried(
    broker: Broker, tls_port: int, certs: Path, serial_pair: SerialPair, daemon: Daemon
) -> None:
    device = serial_device("boiler", serial_pair)
    cfg = gateway_config(
        broker, [device], mqtt={"port": tls_port, "tls": {"ca_file": str(certs / "ca.crt")}}
    )
    daemon.start(cfg)
    daemon.wait_log("link mqtt: starting -> backing_off", timeout=10)
    daemon.wait_log("retry 2 in", timeout=10)  # it keeps trying, it does not give up
    assert "mqtt: connected" not in daemon.log()
    assert daemon.alive
