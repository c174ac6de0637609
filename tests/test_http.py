"""The HTTP endpoint: real requests to the daemon (a subprocess) against a real mosquitto and real
ptys, plus the server as an async context manager in-process (it owns its socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import resource
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    HOST,
    Broker,
    Daemon,
    SerialPair,
    Subscriber,
    gateway_config,
    port_open,
    send_until_seen,
    serial_device,
    wait_consumed,
    wait_until,
)
from httpprobe import endpoint, get, sample, scrape, status

import gateway
from gateway.config import MetricsSection
from gateway.errors import HttpServerError
from gateway.health import Verdict
from gateway.http import Endpoints, HttpLimits, HttpServer
from gateway.metrics import Metrics

pytestmark = pytest.mark.timeout(40)

PREFIX = "gateway"
ROOT = Path(__file__).resolve().parent.parent


def boiler_config(broker: Broker, pair: SerialPair, **metrics: Any) -> dict[str, Any]:
    config = gateway_config(
        broker, [serial_device("boiler", pair, {"temp": {"unit": "°C"}, "hum": {"unit": "%"}})]
    )
    config["metrics"].update(metrics)
    return config


def test_endpoints_report_links_readings_and_the_outbox(
    broker: Broker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    daemon.start(boiler_config(broker, serial_pair, sensor_values=True))
    base = endpoint(daemon)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base)  # port 0: a free port, logged
    send_until_seen(serial_pair, subscriber, PREFIX, "boiler")
    before = time.time()
    serial_pair.write(b"temp=21.5,hum=40,state=idle\n")
    subscriber.wait_value(f"{PREFIX}/boiler/temp", 21.5)

    assert get(f"{base}/healthz").json() == {"status": "ok", "reasons": []}
    ready = get(f"{base}/readyz")
    assert (ready.status, ready.json()["status"]) == (200, "ok")

    doc = status(base)
    assert doc["ready"] is True
    # The keys scripts read stay; the status page's came beside them.
    assert doc["mqtt"]["connected"] is True
    assert (doc["mqtt"]["host"], doc["mqtt"]["reason"], doc["mqtt"]["reconnects"]) == (
        broker.host,
        None,
        0,
    )
    assert {name: link["state"] for name, link in doc["links"].items()} == {
        "mqtt": "up",
        "serial:boiler": "up",
    }
    device = doc["devices"]["boiler"]
    assert device["state"] == "up"
    assert device["last_seen"] >= before - 1
    assert doc["outbox"]["high_water"] == 10_000

    samples = scrape(base)
    assert sample(samples, "gateway_link_up", link="serial:boiler") == 1
    assert sample(samples, "gateway_link_state", link="mqtt", state="up") == 1
    assert (sample(samples, "gateway_readings_received_total", device="boiler") or 0) >= 3
    assert (sample(samples, "gateway_readings_published_total", device="boiler") or 0) >= 2
    last = sample(samples, "gateway_last_reading_timestamp_seconds", device="boiler")
    assert last is not None
    assert last >= before - 1
    assert (
        sample(samples, "gateway_sensor_value", device="boiler", sensor="temp", unit="°C") == 21.5
    )
    assert sample(samples, "gateway_sensor_value", device="boiler", sensor="hum", unit="%") == 40
    # Strings have no gauge.
    assert not [k for k in samples if ("sensor", "state") in k[1]]
    assert (sample(samples, "gateway_publish_latency_seconds_count") or 0) >= 2
    assert sample(samples, "gateway_event_loop_lag_seconds") is not None
    assert sample(samples, "gateway_outbox_oldest_age_seconds") is not None
    assert any(
        name == "gateway_build_info" and ("version", gateway.__version__) in labels
        for name, labels in samples
    )
    assert sample(samples, "process_open_fds") is not None


def test_readyz_fails_while_the_broker_is_down_and_the_outbox_is_over_its_mark(
    broker: Broker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    daemon.start(boiler_config(broker, serial_pair, outbox_high_water=5))
    base = endpoint(daemon)
    send_until_seen(serial_pair, subscriber, PREFIX, "boiler")
    # send_until_seen may have sent a second reading that is still in flight: wait until the
    # outbox is empty, or the kill puts it back and the count below is one more.
    wait_until(lambda: status(base)["outbox"]["records"] == 0, 10, "the outbox to empty")
    broker.kill()
    wait_until(lambda: get(f"{base}/readyz").status == 503, 10, "/readyz to fail")
    assert get(f"{base}/readyz").json()["reasons"] == ["mqtt not connected"]

    serial_pair.write(b"".join(b"temp=%d\n" % i for i in range(8)))
    wait_consumed(daemon, serial_pair)
    time.sleep(0.3)  # let the oldest reading age a little
    reasons = get(f"{base}/readyz").json()["reasons"]
    assert reasons == ["mqtt not connected", "outbox holds 8 readings (high-water mark 5)"]
    samples = scrape(base)
    assert sample(samples, "gateway_outbox_records") == 8
    oldest = sample(samples, "gateway_outbox_oldest_age_seconds")
    assert oldest is not None
    assert oldest >= 0.3
    # Alive all the same: a broker outage is not a reason to restart the gateway.
    assert get(f"{base}/healthz").status == 200
    assert status(base)["links"]["mqtt"]["state"] in ("starting", "backing_off")

    broker.start()
    wait_until(lambda: status(base)["outbox"]["records"] == 0, 15, "the outbox to drain")
    assert get(f"{base}/readyz").status == 200
    assert sample(scrape(base), "gateway_outbox_oldest_age_seconds") == 0


def test_a_port_in_use_exits_1_with_advice(
    broker: Broker, serial_pair: SerialPair, daemon: Daemon
) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon.start(boiler_config(broker, serial_pair, port=port))
        assert daemon.wait(timeout=15) == 1
    log = daemon.log()
    assert f"cannot listen on 127.0.0.1:{port}" in log
    assert "change metrics.port" in log
    assert "Address already in use" in log


def test_disabled_metrics_serve_nothing(
    broker: Broker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    config = boiler_config(broker, serial_pair, enabled=False)
    daemon.start(config)
    send_until_seen(serial_pair, subscriber, PREFIX, "boiler")
    assert "http: serving" not in daemon.log()
    assert listening_ports(daemon) == set()


def test_the_daemon_listens_only_where_configured(
    broker: Broker, serial_pair: SerialPair, daemon: Daemon
) -> None:
    daemon.start(boiler_config(broker, serial_pair))
    base = endpoint(daemon)
    port = int(base.rsplit(":", 1)[1])
    assert listening_ports(daemon) == {("0100007F", port)}  # 127.0.0.1 (the default), one port


def listening_ports(daemon: Daemon) -> set[tuple[str, int]]:
    """(hex address, port) of every TCP socket the daemon listens on, from /proc."""
    inodes = {t[len("socket:[") : -1] for t in daemon.fds().values() if t.startswith("socket:[")}
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{daemon.pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.add((address, int(port, 16)))
    return found


# -- in-process: the server owns its socket ------------------------------------------------------


def _endpoints(metrics: Metrics, ok: bool = True) -> Endpoints:
    verdict = Verdict(ok, [] if ok else ["link x is 1.0s overdue stopping"])
    return Endpoints(
        metrics.registry,
        refresh=lambda: metrics.outbox_oldest_age.set(42),
        liveness=lambda: verdict,
        readiness=lambda: verdict,
        status=lambda: {"hello": "world"},
    )


async def test_the_server_binds_on_enter_and_releases_the_port_on_exit() -> None:
    metrics = Metrics()
    async with HttpServer(HOST, 0, _endpoints(metrics).application()) as server:
        port = server.port
        assert port != 0
        base = f"http://{HOST}:{port}"
        reply = await asyncio.to_thread(get, f"{base}/metrics")
        assert reply.status == 200
        assert b"gateway_outbox_oldest_age_seconds 42.0" in reply.body  # refreshed on scrape
        assert (await asyncio.to_thread(get, f"{base}/status")).json() == {"hello": "world"}
        assert (await asyncio.to_thread(get, f"{base}/nope")).status == 404
    assert not port_open(port)
    # Reusable once left: the port can be bound again at once.
    async with HttpServer(HOST, port, _endpoints(metrics, ok=False).application()):
        reply = await asyncio.to_thread(get, f"http://{HOST}:{port}/healthz")
        assert reply.status == 503
        assert reply.json()["reasons"] == ["link x is 1.0s overdue stopping"]
    assert not port_open(port)


async def test_a_bad_address_is_a_clear_error() -> None:
    with pytest.raises(HttpServerError, match=r"cannot listen on 192\.0\.2\.1:0: .*metrics\.host"):
        async with HttpServer("192.0.2.1", 0, _endpoints(Metrics()).application()):
            pass


# -- every metric is documented ------------------------------------------------------------------


def test_every_metric_is_documented_in_the_docs() -> None:
    page = (ROOT / "docs" / "operations" / "metrics.md").read_text(encoding="utf-8")
    section = page.split("# Metrics\n", 1)[1].split("\n## ", 1)[0]
    first_cells = re.findall(r"^\| ([^|]+) \|", section, re.MULTILINE)
    documented = {name for cell in first_cells for name in re.findall(r"`([a-z_]+)`", cell)}
    families = {family.name for family in Metrics().registry.collect()}
    exposed = set()
    for family in Metrics().registry.collect():
        name = family.name
        if family.type == "counter":
            name += "_total"
        elif family.type == "info":
            name += "_info"
        exposed.add(name)
    assert families
    gateway_metrics = {n for n in exposed if n.startswith("gateway_")}
    assert gateway_metrics - documented == set(), "undocumented metrics"
    assert documented - exposed == set(), "documented metrics that do not exist"
    assert "process_" in section  # the process collector's metrics are named as a group


def test_the_grafana_dashboard_uses_only_metrics_that_exist() -> None:
    dashboard = json.loads((ROOT / "contrib" / "grafana" / "gateway.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {n for e in exprs for n in re.findall(r"\b((?:gateway|process)_[a-z_]+)", e)}
    suffixes = {"counter": ["_total"], "info": ["_info"], "histogram": ["_bucket", "_sum"]}
    exposed = {
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in suffixes.get(family.type, [""])
    }
    assert used
    assert used - exposed == set()


# -- the edges (issue 21): slow, idle and too many connections -----------------------------------


def raw_connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=5)


def closed_by_peer(sock: socket.socket, within: float, trickle: bytes = b"") -> bool:
    """Whether the other end closes `sock` within `within` seconds (reading what it says first),
    sending one byte of `trickle` every 0.2 s meanwhile."""
    deadline = time.monotonic() + within
    sock.settimeout(0.2)
    sent = 0
    while time.monotonic() < deadline:
        if sent < len(trickle):
            try:
                sock.send(trickle[sent : sent + 1])
            except OSError:
                return True
            sent += 1
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def refused(base: str, reason: str) -> float:
    return sample(scrape(base), "gateway_input_refused_total", edge="http", reason=reason) or 0


def limit_daemon_fds(daemon: Daemon, soft: int) -> None:
    """The daemon's own soft RLIMIT_NOFILE (its hard limit kept), as a default system gives."""
    _, hard = resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (soft, hard))


def accept_queue(port: int) -> int:
    """Connections the kernel holds for the listening socket on `port`, not yet accepted."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A":  # 0A: LISTEN
            return int(fields[4].split(":")[1], 16)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def open_idle(port: int, count: int, batch: int = 50) -> list[socket.socket]:
    """`count` connections, opened a batch at a time, each batch once the daemon has accepted
    the previous one: a full listen queue would only put the rest off, not reach the daemon."""
    clients: list[socket.socket] = []
    try:
        while len(clients) < count:
            for _ in range(min(batch, count - len(clients))):
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex((HOST, port))
                clients.append(sock)
            deadline = time.monotonic() + 2.0  # a daemon out of fds accepts no more
            while accept_queue(port) and time.monotonic() < deadline:
                time.sleep(0.02)
    except BaseException:
        for sock in clients:
            sock.close()
        raise
    return clients


@pytest.mark.timeout(120)
def test_a_thousand_idle_connections_starve_neither_mqtt_nor_healthz(
    broker: Broker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    """~1010 idle or trickling clients used every fd of a 1024 soft limit: MQTT could not
    reconnect and /healthz timed out. The connection cap keeps fds for MQTT and the ports."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    daemon.start(boiler_config(broker, serial_pair))
    limit_daemon_fds(daemon, 1024)
    base = endpoint(daemon)
    port = base.rsplit(":", 1)[1]
    send_until_seen(serial_pair, subscriber, PREFIX, "boiler")
    clients = open_idle(int(port), 1100)  # more than the daemon's 1024 fds
    try:
        for sock in clients[::2]:  # half of them trickle a request head, half say nothing
            with contextlib.suppress(OSError):
                sock.send(b"GET /healthz HTTP/1.1\r\n")
        broker.restart()
        send_until_seen(serial_pair, subscriber, PREFIX, "boiler", timeout=15)
        assert get(f"{base}/healthz", timeout=2.0).status == 200
        assert "Too many open files" not in daemon.log()
    finally:
        for sock in clients:
            sock.close()
    assert refused(base, "connections") + refused(base, "evicted") > 0


def test_a_request_head_sent_slowly_is_closed_after_the_header_timeout(
    broker: Broker, serial_pair: SerialPair, daemon: Daemon
) -> None:
    daemon.start(boiler_config(broker, serial_pair, header_timeout=1.0))
    base = endpoint(daemon)
    with raw_connect(base) as sock:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
        assert closed_by_peer(sock, within=10.0, trickle=head)
    with raw_connect(base) as sock:  # nothing sent at all: the same deadline
        assert closed_by_peer(sock, within=10.0)
    assert refused(base, "header_timeout") == 2
    assert daemon.log_count("http: closed a connection") <= 1  # logged once a minute at most


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(
    broker: Broker, serial_pair: SerialPair, daemon: Daemon
) -> None:
    daemon.start(boiler_config(broker, serial_pair, idle_timeout=1.0))
    base = endpoint(daemon)
    with raw_connect(base) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = sock.recv(65536)
        assert reply.startswith(b"HTTP/1.1 200 ")
        assert closed_by_peer(sock, within=10.0)


def test_beyond_the_cap_the_oldest_waiting_connection_makes_room(
    broker: Broker, serial_pair: SerialPair, daemon: Daemon
) -> None:
    """At metrics.max_connections a new connection closes the one that has waited longest
    without a request: idle clients cannot lock out /healthz."""
    daemon.start(boiler_config(broker, serial_pair, max_connections=4))
    base = endpoint(daemon)
    get(f"{base}/healthz")  # the server has answered once: the cap counts from here
    idle = [raw_connect(base) for _ in range(4)]
    try:
        time.sleep(0.2)  # all four accepted
        with raw_connect(base) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        assert closed_by_peer(idle[0], within=5.0)  # the oldest, at once
        assert not closed_by_peer(idle[3], within=0.5)
    finally:
        for sock in idle:
            sock.close()
    assert refused(base, "evicted") >= 1


def test_accept_errors_are_counted_and_logged_once_a_minute(
    broker: Broker, serial_pair: SerialPair, daemon: Daemon
) -> None:
    """Out of fds, accept() fails every time it is tried: asyncio logged every failure."""
    daemon.start(boiler_config(broker, serial_pair, max_connections=1000))
    base = endpoint(daemon)
    get(f"{base}/healthz")
    limit_daemon_fds(daemon, max(daemon.fds()) + 6)
    clients = []
    try:
        for _ in range(30):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", int(base.rsplit(":", 1)[1])))
            clients.append(sock)
        time.sleep(3.0)  # asyncio retried (and logged) every second
    finally:
        for sock in clients:
            sock.close()
    limit_daemon_fds(daemon, 1024)
    wait_until(lambda: refused(base, "accept_error") > 0, 10, "accept errors counted")
    assert daemon.alive
    log = daemon.log()
    assert "socket.accept() out of system resource" not in log  # asyncio's, once a second
    assert log.count("http: cannot accept connections") == 1, log


# -- the probes' headers ---------------------------------------------------------------------------


async def test_probes_are_not_cached_and_the_server_header_names_no_versions() -> None:
    metrics = Metrics()
    async with HttpServer(HOST, 0, _endpoints(metrics).application()) as server:
        for path in ("/healthz", "/readyz", "/status", "/metrics", "/nope"):
            reply = await asyncio.to_thread(head_of, f"http://{HOST}:{server.port}{path}")
            server_header = reply.get("Server", "")
            assert not re.search(r"\d", server_header), (path, server_header)
            if path in ("/healthz", "/readyz", "/status"):
                assert reply["Cache-Control"] == "no-store", path


def head_of(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.headers
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.headers


# -- in-process: connections that take their answer slowly --------------------------------------


def _big_status(metrics: Metrics) -> Endpoints:
    blob = {"blob": "x" * 8_000_000}  # more than every socket buffer between us holds
    ok = Verdict(True, [])
    return Endpoints(
        metrics.registry,
        refresh=lambda: None,
        liveness=lambda: ok,
        readiness=lambda: ok,
        status=lambda: blob,
    )


def _slow_reader(port: int) -> socket.socket:
    """A client that asks for /status and reads nothing of the answer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((HOST, port))
    sock.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


def _limits(**overrides: Any) -> HttpLimits:
    return HttpLimits.from_config(MetricsSection.model_validate(overrides))


async def test_beyond_the_cap_a_connection_is_refused_while_every_one_is_answered() -> None:
    metrics = Metrics()
    limits = _limits(max_connections=1)
    app = _big_status(metrics).application()
    async with HttpServer(HOST, 0, app, limits=limits, refused=metrics.refused) as server:
        with _slow_reader(server.port):
            await asyncio.sleep(0.5)  # the server writes until every buffer is full
            with socket.create_connection((HOST, server.port), timeout=5) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                reply = await asyncio.to_thread(sock.recv, 65536)
            assert reply.startswith(b"HTTP/1.1 503 "), reply  # refused at once, with a reason
    assert metrics.refused.labels("http", "connections")._value.get() == 1


async def test_a_client_that_does_not_read_its_answer_is_closed_after_the_send_timeout() -> None:
    metrics = Metrics()
    limits = _limits(send_timeout=0.5)
    app = _big_status(metrics).application()
    async with HttpServer(HOST, 0, app, limits=limits, refused=metrics.refused) as server:
        with _slow_reader(server.port):
            for _ in range(100):
                await asyncio.sleep(0.1)
                if metrics.refused.labels("http", "send_timeout")._value.get():
                    break
    assert metrics.refused.labels("http", "send_timeout")._value.get() == 1
