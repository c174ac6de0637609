"""The composition root (`gateway/wiring.py`): the graph is built whole, in one place, each part
with its collaborators, and it reports through its components' own statuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Config
from gateway.health import status_line
from gateway.linknames import SESSION
from gateway.mqtt.session import MqttSession
from gateway.reload import Discovery
from gateway.wiring import build

pytestmark = pytest.mark.timeout(30)


def config(tmp_path: Path, *, discovery: bool) -> Config:
    return Config.model_validate(
        {
            "gateway": {"id": "gw", "state_dir": str(tmp_path)},
            "mqtt": {"servers": ["127.0.0.1:1883", "[::1]:1884"]},
            "metrics": {"enabled": False},
            "homeassistant": {"discovery": discovery},
            "devices": [{"id": "boiler", "type": "serial", "port": "/dev/ttyX"}],
        }
    )


def never(reason: str, code: int) -> None:
    raise AssertionError(reason)


def test_the_graph_is_built_whole_with_discovery_wired_in(tmp_path: Path) -> None:
    graph = build(config(tmp_path, discovery=True), request_exit=never)
    assert graph.intake.encoder is graph.encoder
    assert graph.announcer is not None
    assert graph.http is None  # metrics.enabled: false
    (session,) = graph.links_for([SESSION])
    assert isinstance(session, MqttSession)
    assert session.parts == [graph.announcer]  # given at construction, not attached later


def test_discovery_switched_on_by_a_reload_reaches_the_next_session(tmp_path: Path) -> None:
    graph = build(config(tmp_path, discovery=False), request_exit=never)
    (before,) = graph.links_for([SESSION])
    assert isinstance(before, MqttSession)
    assert before.parts == []
    graph.configure(config(tmp_path, discovery=True), Discovery.SWITCHED_ON)
    assert graph.announcer is not None
    (after,) = graph.links_for([SESSION])
    assert isinstance(after, MqttSession)
    assert after.parts == [graph.announcer]


def test_a_session_reports_the_broker_it_tries_next_while_not_connected(tmp_path: Path) -> None:
    graph = build(config(tmp_path, discovery=False), request_exit=never)
    (session,) = graph.links_for([SESSION])
    assert isinstance(session, MqttSession)
    status = session.status()
    assert not status.connected
    assert (status.server.host, status.server.port) == ("127.0.0.1", 1883)
    assert status.connected_to is None
    session._rotate("could not connect to")  # what a failed connect does
    assert session.status().server.host == "::1"


def test_a_graph_not_running_reports_no_session_and_no_loop_lag(tmp_path: Path) -> None:
    graph = build(config(tmp_path, discovery=False), request_exit=never)
    report = graph.report()
    assert report.session is None
    assert report.loop_lag is None
    assert report.outbox is not None
    assert report.outbox.records == 0
    assert status_line(graph) == "STATUS=0/0 links up, outbox 0"


def test_metrics_report_their_per_device_counts(tmp_path: Path) -> None:
    graph = build(config(tmp_path, discovery=False), request_exit=never)
    m = graph.metrics
    m.frame_errors.labels("boiler", "checksum").inc(2)
    m.modbus_errors.labels("boiler", "r1", "timeout").inc()
    m.modbus_errors.labels("boiler", "r2", "timeout").inc()
    m.filter_dropped.labels("boiler", "temp", "delta").inc(3)
    counts = m.device_counts()
    assert counts.decode_errors == {"boiler": {"checksum": 2, "timeout": 2}}
    assert counts.filter_dropped == {"boiler": {"delta": 3}}
    m.forget_device("boiler")
    assert m.device_counts().filter_dropped == {}
