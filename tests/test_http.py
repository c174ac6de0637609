"""The HTTP endpoint: real requests to the daemon (a subprocess) against a real mosquitto and real
ptys, plus the server as an async context manager in-process (it owns its socket).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
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
from gateway.errors import HttpServerError
from gateway.health import Verdict
from gateway.http import Endpoints, HttpServer
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
