"""`metrics.auth`: the page, /status and /metrics need the credentials; the probes stay open.

In-process against the real HttpServer and Endpoints (real sockets, stdlib requests), and once
against the daemon with a token read from a file next to its config."""

from __future__ import annotations

import asyncio
import base64
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import (
    HOST,
    Broker,
    Daemon,
    SerialPair,
    Subscriber,
    gateway_config,
    send_until_seen,
    serial_device,
    wait_until,
)
from httpprobe import Reply, endpoint

from gateway.config import MetricsAuth, load_config
from gateway.errors import ConfigError
from gateway.health import Verdict
from gateway.http import Endpoints, HttpServer, is_loopback
from gateway.httpauth import authorized
from gateway.logs import config_secrets
from gateway.metrics import Metrics

TOKEN = "t0ken-for-the-tests"
PASSWORD = "pa55word-for-the-tests"
GUARDED = ("/", "/status", "/status.html", "/metrics", "/static/page.js")
OPEN = ("/healthz", "/readyz")


def request(url: str, authorization: str | None = None) -> Reply:
    req = urllib.request.Request(url)
    if authorization is not None:
        req.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return Reply(response.status, response.read(), response.headers["Content-Type"])
    except urllib.error.HTTPError as exc:
        with exc:
            return Reply(exc.code, exc.read(), exc.headers["Content-Type"])


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def endpoints(auth: MetricsAuth | None) -> Endpoints:
    metrics = Metrics()
    ok = Verdict(True, [])
    doc = {
        "gateway": {"id": "gw1", "version": "0", "time": 1.0, "uptime": 1.0},
        "ready": True,
        "not_ready": [],
        "mqtt": {"connected": True, "host": "b", "port": 1883, "since": 0.0},
        "devices": {},
        "outbox": {"records": 0, "oldest_age": 0.0, "mode": "disk"},
    }
    return Endpoints(
        metrics.registry,
        refresh=lambda: None,
        liveness=lambda: ok,
        readiness=lambda: ok,
        status=lambda: doc,
        auth=auth,
    )


async def answers(auth: MetricsAuth | None, authorization: str | None) -> dict[str, Reply]:
    async with HttpServer(HOST, 0, endpoints(auth).application()) as server:
        base = f"http://{HOST}:{server.port}"
        return {
            path: await asyncio.to_thread(request, base + path, authorization)
            for path in (*GUARDED, *OPEN)
        }


async def test_without_credentials_everything_but_the_probes_is_401() -> None:
    auth = MetricsAuth(token=TOKEN)
    replies = await answers(auth, None)
    for path in GUARDED:
        assert replies[path].status == 401, path
        assert TOKEN.encode() not in replies[path].body
    for path in OPEN:
        assert replies[path].status == 200, path
    wrong = await answers(auth, "Bearer not-the-token")
    assert {p: r.status for p, r in wrong.items()} == {
        **dict.fromkeys(GUARDED, 401),
        **dict.fromkeys(OPEN, 200),
    }


async def test_a_401_asks_for_basic_auth_so_that_browsers_prompt() -> None:
    async with HttpServer(HOST, 0, endpoints(MetricsAuth(token=TOKEN)).application()) as server:
        url = f"http://{HOST}:{server.port}/"
        req = urllib.request.Request(url)
        with pytest.raises(urllib.error.HTTPError) as caught:
            await asyncio.to_thread(urllib.request.urlopen, req, timeout=5)
        with caught.value as exc:
            challenges = exc.headers.get_all("WWW-Authenticate")
    assert challenges == [
        'Basic realm="iot-gateway", charset="UTF-8"',
        'Bearer realm="iot-gateway"',
    ]


async def test_a_bearer_token_opens_the_page_status_and_metrics() -> None:
    replies = await answers(MetricsAuth(token=TOKEN), f"Bearer {TOKEN}")
    assert {p: r.status for p, r in replies.items()} == dict.fromkeys((*GUARDED, *OPEN), 200)
    assert replies["/"].content_type.startswith("text/html")
    assert replies["/metrics"].content_type.startswith("text/plain")
    # A browser's login dialog: any user name, the token as the password.
    replies = await answers(MetricsAuth(token=TOKEN), basic("anyone", TOKEN))
    assert replies["/status"].status == 200


async def test_basic_auth_needs_the_user_and_the_password() -> None:
    auth = MetricsAuth(username="ops", password=PASSWORD)
    replies = await answers(auth, basic("ops", PASSWORD))
    assert {p: r.status for p, r in replies.items()} == dict.fromkeys((*GUARDED, *OPEN), 200)
    for wrong in (basic("ops", "nope"), basic("root", PASSWORD), f"Bearer {PASSWORD}"):
        assert (await answers(auth, wrong))["/status"].status == 401


def test_the_header_is_checked_strictly() -> None:
    token = MetricsAuth(token=TOKEN)
    users = MetricsAuth(username="ops", password=PASSWORD)
    assert authorized(f"bearer  {TOKEN} ", token)  # the scheme is case-insensitive
    assert not authorized(None, token)
    assert not authorized("Bearer", token)
    assert not authorized(f"Bearer {TOKEN}x", token)
    assert not authorized("Basic !!!not-base64", users)
    assert not authorized("Basic " + base64.b64encode(b"no colon").decode(), users)
    assert authorized(basic("ops", PASSWORD), users)


def test_auth_config_reads_files_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text(f"{TOKEN}\n")
    config = tmp_path / "gateway.yaml"
    config.write_text("gateway: {id: gw1}\nmetrics:\n  auth: {token_file: secrets/token}\n")
    cfg = load_config(config)
    assert cfg.metrics.auth is not None
    assert cfg.metrics.auth.token is not None
    assert cfg.metrics.auth.token.get_secret_value() == TOKEN
    assert cfg.metrics.auth.token_file == tmp_path / "secrets" / "token"
    assert TOKEN in set(config_secrets(cfg))  # masked in every log line
    (tmp_path / "secrets" / "token").write_text("\n")
    with pytest.raises(ConfigError, match=r"metrics\.auth\.token_file: .* is empty"):
        load_config(config)


@pytest.mark.parametrize(
    ("auth", "error"),
    [
        ("{token: a-token, username: ops}", "give a token .* or a username with a password"),
        ("{username: ops}", "username needs password or password_file"),
        ("{token: a-token, token_file: t}", "either token or token_file"),
        ("{token: a-token, password: pw12}", "go with username, not with a token"),
        ("{token: '  '}", "would let anyone in"),
    ],
)
def test_auth_config_mistakes_are_errors(tmp_path: Path, auth: str, error: str) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"gateway: {{id: gw1}}\nmetrics:\n  auth: {auth}\n")
    with pytest.raises(ConfigError, match=error):
        load_config(config)


def test_the_daemon_guards_its_endpoint_with_a_token_file(
    broker: Broker, serial_pair: SerialPair, daemon: Daemon, tmp_path: Path
) -> None:
    (tmp_path / "metrics.token").write_text(TOKEN)
    config = gateway_config(broker, [serial_device("boiler", serial_pair)])
    config["metrics"] = {"port": 0, "auth": {"token_file": "metrics.token"}}
    daemon.start(config)
    base = endpoint(daemon)
    daemon.wait_log("link mqtt: starting -> up")
    assert request(f"{base}/status").status == 401
    assert request(f"{base}/metrics").status == 401
    assert request(f"{base}/healthz").status == 200
    assert request(f"{base}/readyz").status == 200
    reply = request(f"{base}/status", f"Bearer {TOKEN}")
    assert reply.status == 200
    assert reply.json()["devices"]["boiler"]["family"] == "serial"
    assert request(f"{base}/", f"Bearer {TOKEN}").status == 200
    assert TOKEN not in daemon.log()  # DEBUG level: the token is masked wherever it would be


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("edge-box", False),
    ],
)
def test_which_listen_addresses_count_as_loopback(host: str, loopback: bool) -> None:
    """Other hosts can reach the endpoint: without metrics.auth the daemon warns at startup."""
    assert is_loopback(host) is loopback


def test_status_shows_a_value_as_sent_even_when_it_equals_a_secret(
    broker: Broker, serial_pair: SerialPair, subscriber: Subscriber, daemon: Daemon
) -> None:
    """Masking values equal to a secret confirmed a guess: a device (or whoever sends what it
    reads) could try values until one came back `***`. /status shows no secret config field,
    so it masks nothing by value."""
    config = gateway_config(broker, [serial_device("boiler", serial_pair)])
    config["metrics"] = {"port": 0, "auth": {"token": TOKEN}}
    daemon.start(config)
    base = endpoint(daemon)
    send_until_seen(serial_pair, subscriber, "gateway", "boiler")
    serial_pair.write(f"guess={TOKEN}\n".encode())
    subscriber.wait_for(lambda m: m.topic == "gateway/boiler/guess")

    def guess() -> object:
        doc = request(f"{base}/status", f"Bearer {TOKEN}").json()
        return doc["devices"]["boiler"]["sensors"].get("guess", {}).get("value")

    assert wait_until(guess, 5, "the guess in /status") == TOKEN
    for path in ("/status", "/status.html"):
        assert b"***" not in request(f"{base}{path}", f"Bearer {TOKEN}").body, path


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "edge-box"])
def test_an_endpoint_open_to_other_hosts_needs_auth_or_a_clear_opt_out(
    tmp_path: Path, host: str
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"gateway: {{id: gw1}}\nmetrics:\n  host: '{host}'\n  port: 9108\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    [problem] = caught.value.problems
    assert problem.startswith(f"{config}:2:")  # the metrics section's line
    assert "metrics.auth" in problem
    assert "allow_unauthenticated: true" in problem
    config.write_text(
        f"gateway: {{id: gw1}}\nmetrics: {{host: '{host}', allow_unauthenticated: true}}\n"
    )
    assert load_config(config).metrics.allow_unauthenticated
    auth = f"auth: {{token: {TOKEN}}}"
    config.write_text(f"gateway: {{id: gw1}}\nmetrics: {{host: '{host}', {auth}}}\n")
    assert load_config(config).metrics.auth is not None
    config.write_text(f"gateway: {{id: gw1}}\nmetrics: {{host: '{host}', enabled: false}}\n")
    assert not load_config(config).metrics.enabled
