"""Hot reload (SIGHUP) of the daemon, case by case, observed from outside: `/status` (how often
each link was entered), `/metrics`, the pty file descriptors the daemon holds, the broker.

- an invalid file: logged, counted as `invalid`, nothing changes;
- a device added: started; removed: stopped, its port released, its series gone;
- a device changed: restarted, while the unchanged ones keep their port open (no reopen);
- the `mqtt` section changed: the session reconnects; unchanged: the session is kept;
- the outbox is kept: readings queued while the broker is down survive a session restart.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest
from helpers import (
    Broker,
    Daemon,
    SerialPairFactory,
    Subscriber,
    gateway_config,
    send_until_seen,
    serial_device,
    wait_consumed,
    wait_until,
)
from httpprobe import endpoint, sample, scrape, status, wait_link_state

pytestmark = pytest.mark.timeout(40)

PREFIX = "gateway"


def starts(base: str) -> dict[str, int]:
    """How often each configured link was entered (opened, connected) so far."""
    return {name: link["starts"] for name, link in status(base)["links"].items()}


def reload(daemon: Daemon, config: dict[str, Any] | str, expect: str) -> None:
    """Write the file, SIGHUP, wait until the daemon logged the outcome once more."""
    count = daemon.log_count(expect)
    daemon.write_config(config)
    daemon.signal(signal.SIGHUP)
    daemon.wait_log(expect, count=count + 1)


APPLIED = "reload: "
REJECTED = "reload rejected"


class Rig:
    """A daemon with devices `a` and `b` on their own ptys, both up and delivering."""

    def __init__(
        self,
        daemon: Daemon,
        broker: Broker,
        sub: Subscriber,
        make_pair: SerialPairFactory,
    ) -> None:
        self.daemon, self.broker, self.sub = daemon, broker, sub
        self.pairs = {name: make_pair(name.upper()) for name in ("a", "b")}
        self.config = self.make_config({"a": {}, "b": {}})
        daemon.start(self.config)
        self.base = endpoint(daemon)
        for name, pair in self.pairs.items():
            send_until_seen(pair, sub, PREFIX, name)
        self.pty = {name: pair.realpath for name, pair in self.pairs.items()}
        assert starts(self.base) == {"mqtt": 1, "serial:a": 1, "serial:b": 1}

    def make_config(self, devices: dict[str, dict[str, Any]], **mqtt: Any) -> dict[str, Any]:
        return gateway_config(
            self.broker,
            [serial_device(n, self.pairs[n], **extra) for n, extra in devices.items()],
            mqtt=mqtt,
        )

    def holds(self, name: str) -> bool:
        return self.pty[name] in self.daemon.pty_fds()


@pytest.fixture
def rig(
    daemon: Daemon, broker: Broker, subscriber: Subscriber, make_serial_pair: SerialPairFactory
) -> Rig:
    return Rig(daemon, broker, subscriber, make_serial_pair)


def test_an_invalid_file_is_logged_counted_and_changes_nothing(rig: Rig) -> None:
    reload(rig.daemon, "gateway: {id: gw1}\nmqtt: {port: not-a-port}\n", REJECTED)
    assert "mqtt.port: Input should be a valid integer" in rig.daemon.log()
    reload(rig.daemon, "gateway: [unclosed\n", REJECTED)  # not even YAML
    samples = scrape(rig.base)
    assert sample(samples, "gateway_config_reloads_total", result="invalid") == 2
    assert sample(samples, "gateway_config_reloads_total", result="applied") is None
    assert starts(rig.base) == {"mqtt": 1, "serial:a": 1, "serial:b": 1}
    assert rig.holds("a")
    assert rig.holds("b")
    send_until_seen(rig.pairs["a"], rig.sub, PREFIX, "a")  # still delivering
    # The valid file again: applied, and still nothing to restart.
    reload(rig.daemon, rig.config, APPLIED)
    assert "reload: 0 link(s) to stop, 0 to (re)start" in rig.daemon.log()
    assert sample(scrape(rig.base), "gateway_config_reloads_total", result="applied") == 1
    assert starts(rig.base) == {"mqtt": 1, "serial:a": 1, "serial:b": 1}


def test_an_added_device_is_started_and_the_others_are_kept(
    rig: Rig, make_serial_pair: SerialPairFactory
) -> None:
    rig.pairs["c"] = make_serial_pair("C")
    reload(rig.daemon, rig.make_config({"a": {}, "b": {}, "c": {}}), APPLIED)
    wait_link_state(rig.base, "serial:c", "up")
    send_until_seen(rig.pairs["c"], rig.sub, PREFIX, "c")
    assert starts(rig.base) == {"mqtt": 1, "serial:a": 1, "serial:b": 1, "serial:c": 1}
    assert rig.holds("a")
    assert rig.holds("b")


def test_a_removed_device_is_stopped_and_releases_its_port(rig: Rig) -> None:
    assert sample(scrape(rig.base), "gateway_last_reading_timestamp_seconds", device="b")
    reload(rig.daemon, rig.make_config({"a": {}}), APPLIED)
    wait_until(lambda: not rig.holds("b"), 5, "the daemon to close b's pty")
    doc = status(rig.base)
    assert set(doc["links"]) == {"mqtt", "serial:a"}
    assert set(doc["devices"]) == {"a"}
    samples = scrape(rig.base)
    assert sample(samples, "gateway_link_state", link="serial:b", state="stopped") == 1
    assert sample(samples, "gateway_last_reading_timestamp_seconds", device="b") is None
    assert starts(rig.base) == {"mqtt": 1, "serial:a": 1}
    assert rig.holds("a")
    # b's lines now go nowhere; a still delivers.
    rig.pairs["b"].write(b"seq=999999\n")
    send_until_seen(rig.pairs["a"], rig.sub, PREFIX, "a")
    assert not [m for m in rig.sub.messages if m.topic == f"{PREFIX}/b/seq" and m.value == 999999]


def test_a_changed_device_is_restarted_and_the_unchanged_one_keeps_its_port(rig: Rig) -> None:
    changed = {"a": {"sensors": {"temp": {"unit": "K"}}}, "b": {}}
    reload(rig.daemon, rig.make_config(changed), APPLIED)
    assert "reload: 1 link(s) to stop, 1 to (re)start" in rig.daemon.log()
    wait_until(lambda: starts(rig.base)["serial:a"] == 2, 5, "serial:a to be entered again")
    wait_link_state(rig.base, "serial:a", "up")
    assert starts(rig.base) == {"mqtt": 1, "serial:a": 2, "serial:b": 1}
    assert rig.holds("b")
    assert rig.daemon.log_count("link serial:b: up -> stopped") == 0
    rig.pairs["a"].write(b"temp=300\n")
    message = rig.sub.wait_for(lambda m: m.topic == f"{PREFIX}/a/temp" and m.value == 300)
    assert message.data is not None
    assert message.data["unit"] == "K"


def test_a_changed_mqtt_section_restarts_only_the_session(rig: Rig) -> None:
    reload(rig.daemon, rig.make_config({"a": {}, "b": {}}, keepalive=7), APPLIED)
    wait_until(lambda: starts(rig.base)["mqtt"] == 2, 10, "the session to reconnect")
    assert rig.daemon.log_count("mqtt: connected") == 2
    assert starts(rig.base) == {"mqtt": 2, "serial:a": 1, "serial:b": 1}
    assert rig.holds("a")
    assert rig.holds("b")
    send_until_seen(rig.pairs["b"], rig.sub, PREFIX, "b")


def test_the_outbox_is_kept_across_a_session_restart(rig: Rig) -> None:
    # The rig's send_until_seen may leave a reading in flight: the kill would put it back and
    # the count below would be one more.
    wait_until(lambda: status(rig.base)["outbox"]["records"] == 0, 10, "the outbox to empty")
    rig.broker.kill()
    wait_until(lambda: status(rig.base)["mqtt"]["connected"] is False, 10, "mqtt down")
    marks = list(range(500_000, 500_020))
    rig.pairs["a"].write(b"".join(b"queued=%d\n" % m for m in marks))
    wait_consumed(rig.daemon, rig.pairs["a"])
    assert status(rig.base)["outbox"]["records"] == len(marks)

    reload(rig.daemon, rig.make_config({"a": {}, "b": {}}, keepalive=7), APPLIED)
    rig.broker.start()
    for mark in marks:
        rig.sub.wait_value(f"{PREFIX}/a/queued", mark, timeout=15)
    wait_until(lambda: status(rig.base)["outbox"]["records"] == 0, 10, "the outbox to drain")
    assert rig.daemon.log_count("waiting from before") == 1  # opened once, never reopened
    assert starts(rig.base)["serial:a"] == 1


# Files no YAML loader should be trusted with (issue 21): each is a located error at reload too.
UNREADABLE = {
    "unknown-tag": (b"gateway:\n  id: !secret mqtt_pw\n", ":2:7: "),
    "python-tag": (b"gateway:\n  id: !!python/name:os.system\n", ":2:7: "),
    "deep-nesting": (b"gateway: {id: gw1}\nx: " + b"[" * 1000 + b"]" * 1000 + b"\n", ":2:"),
    "invalid-utf8": (b"gateway:\n  id: gw\xff1\n", ":2:9: "),
    "nul-byte": (b"gateway:\n  id: gw\x001\n", ":2:9: "),
    "empty": (b"", ":1:1: gateway: Field required"),
}


def reload_bytes(daemon: Daemon, data: bytes) -> None:
    tmp = daemon.config_path.with_name("unreadable.tmp")
    tmp.write_bytes(data)
    tmp.replace(daemon.config_path)
    count = daemon.log_count(REJECTED)
    daemon.signal(signal.SIGHUP)
    daemon.wait_log(REJECTED, count=count + 1)


def test_an_unreadable_file_is_a_located_error_and_the_daemon_keeps_running(rig: Rig) -> None:
    path = str(rig.daemon.config_path)
    for data, where in UNREADABLE.values():
        reload_bytes(rig.daemon, data)
        assert f"{path}{where}" in rig.daemon.log()
    # A directory where the file was.
    rig.daemon.config_path.unlink()
    rig.daemon.config_path.mkdir()
    reload_bytes_count = rig.daemon.log_count(REJECTED)
    rig.daemon.signal(signal.SIGHUP)
    rig.daemon.wait_log(REJECTED, count=reload_bytes_count + 1)
    assert f"{path}:1:1: cannot read config: not a regular file" in rig.daemon.log()
    rig.daemon.config_path.rmdir()

    assert rig.daemon.alive
    assert "Traceback" not in rig.daemon.log()
    rejected = len(UNREADABLE) + 1
    samples = scrape(rig.base)
    assert sample(samples, "gateway_config_reloads_total", result="invalid") == rejected
    assert starts(rig.base) == {"mqtt": 1, "serial:a": 1, "serial:b": 1}
    assert rig.holds("a")
    assert rig.holds("b")
    send_until_seen(rig.pairs["a"], rig.sub, PREFIX, "a")  # the old config still runs
