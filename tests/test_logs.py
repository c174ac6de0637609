"""Logs: each line names its link, journald format under systemd, JSON lines, and no secret ever
reaches the log (the daemon runs with a password, a bind key and DEBUG logging; we grep)."""

from __future__ import annotations

import json
import logging
import re
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import (
    Broker,
    Daemon,
    SerialPair,
    Subscriber,
    gateway_config,
    send_until_seen,
    serial_device,
)
from pydantic import BaseModel, SecretStr

from gateway.logs import (
    JournalFormatter,
    JsonFormatter,
    LinkContext,
    TextFormatter,
    config_secrets,
    current_link,
    set_secrets,
)

pytestmark = pytest.mark.timeout(40)

PASSWORD = "s3cr3t-Pa55word-do-not-log"


@pytest.fixture
def no_secrets() -> Iterator[None]:
    yield
    set_secrets(())


def record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    rec = logging.LogRecord("gateway.test", logging.WARNING, __file__, 1, msg, args, None)
    if exc is not None:
        rec.exc_info = (type(exc), exc, exc.__traceback__)
    LinkContext().filter(rec)
    return rec


def test_lines_carry_the_link_of_the_task_that_logged_them() -> None:
    token = current_link.set("serial:boiler")
    try:
        inside = record("port opened")
    finally:
        current_link.reset(token)
    outside = record("gateway started")
    text = TextFormatter()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert re.fullmatch(
        stamp + r" WARNING gateway\.test \[serial:boiler\]: port opened", text.format(inside)
    )
    assert text.format(outside).endswith("WARNING gateway.test: gateway started")
    assert JournalFormatter().format(inside) == "<4>gateway.test [serial:boiler]: port opened"
    assert json.loads(JsonFormatter().format(inside))["link"] == "serial:boiler"
    assert "link" not in json.loads(JsonFormatter().format(outside))


@pytest.mark.usefixtures("no_secrets")
def test_secrets_are_masked_in_messages_arguments_tracebacks_and_json() -> None:
    set_secrets([PASSWORD, "ab"])  # too short to mask: would garble every line
    failed = RuntimeError(f"connect failed with {PASSWORD}")
    rec = record("password is %s, again %r", PASSWORD, PASSWORD.upper(), exc=failed)
    for formatter in (TextFormatter(), JournalFormatter(), JsonFormatter()):
        out = formatter.format(rec)
        assert PASSWORD.lower() not in out.lower()
        assert "***" in out
        assert "ab" in formatter.format(record("ab"))
    quoted = 'pa"ss\\word'
    set_secrets([quoted])
    assert quoted not in JsonFormatter().format(record("x %s", quoted))
    assert json.dumps(quoted)[1:-1] not in JsonFormatter().format(record("x %s", quoted))


def test_config_secrets_finds_secret_fields_and_secret_types() -> None:
    class Ble(BaseModel):
        mac: str
        bind_key: str

    class Cfg(BaseModel):
        password: SecretStr
        token: SecretStr | None
        devices: list[Ble]
        extra: dict[str, SecretStr]
        name: str

    cfg = Cfg(
        password=SecretStr("pw-1234"),
        token=None,
        devices=[Ble(mac="AA:BB", bind_key="00112233445566778899aabbccddeeff")],
        extra={"a": SecretStr("other-secret")},
        name="public",
    )
    assert sorted(config_secrets(cfg)) == sorted(
        ["pw-1234", "00112233445566778899aabbccddeeff", "other-secret"]
    )


# -- the daemon --------------------------------------------------------------------------------


def run_briefly(
    daemon: Daemon, config: dict[str, Any], pair: SerialPair, sub: Subscriber
) -> list[str]:
    """Start, get a reading through, reload (rejected, then applied), stop; the log lines."""
    daemon.start(config)
    send_until_seen(pair, sub, "gateway", "boiler")
    daemon.write_config("gateway: {id: [not, valid]}\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("reload rejected")
    daemon.write_config(config)
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("reload: 0 link(s) to stop")
    # Undecodable lines are logged at DEBUG with their bytes; this one holds the password.
    pair.write(f"login {PASSWORD}\n".encode() + b"temp=1,bad line\n\xff\xfe\n")
    daemon.wait_log("not UTF-8 text")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=10) == 0
    return daemon.log().splitlines()


def test_the_password_never_reaches_the_log_even_at_debug(
    broker: Broker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    config = gateway_config(
        broker,
        [serial_device("boiler", serial_pair)],
        mqtt={"username": "gw", "password": PASSWORD},
    )
    assert config["log"]["level"] == "DEBUG"
    lines = run_briefly(daemon, config, serial_pair, subscriber)
    assert len(lines) > 10
    assert "frame b'login ***'" in "\n".join(lines)  # the one place it would have leaked
    everything = "\n".join(lines) + daemon.stdout_path.read_text()
    assert PASSWORD not in everything
    assert PASSWORD.lower() not in everything.lower()


def test_under_systemd_lines_have_priorities_and_no_timestamps(
    monkeypatch: pytest.MonkeyPatch,
    broker: Broker,
    serial_pair: SerialPair,
    subscriber: Subscriber,
    daemon: Daemon,
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")  # what systemd sets for a journal stdout
    config = gateway_config(broker, [serial_device("boiler", serial_pair)])
    lines = run_briefly(daemon, config, serial_pair, subscriber)
    assert all(re.match(r"<[0-7]>", line) for line in lines), lines  # continuation lines too
    assert not [line for line in lines if re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", line)]
    assert "<6>gateway.supervisor [serial:boiler]: link serial:boiler: starting -> up" in lines
    assert any(line.startswith("<3>gateway.lifecycle: reload rejected") for line in lines)


def test_json_lines_name_their_link(
    broker: Broker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    config = gateway_config(broker, [serial_device("boiler", serial_pair)])
    config["log"]["format"] = "json"
    entries = [json.loads(line) for line in run_briefly(daemon, config, serial_pair, subscriber)]
    assert all({"ts", "level", "logger", "msg"} <= entry.keys() for entry in entries)
    by_link = {entry.get("link") for entry in entries}
    assert {"serial:boiler", "mqtt", None} <= by_link
    opened = [e for e in entries if "opened" in e["msg"]]
    assert opened
    assert all(e["link"] == "serial:boiler" for e in opened)
    connected = [e for e in entries if e["msg"].startswith("mqtt: connected")]
    assert connected
    assert all(e["link"] == "mqtt" for e in connected)
