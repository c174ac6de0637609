"""Real parts for end-to-end tests: a mosquitto broker, socat pty pairs, an MQTT subscriber and the
gateway daemon as a subprocess. No mocks: every helper drives a real process or socket.

Waits are event driven where a real event exists (paho callbacks signal a Condition) and otherwise
poll cheaply (every 20 ms) until a deadline, so a test is as fast as the system under test and a
hang fails with a message that says what was awaited.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

import pytest
import yaml
from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage, MQTTv311
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.models import Reading
from gateway.mqtt.topics import reading_fields
from gateway.outbox import Outbox, Record

T = TypeVar("T")

HOST = "127.0.0.1"
POLL = 0.02  # seconds between checks of a condition that has no event to wait on

#: Backoff that keeps retries fast in tests; set through the config, like a user would.
FAST_BACKOFF: dict[str, float] = {
    "initial": 0.05,
    "max": 0.5,
    "multiplier": 2.0,
    "reset_after": 1.0,
}

_unique = itertools.count(1)


def unique() -> int:
    """A number no other call in this test process returns: marks a reading as ours."""
    return next(_unique)


def missing_programs(*names: str) -> list[str]:
    return [name for name in names if shutil.which(name) is None]


# -- waiting -----------------------------------------------------------------------------------


def wait_until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll `check` until it returns something other than None/False; raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(POLL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=0.2).close()
    except OSError:
        return False
    return True


def wait_port(port: int, *, up: bool = True, timeout: float = 5.0) -> None:
    wait_until(lambda: port_open(port) == up, timeout, f"port {port} {'up' if up else 'down'}")


def wait_path(path: str, *, exists: bool = True, timeout: float = 5.0) -> None:
    state = "to appear" if exists else "to go away"
    wait_until(lambda: os.path.lexists(path) == exists, timeout, f"{path} {state}")


def process_state(pid: int) -> str:
    """The one-letter state from /proc/PID/stat: R, S, T (stopped), Z, ..."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def _stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGKILL) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)
        proc.wait(5)


# -- MQTT broker ---------------------------------------------------------------------------------


class Address(Protocol):
    """Where a broker listens: all a gateway's config needs of it."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


class MqttBroker(Protocol):
    """What tests use of a broker: `helpers.Broker` (mosquitto) and `RabbitBroker` both fit."""

    host: str
    port: int

    @property
    def running(self) -> bool: ...

    @property
    def proc_pid(self) -> int: ...

    def start(self) -> None: ...

    def kill(self) -> None: ...

    def restart(self) -> None: ...

    def freeze(self) -> None: ...

    def thaw(self) -> None: ...

    def log(self) -> str: ...

    def close(self) -> None: ...


# Run a test against mosquitto and against RabbitMQ (the `broker` fixture, indirectly). A
# RabbitMQ node starts from a template copy in 3-9 s: the timeout leaves room for it.
both_brokers = pytest.mark.parametrize(
    "broker",
    [
        "mosquitto",
        pytest.param("rabbitmq", marks=[pytest.mark.rabbitmq, pytest.mark.timeout(180)]),
    ],
    indirect=True,
)


class Broker:
    """A real mosquitto on a free loopback port that can be killed and restarted on that port.

    It cannot drop what it accepted for a subscriber, so that the tests measure the gateway, not
    the broker: `max_queued_messages 0` lifts mosquitto's default cap of 1000 messages queued per
    slow or reconnecting subscriber (past it mosquitto logs "Outgoing messages are being dropped"
    and discards them). Persistence is on, saved every second (not on every change, which writes
    the whole database per message and made the broker the slowest part), so that a persistent
    subscriber's session and retained messages survive a SIGKILL as they would with a production
    broker: readings the gateway publishes right after a restart are queued for the subscriber."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.host = HOST
        self.dir = workdir / "mosquitto"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "mosquitto.conf"
        self.log_path = self.dir / "mosquitto.log"
        user = pwd.getpwuid(os.geteuid()).pw_name  # as root, mosquitto would switch users
        self.conf.write_text(
            f"listener {self.port} {HOST}\n"
            "allow_anonymous true\n"
            f"user {user}\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            "autosave_interval 1\n"
            "autosave_on_changes false\n"
            "max_queued_messages 0\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running:
            raise RuntimeError("broker already running")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                ["mosquitto", "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_port(self.port)
        except TimeoutError:
            self.close()
            raise

    def kill(self) -> None:
        """SIGKILL: no goodbye to any client; wait until the port refuses connections."""
        _stop_process(self.proc, signal.SIGKILL)
        wait_port(self.port, up=False)

    def restart(self) -> None:
        self.kill()
        self.start()

    def reconfigure(self, *lines: str) -> None:
        """Append lines to mosquitto.conf and restart on the same port."""
        with self.conf.open("a") as conf:
            conf.write("".join(f"{line}\n" for line in lines))
        self.restart()

    def persist(self) -> None:
        """Save the broker's database now (SIGUSR1) and wait until it is on disk: a persistent
        session made just before (a subscriber's) then survives a SIGKILL that comes before the
        next autosave."""
        db = self.dir / "mosquitto.db"
        before = db.stat().st_mtime_ns if db.exists() else 0
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)
        wait_until(
            lambda: (db.exists() and db.stat().st_mtime_ns != before) or None,
            5.0,
            "mosquitto to save its database",
        )

    def freeze(self) -> None:
        """SIGSTOP: TCP still connects (kernel backlog), nothing answers: a silent partition.
        Returns once the broker is really stopped, not merely signalled."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        wait_until(lambda: process_state(self.proc_pid) == "T", 5.0, "mosquitto to stop")

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        wait_until(lambda: process_state(self.proc_pid) != "T", 5.0, "mosquitto to continue")

    @property
    def proc_pid(self) -> int:
        assert self.proc is not None, "broker not started"
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        _stop_process(self.proc, signal.SIGKILL)  # SIGKILL also ends a frozen process


# -- serial: a socat pty pair ----------------------------------------------------------------


class SerialPair:
    """`socat pty,link=dev pty,link=peer`: the daemon opens `.dev`, the test writes `.peer`.

    Unplugging terminates socat, which removes both links and hangs up the ptys, like pulling a
    USB-serial adapter; plugging starts a new socat on the same link paths (new /dev/pts nodes)."""

    def __init__(self, workdir: Path, name: str = "GW0") -> None:
        self.dev = str(workdir / f"tty{name}")
        self.peer = str(workdir / f"tty{name}.peer")
        self.log_path = workdir / f"socat-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def plugged(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def realpath(self) -> str:
        """The /dev/pts node the daemon holds while it has the port open."""
        return os.path.realpath(self.dev)

    def plug(self) -> None:
        if self.plugged:
            raise RuntimeError(f"{self.dev} is already plugged")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    "socat",
                    f"pty,raw,echo=0,link={self.dev}",
                    f"pty,raw,echo=0,link={self.peer}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_path(self.dev)
        wait_path(self.peer)

    def unplug(self) -> None:
        _stop_process(self.proc, signal.SIGTERM)
        wait_path(self.dev, exists=False)  # socat removes its links on SIGTERM

    def write(self, data: bytes) -> None:
        fd = os.open(self.peer, os.O_WRONLY | os.O_NOCTTY)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def close(self) -> None:
        _stop_process(self.proc, signal.SIGTERM)


# -- MQTT subscriber -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    retain: bool
    qos: int
    received: float = field(default_factory=time.monotonic)

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", errors="replace")

    @property
    def data(self) -> dict[str, Any] | None:
        """The reading payload `{"value":..,"unit":..,"ts":..}`, or None for other payloads."""
        try:
            obj = json.loads(self.payload)
        except ValueError:
            return None
        return obj if isinstance(obj, dict) else None

    @property
    def value(self) -> Any:
        data = self.data
        return None if data is None else data.get("value")


def is_reading(topic: str, value: object) -> Callable[[Message], bool]:
    """A predicate: a reading published on `topic` with this value."""
    return lambda m: m.topic == topic and m.value == value


class Subscriber:
    """A paho-mqtt 2.x client (callback API v2) running its network loop in a thread.

    It subscribes again on every (re)connect; `persistent=True` uses a persistent session (clean
    session off, QoS 1), so messages published while it was disconnected wait at the broker."""

    def __init__(
        self, broker: MqttBroker, topic: str = "#", *, persistent: bool = False, name: str = "sub"
    ) -> None:
        self.broker = broker
        self.topic = topic
        self.persistent = persistent
        self.client_id = f"e2e-{name}-{os.getpid()}-{unique()}"
        self._messages: list[Message] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=not persistent,
            protocol=MQTTv311,
        )
        self._client.reconnect_delay_set(min_delay=1, max_delay=1)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    # paho callbacks run in paho's thread: only record and notify.
    def _on_connect(
        self,
        client: Client,
        userdata: Any,
        flags: ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if not reason.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_subscribe(
        self,
        client: Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self._subscribed.set()

    def _on_disconnect(
        self,
        client: Client,
        userdata: Any,
        flags: DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._subscribed.clear()

    def _on_message(self, client: Client, userdata: Any, msg: MQTTMessage) -> None:
        message = Message(msg.topic, bytes(msg.payload), bool(msg.retain), int(msg.qos))
        with self._cond:
            self._messages.append(message)
            self._cond.notify_all()

    def connect(self, timeout: float = 5.0) -> Self:
        self._client.connect(self.broker.host, self.broker.port, keepalive=10)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            raise TimeoutError(f"subscriber {self.client_id} did not get a SUBACK")
        if self.persistent and isinstance(self.broker, Broker):
            self.broker.persist()  # the session must survive a broker SIGKILL from now on
        return self

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def messages(self) -> list[Message]:
        with self._cond:
            return list(self._messages)

    def on_topic(self, topic: str) -> list[Message]:
        return [m for m in self.messages if m.topic == topic]

    def wait_for(
        self, predicate: Callable[[Message], bool], timeout: float = 5.0, what: str = "a message"
    ) -> Message:
        """The first message (received so far or later) that matches `predicate`."""

        def find() -> Message | None:
            return next((m for m in self._messages if predicate(m)), None)

        with self._cond:
            found = self._cond.wait_for(find, timeout)
        if found is None:
            recent = ", ".join(f"{m.topic}={m.text[:40]}" for m in self.messages[-8:])
            raise TimeoutError(f"no {what} within {timeout:g}s; last messages: [{recent}]")
        return found

    def wait_value(self, topic: str, value: object, timeout: float = 5.0) -> Message:
        return self.wait_for(is_reading(topic, value), timeout, f"{topic} = {value!r}")

    def wait_all(
        self, predicates: Sequence[Callable[[Message], bool]], timeout: float, what: str
    ) -> list[Message]:
        """One matching message per predicate, all within one deadline."""

        def find_all() -> list[Message] | None:
            found = [next((m for m in self._messages if p(m)), None) for p in predicates]
            return None if None in found else [m for m in found if m is not None]

        with self._cond:
            result = self._cond.wait_for(find_all, timeout)
        if result is None:
            raise TimeoutError(f"not all of {what} within {timeout:g}s")
        return result


class SubscriberFactory(Protocol):
    """The `make_subscriber` fixture."""

    def __call__(self, topic: str = "#", *, persistent: bool = False) -> Subscriber: ...


SerialPairFactory = Callable[[str], SerialPair]  # the `make_serial_pair` fixture


# -- the gateway daemon --------------------------------------------------------------------------


def serial_device(
    device_id: str, pair: SerialPair, sensors: Mapping[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    device: dict[str, Any] = {
        "id": device_id,
        "type": "serial",
        "port": pair.dev,
        "backoff": dict(FAST_BACKOFF),
    }
    if sensors is not None:
        device["sensors"] = dict(sensors)
    device.update(extra)
    return device


def gateway_config(
    broker: Address,
    devices: Sequence[Mapping[str, Any]],
    *,
    gateway_id: str = "gw1",
    shutdown_timeout: float = 3.0,
    state_dir: Path | None = None,
    mqtt: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    gateway: dict[str, Any] = {
        "id": gateway_id,
        "shutdown_timeout": shutdown_timeout,
        # The outbox lives here: relative to the config file, so each test has its own.
        "state_dir": str(state_dir) if state_dir is not None else "state",
    }
    return {
        "gateway": gateway,
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "keepalive": 5,
            "connect_timeout": 2.0,
            "publish_timeout": 5.0,
            "backoff": dict(FAST_BACKOFF),
            **(mqtt or {}),
        },
        "log": {"level": "DEBUG"},
        # A free port for /metrics etc. (logged): tests never collide with each other or with
        # a gateway running on the default port.
        "metrics": {"port": 0},
        "devices": [dict(d) for d in devices],
    }


def run_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """`python -m gateway ARGS` to completion (check-config, schema)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Daemon:
    """`python -m gateway run -c CONF` as a subprocess, its stderr (the log) kept in a file."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.config_path = workdir / "gateway.yaml"
        self.log_path = workdir / "gateway.log"  # the daemon's stderr
        self.stdout_path = workdir / "gateway.stdout"
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self, config: Mapping[str, Any] | str) -> Path:
        """Write the config file atomically (a SIGHUP never reads half a file)."""
        text = config if isinstance(config, str) else yaml.safe_dump(dict(config), sort_keys=False)
        tmp = self.config_path.with_name(self.config_path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.config_path)
        return self.config_path

    def start(self, config: Mapping[str, Any] | str | None = None) -> Self:
        if self.proc is not None:
            raise RuntimeError("daemon already started")
        if config is not None:
            self.write_config(config)
        with self.stdout_path.open("ab") as out, self.log_path.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.workdir,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "daemon not started"
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def fds(self) -> dict[int, str]:
        """What each open fd of the daemon points at (readlink of /proc/PID/fd/N)."""
        base = f"/proc/{self.pid}/fd"
        out: dict[int, str] = {}
        for name in os.listdir(base):
            try:
                out[int(name)] = os.readlink(f"{base}/{name}")
            except FileNotFoundError:  # closed between listdir and readlink
                continue
        return out

    def pty_fds(self) -> list[str]:
        return sorted(t for t in self.fds().values() if t.startswith("/dev/pts/"))

    def signal(self, sig: int) -> None:
        assert self.proc is not None, "daemon not started"
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; its exit code (subprocess.TimeoutExpired if not)."""
        assert self.proc is not None, "daemon not started"
        return self.proc.wait(timeout)

    def log(self) -> str:
        """Everything the daemon wrote to stderr so far."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_time(self, text: str) -> float:
        """When the daemon logged the first line containing `text` (epoch seconds)."""
        for line in self.log().splitlines():
            if text in line:
                stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                return stamp.replace(tzinfo=UTC).timestamp()  # the text format logs UTC
        raise AssertionError(f"{text!r} is not in the daemon log:\n{self.log()}")

    def log_count(self, text: str) -> int:
        return self.log().count(text)

    def wait_log(self, text: str, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until `text` occurs at least `count` times in the log; fail early if the daemon
        exits meanwhile."""

        def seen() -> bool:
            if self.log_count(text) >= count:
                return True
            if not self.alive:
                raise AssertionError(
                    f"daemon exited ({self.returncode}) before logging {text!r}:\n{self.log()}"
                )
            return False

        wait_until(seen, timeout, f"{text!r} x{count} in the daemon log")

    def close(self) -> None:
        _stop_process(self.proc, signal.SIGKILL)


class PeerReader:
    """The device's side of a pty pair, read without blocking: everything the gateway wrote."""

    def __init__(self, pair: SerialPair) -> None:
        self.fd = os.open(pair.peer, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        self.got = b""

    def read(self) -> bytes:
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.fd, 65536):
                self.got += chunk
        return self.got

    def wait_for(self, want: bytes, timeout: float = 5.0) -> bytes:
        wait_until(lambda: want in self.read(), timeout, f"{want!r} written")
        return self.got

    def close(self) -> None:
        os.close(self.fd)


def wait_consumed(daemon: Daemon, pair: SerialPair, timeout: float = 5.0) -> None:
    """Return once the daemon has read (and queued the readings of) every line written to `pair`
    so far. Lines are decoded in order, so we write a line the decoder rejects and wait for the
    daemon to log skipping it (DEBUG level, as `gateway_config` sets). Kernel queue sizes cannot
    tell: a pty pair in socat's hands hides bytes in transit."""
    mark = f"sync-{unique()}"
    pair.write(f"{mark}\n".encode())
    daemon.wait_log(f"frame b'{mark}'", timeout=timeout)


# -- one reading end to end ------------------------------------------------------------------


def send_until_seen(
    pair: SerialPair,
    sub: Subscriber,
    topic_prefix: str,
    device_id: str,
    timeout: float = 10.0,
) -> int:
    """Write `seq=N` (N unique) to the device until the subscriber sees it published; return N.

    Repeating the line covers the moments the daemon does not read yet: pyserial flushes the
    input queue when it opens a port, so a line written just before that is gone."""
    mark = unique()
    topic = f"{topic_prefix}/{device_id}/seq"
    deadline = time.monotonic() + timeout
    while True:
        pair.write(f"seq={mark}\n".encode())
        remaining = deadline - time.monotonic()
        try:
            sub.wait_value(topic, mark, timeout=max(0.0, min(0.5, remaining)))
        except TimeoutError:
            if remaining <= 0.5:
                raise
        else:
            return mark


def put_reading(box: Outbox, reading: Reading, topic: str, qos: int = 1) -> Record | None:
    """A reading into the outbox as the encoder puts it (its fields; the seq comes from the
    outbox), for the outbox's own tests."""
    fields = reading_fields(reading)
    return box.put(reading.device, topic, reading.sensor, fields, qos, reading.ts)
