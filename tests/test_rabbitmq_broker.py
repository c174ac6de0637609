"""The RabbitMQ test broker itself (tests/rabbitmq.py), driven with paho-mqtt over MQTT 3.1.1:
that it delivers, dies and comes back on its port like `broker` does, leaves nothing behind,
and how its MQTT differs from mosquitto's (`RabbitBroker.MQTT_DIFFERENCES`; each test below
that asserts a difference says what mosquitto does instead).

Tests that only publish and subscribe share one node per module (`shared_rabbitmq`, unique
topics per test); tests that kill, freeze or close a node get their own (`rabbitmq`).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest
from helpers import Broker, MqttBroker, port_open, process_state, unique, wait_until
from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage, MQTTv5, MQTTv311
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from rabbitmq import RabbitBroker, _descendants, _gone, _stat, mqtt_connack

# A node boots in 3-6 s from the template (up to ~13 s on a busy machine); the first test also
# waits for the session's template node (9-12 s).
pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(180)]

TIMEOUT = 10.0


# -- a small paho client -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool


class Mqtt:
    """A paho-mqtt client with its network loop in a thread, recording what it gets."""

    def __init__(
        self,
        broker: MqttBroker,
        client_id: str | None = None,
        *,
        clean: bool = True,
        protocol: MQTTProtocolVersion = MQTTv311,
    ) -> None:
        self.broker = broker
        self.client_id = client_id or f"t-{os.getpid()}-{unique()}"
        self.connected = threading.Event()
        self.session_present: bool | None = None
        self.disconnects = 0
        self._granted: dict[int, list[int]] = {}
        self._messages: list[Received] = []
        self._cond = threading.Condition()
        extra: dict[str, Any] = {} if protocol == MQTTv5 else {"clean_session": clean}
        self.client = Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=protocol, **extra
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(
        self,
        client: Client,
        userdata: Any,
        flags: ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if not reason.is_failure:
            self.session_present = flags.session_present
            self.connected.set()

    def _on_disconnect(
        self,
        client: Client,
        userdata: Any,
        flags: DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self.disconnects += 1
            self.connected.clear()
            self._cond.notify_all()

    def _on_subscribe(
        self,
        client: Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self._granted[mid] = [r.value for r in reasons]
            self._cond.notify_all()

    def _on_message(self, client: Client, userdata: Any, msg: MQTTMessage) -> None:
        got = Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), bool(msg.dup))
        with self._cond:
            self._messages.append(got)
            self._cond.notify_all()

    def connect(self) -> Self:
        self.client.connect(self.broker.host, self.broker.port, keepalive=10)
        self.client.loop_start()
        if not self.connected.wait(TIMEOUT):
            raise TimeoutError(f"{self.client_id}: no CONNACK within {TIMEOUT:g}s")
        return self

    def subscribe(self, topic: str, qos: int = 1) -> int:
        """Subscribe; the QoS the broker granted."""
        _, mid = self.client.subscribe(topic, qos)
        assert mid is not None, f"SUBSCRIBE {topic} not sent"
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._granted, TIMEOUT):
                raise TimeoutError(f"no SUBACK for {topic}")
            return self._granted[mid][0]

    def publish(self, topic: str, payload: bytes, qos: int = 1, *, retain: bool = False) -> None:
        """Publish; with QoS > 0, return once the broker acknowledged it."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos:
            info.wait_for_publish(TIMEOUT)
            assert info.is_published(), f"{topic}: not acknowledged within {TIMEOUT:g}s"

    @property
    def messages(self) -> list[Received]:
        with self._cond:
            return list(self._messages)

    def wait_for(self, predicate: Callable[[Received], bool], what: str) -> Received:
        def find() -> Received | None:
            return next((m for m in self._messages if predicate(m)), None)

        with self._cond:
            found = self._cond.wait_for(find, TIMEOUT)
        if found is None:
            raise TimeoutError(f"no {what} within {TIMEOUT:g}s; got {self.messages}")
        return found

    def wait_payload(self, payload: bytes) -> Received:
        return self.wait_for(lambda m: m.payload == payload, f"message {payload!r}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


ClientFactory = Callable[..., Mqtt]


@pytest.fixture
def make_client() -> Iterator[ClientFactory]:
    """`make_client(broker, client_id=None, clean=True, protocol=MQTTv311)`, not connected."""
    clients: list[Mqtt] = []

    def make(broker: MqttBroker, *args: Any, **kwargs: Any) -> Mqtt:
        client = Mqtt(broker, *args, **kwargs)
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            client.close()


@pytest.fixture(scope="module")
def shared_rabbitmq(
    tmp_path_factory: pytest.TempPathFactory, rabbitmq_template: Path
) -> Iterator[RabbitBroker]:
    """One node for the tests that only publish and subscribe (each on its own topics)."""
    node = RabbitBroker(tmp_path_factory.mktemp("rabbitmq-shared"), template=rabbitmq_template)
    node.start()
    try:
        yield node
    finally:
        node.close()


def marker() -> bytes:
    return f"m{unique()}-{os.getpid()}".encode()


def raw_connect(port: int) -> socket.socket:
    """A socket with an accepted MQTT 3.1.1 session (clean, client ID `raw-PID-N`)."""
    client_id = f"raw-{os.getpid()}-{unique()}".encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(client_id).to_bytes(2, "big") + client_id
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.sendall(bytes([0x10, len(variable)]) + variable)
    assert recv_exactly(sock, 4) == b"\x20\x02\x00\x00"  # CONNACK, accepted
    return sock


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    return data


def listening(pid: int) -> set[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """The (address, port) of every TCP socket `pid` listens on."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found: set[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                    continue
                hex_addr, hex_port = fields[1].split(":")
                raw = bytes.fromhex(hex_addr)  # 32-bit words in host (little endian) order
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add((ipaddress.ip_address(raw), int(hex_port, 16)))
    return found


# -- the fixture: lifecycle ----------------------------------------------------------------------


def test_both_brokers_have_one_interface(tmp_path: Path) -> None:
    # mypy checks that both fit MqttBroker; neither is started here.
    brokers: list[MqttBroker] = [Broker(tmp_path), RabbitBroker(tmp_path)]
    assert [b.host for b in brokers] == ["127.0.0.1", "127.0.0.1"]
    assert not any(b.running for b in brokers)


def test_qos1_publish_is_received(rabbitmq: RabbitBroker, make_client: ClientFactory) -> None:
    sub = make_client(rabbitmq).connect()
    assert sub.subscribe("gw/+/temp", qos=1) == 1
    pub = make_client(rabbitmq).connect()
    payload = marker()
    pub.publish("gw/dev1/temp", payload, qos=1)  # returns on PUBACK
    got = sub.wait_payload(payload)
    assert (got.topic, got.qos, got.retain) == ("gw/dev1/temp", 1, False)


def test_kill_and_restart_on_the_same_port(
    rabbitmq: RabbitBroker, make_client: ClientFactory
) -> None:
    port, beam = rabbitmq.port, rabbitmq.proc_pid
    assert rabbitmq.proc is not None
    processes = _descendants(rabbitmq.proc.pid)  # beam.smp, erl_child_setup, inet_gethost
    before = make_client(rabbitmq).connect()

    rabbitmq.kill()
    assert not rabbitmq.running
    # Dead and reaped: not even a zombie is left for PID 1 (orphans are reaped by the test).
    assert all(_gone(*p) for p in processes.items()), {p: _stat(p) for p in processes}
    assert not port_open(port)  # refuses: kill() waited for that
    wait_until(lambda: before.disconnects > 0, TIMEOUT, "the client to notice the kill")

    rabbitmq.start()
    assert rabbitmq.running
    assert rabbitmq.port == port
    assert rabbitmq.proc_pid != beam
    assert mqtt_connack(port) == 0
    after = make_client(rabbitmq).connect()  # a new client connects again
    after.subscribe("after/restart")
    payload = marker()
    after.publish("after/restart", payload)
    assert after.wait_payload(payload).topic == "after/restart"
    # The old client reconnects by itself (paho's loop, 1 s delay) to the same port.
    assert before.connected.wait(TIMEOUT)


def test_persistent_session_keeps_qos1_across_sigkill_but_not_qos0(
    rabbitmq: RabbitBroker, make_client: ClientFactory
) -> None:
    sub_id = f"persist-{os.getpid()}-{unique()}"
    first = make_client(rabbitmq, sub_id, clean=False).connect()
    assert first.session_present is False
    first.subscribe("ps/#", qos=1)
    first.close()
    pub = make_client(rabbitmq).connect()

    # Offline, without a restart: RabbitMQ queues QoS 0 messages too (mosquitto by default
    # queues only QoS 1 and 2 for an offline persistent client).
    q0, q1 = marker(), marker()
    pub.publish("ps/a", q0, qos=0)
    pub.publish("ps/a", q1, qos=1)
    back = make_client(rabbitmq, sub_id, clean=False).connect()
    assert back.session_present is True
    back.wait_payload(q1)
    assert [m.payload for m in back.messages] == [q0, q1]  # one queue: in publish order
    back.close()

    # Offline again; SIGKILL at once after the last PUBACK. A PUBACK means the QoS 1 message
    # is on disk in the session's durable queue: all come back, as redeliveries (dup=1).
    # QoS 0 messages are kept in memory only: lost. (mosquitto as helpers.Broker runs it
    # loses what changed in the last ~1 s before a SIGKILL, QoS 1 included.)
    lost = [marker(), marker()]
    kept = [marker() for _ in range(20)]
    for payload in lost:
        pub.publish("ps/b", payload, qos=0)
    for payload in kept:
        pub.publish("ps/b", payload, qos=1)
    pub.close()
    rabbitmq.kill()
    rabbitmq.start()
    after = make_client(rabbitmq, sub_id, clean=False).connect()
    assert after.session_present is True
    for payload in kept:
        after.wait_payload(payload)
    got = after.messages  # the lost ones were queued first: they would have come first
    assert [m.payload for m in got] == kept
    assert all(m.qos == 1 and m.dup for m in got)


def test_retained_survives_sigkill_only_once_written(
    rabbitmq: RabbitBroker, make_client: ClientFactory
) -> None:
    """The retained store is a DETS file in the node's data dir, written 2 s after the last
    retained change (mqtt.retained_message_store_dets_sync_interval): one retained just before
    a SIGKILL is lost, one written to the file survives."""
    pub = make_client(rabbitmq).connect()
    kept, lost = marker(), marker()

    def on_disk(payload: bytes) -> bool:
        return any(payload in f.read_bytes() for f in rabbitmq.mnesia_dir.glob("*/mqtt_retained*"))

    pub.publish("keep/r", kept, retain=True)
    assert not on_disk(kept)  # acknowledged, but not written yet
    wait_until(lambda: on_disk(kept), 15.0, "the retained store to be written")
    pub.publish("lose/r", lost, retain=True)
    assert not on_disk(lost)
    pub.close()
    rabbitmq.restart()  # kill() + start()

    sub = make_client(rabbitmq).connect()
    sub.subscribe("keep/r")
    assert sub.wait_payload(kept).retain
    sub.subscribe("lose/r")
    live = marker()
    make_client(rabbitmq).connect().publish("lose/r", live)
    sub.wait_payload(live)  # a retained copy would have come on SUBSCRIBE, before this one
    assert [m.payload for m in sub.messages] == [kept, live]


def test_freeze_and_thaw(rabbitmq: RabbitBroker, make_client: ClientFactory) -> None:
    rabbitmq.freeze()
    assert process_state(rabbitmq.proc_pid) == "T"
    assert port_open(rabbitmq.port)  # the kernel still accepts TCP connections...
    assert mqtt_connack(rabbitmq.port, timeout=1.0) is None  # ...but nothing answers
    rabbitmq.thaw()
    assert process_state(rabbitmq.proc_pid) != "T"
    wait_until(lambda: mqtt_connack(rabbitmq.port) == 0, TIMEOUT, "CONNACK after thaw")
    assert make_client(rabbitmq).connect().connected.is_set()
    rabbitmq.freeze()
    rabbitmq.close()  # SIGKILL ends a stopped process too
    assert not rabbitmq.running
    assert not port_open(rabbitmq.port)


def test_loopback_only_and_close_leaves_no_process(rabbitmq: RabbitBroker) -> None:
    assert rabbitmq.proc is not None
    assert rabbitmq.epmd is not None
    beam, epmd = rabbitmq.proc_pid, rabbitmq.epmd.pid
    beam_sockets, epmd_sockets = listening(beam), listening(epmd)
    assert {port for _, port in beam_sockets} == {
        rabbitmq.port,
        rabbitmq.amqp_port,
        rabbitmq.dist_port,
    }
    assert {port for _, port in epmd_sockets} == {rabbitmq.epmd_port}
    assert all(address.is_loopback for address, _ in beam_sockets | epmd_sockets)

    processes = _descendants(rabbitmq.proc.pid)  # beam.smp, erl_child_setup, inet_gethost
    for pid in (rabbitmq.proc.pid, epmd):
        stat = _stat(pid)
        assert stat is not None
        processes[pid] = stat.starttime
    assert {s.comm for p in processes if (s := _stat(p))} >= {
        "rabbitmq-server",
        "beam.smp",
        "erl_child_setup",
        "epmd",
    }
    rabbitmq.close()
    assert not rabbitmq.running
    assert all(_gone(*p) for p in processes.items()), {p: _stat(p) for p in processes}
    assert not port_open(rabbitmq.port)
    assert not port_open(rabbitmq.epmd_port)
    rabbitmq.close()  # idempotent


# -- how its MQTT differs from mosquitto ---------------------------------------------------------


def test_mqtt5_is_refused(shared_rabbitmq: RabbitBroker, make_client: ClientFactory) -> None:
    # mosquitto 2.0 accepts MQTT 5.
    v5 = make_client(shared_rabbitmq, protocol=MQTTv5)
    v5.client.connect(shared_rabbitmq.host, shared_rabbitmq.port, keepalive=10)
    v5.client.loop_start()
    wait_until(lambda: v5.disconnects > 0, TIMEOUT, "the v5 connection to be closed")
    assert not v5.connected.is_set()  # never a CONNACK
    # The log file is written with a delay.
    wait_until(
        lambda: "MQTT cannot parse a frame" in shared_rabbitmq.log(), TIMEOUT, "the parse error"
    )


def test_qos2_is_downgraded_to_qos1(
    shared_rabbitmq: RabbitBroker, make_client: ClientFactory
) -> None:
    # mosquitto grants QoS 2, answers PUBREC and delivers with QoS 2.
    sub = make_client(shared_rabbitmq).connect()
    assert sub.subscribe("q2/t", qos=2) == 1
    pub = make_client(shared_rabbitmq).connect()
    payload = marker()
    pub.publish("q2/t", payload, qos=2)  # paho takes the PUBACK as the end of the exchange
    assert sub.wait_payload(payload).qos == 1

    with raw_connect(shared_rabbitmq.port) as sock:
        body = len(b"q2/raw").to_bytes(2, "big") + b"q2/raw" + b"\x00\x07" + b"x"
        sock.sendall(bytes([0x34, len(body)]) + body)  # PUBLISH, QoS 2, packet ID 7
        assert recv_exactly(sock, 4) == b"\x40\x02\x00\x07"  # PUBACK, not PUBREC (0x50)


def test_retained_only_for_exact_topic_subscriptions(
    shared_rabbitmq: RabbitBroker, make_client: ClientFactory
) -> None:
    # mosquitto sends the retained message to all three subscriptions.
    pub = make_client(shared_rabbitmq).connect()
    retained = marker()
    pub.publish("ret/a", retained, retain=True)
    exact, hash_sub, plus = (make_client(shared_rabbitmq).connect() for _ in range(3))
    exact.subscribe("ret/a")
    hash_sub.subscribe("ret/#")
    plus.subscribe("ret/+")
    got = exact.wait_payload(retained)
    assert (got.topic, got.retain) == ("ret/a", True)
    live = marker()
    pub.publish("ret/a", live)  # not retained; comes after any retained copy
    for sub in (hash_sub, plus):
        sub.wait_payload(live)
        assert [(m.payload, m.retain) for m in sub.messages] == [(live, False)]

    pub.publish("ret/a", b"", retain=True)  # clears it, as with mosquitto
    later = make_client(shared_rabbitmq).connect()
    later.subscribe("ret/a")
    live = marker()
    pub.publish("ret/a", live)
    later.wait_payload(live)
    assert [m.payload for m in later.messages] == [live]


def test_dot_is_a_topic_level_separator(
    shared_rabbitmq: RabbitBroker, make_client: ClientFactory
) -> None:
    # mosquitto: `dot/a.b` is one level named "a.b"; it matches `dot/+` only.
    one_level = make_client(shared_rabbitmq).connect()
    one_level.subscribe("dot/+")
    two_levels = make_client(shared_rabbitmq).connect()
    two_levels.subscribe("dot/+/+")
    slash = make_client(shared_rabbitmq).connect()
    slash.subscribe("plain/a/b")
    pub = make_client(shared_rabbitmq).connect()
    dotted, end, plain = marker(), marker(), marker()
    pub.publish("dot/a.b", dotted)
    pub.publish("dot/end", end)
    pub.publish("plain.a.b", plain)

    assert two_levels.wait_payload(dotted).topic == "dot/a/b"  # delivered with '/' for '.'
    one_level.wait_payload(end)
    assert [m.payload for m in one_level.messages] == [end]
    assert slash.wait_payload(plain).topic == "plain/a/b"
