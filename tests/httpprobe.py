"""Real HTTP requests to the daemon's endpoint (`/metrics`, `/healthz`, `/readyz`, `/status`).

The daemon is configured with `metrics.port: 0` and logs the port it got; `endpoint(daemon)`
reads it from the log. Requests use the stdlib (urllib), parsing uses prometheus-client's own
parser: nothing here knows how the gateway builds its answers.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from helpers import Daemon, wait_until
from prometheus_client.parser import text_string_to_metric_families

SERVING = "http: serving /metrics"
_URL = re.compile(r"http: serving .* on (http://\S+?)(?:,|$)", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str

    def json(self) -> Any:
        return json.loads(self.body)


def get(url: str, timeout: float = 5.0) -> Reply:
    """GET; an HTTP error status is a Reply too, not an exception."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return Reply(response.status, response.read(), response.headers["Content-Type"])
    except urllib.error.HTTPError as exc:
        with exc:
            return Reply(exc.code, exc.read(), exc.headers["Content-Type"])


def endpoint(daemon: Daemon, timeout: float = 10.0) -> str:
    """The base URL the daemon logged (`http://127.0.0.1:PORT`)."""
    daemon.wait_log(SERVING, timeout=timeout)
    match = _URL.search(daemon.log())
    assert match, daemon.log()
    return match.group(1)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base: str) -> Samples:
    """Every sample of /metrics: (name, labels) -> value."""
    reply = get(f"{base}/metrics")
    assert reply.status == 200, reply
    assert reply.content_type.startswith("text/plain"), reply.content_type
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(reply.body.decode())
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def status(base: str) -> dict[str, Any]:
    reply = get(f"{base}/status")
    assert reply.status == 200, reply
    data: dict[str, Any] = reply.json()
    return data


def link_state(base: str, link: str) -> str | None:
    state: str | None = status(base)["links"].get(link, {}).get("state")
    return state


def wait_link_state(base: str, link: str, state: str, timeout: float = 10.0) -> dict[str, Any]:
    """Wait until /status shows the link in `state`; returns the link's entry."""

    def check() -> dict[str, Any] | None:
        entry: dict[str, Any] | None = status(base)["links"].get(link)
        return entry if entry is not None and entry["state"] == state else None

    return wait_until(check, timeout, f"link {link} {state} in /status")
