"""The gateway's own sections: `gateway`, `outbox`, `log`, `metrics`, `homeassistant` (`mqtt`
is in `mqtt.py`)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from gateway.config.base import Model, TopicLevel


class OutboxConfig(Model):
    """The durable store-and-forward outbox (SQLite, WAL) in `gateway.state_dir`."""

    max_bytes: int = Field(
        50_000_000, ge=10_000, description="Bound on stored readings (topic + payload), bytes."
    )
    max_age: float = Field(
        7 * 86400.0, gt=0, description="Readings older than this (seconds) are dropped."
    )
    overflow: Literal["drop_oldest", "drop_newest"] = Field(
        "drop_oldest", description="When max_bytes is reached: drop the oldest or the new ones."
    )
    durability: Literal["disk", "spill"] = Field(
        "disk",
        description="disk: every accepted reading is on disk before it is published. spill: "
        "readings stay in memory while the broker acknowledges them; one not acknowledged "
        "within spill_after seconds, and everything while the broker is away, is written to "
        "disk (a SIGKILL or power cut loses at most the readings younger than spill_after).",
    )
    spill_after: float = Field(
        1.0,
        gt=0,
        le=60,
        description="With durability: spill, write a reading to disk once it has waited this "
        "long (seconds) for the broker's acknowledgement.",
    )
    commit_interval: float = Field(
        0.0,
        ge=0,
        le=5,
        description="Group commits (durability: disk): a reading waits at most this long "
        "(seconds) for its commit; 0 commits at the end of each event-loop iteration that "
        "brought readings (commit_turns applies only with a commit_interval).",
    )
    commit_turns: int = Field(
        1,
        ge=1,
        le=100,
        description="Group commits (durability: disk): commit after this many event-loop "
        "iterations that brought readings (or commit_interval, whichever comes first). "
        "Fewer commits write less to flash; each turn costs a little latency.",
    )
    sync: Literal["normal", "full"] = Field(
        "normal",
        description="normal survives a crash of the gateway; full also a power loss "
        "(an fsync per commit).",
    )
    memory_records: int = Field(
        10_000,
        ge=100,
        description="Ready records held in memory; a larger backlog is read "
        "back from disk in batches.",
    )
    retry_interval: float = Field(
        30.0, gt=0, description="While the disk fails, retry writing this often (seconds)."
    )
    file: str = Field(
        "outbox.sqlite3",
        description="File name inside state_dir (a subdirectory may be given; after `..` and "
        "symlinks it must stay inside state_dir).",
    )


class GatewaySection(Model):
    """The gateway itself: its id, its state and its shutdown."""

    id: TopicLevel = Field(description="Gateway id: status topic and default MQTT client id.")
    state_dir: Path = Field(
        Path("/var/lib/gateway"),
        description="Where state lives. Relative paths are relative to the config file.",
    )
    shutdown_timeout: float = Field(
        10.0, gt=0, description="Seconds to flush queued readings and close links on SIGTERM."
    )
    stall_timeout: float = Field(
        10.0,
        gt=0,
        description="A link this many seconds past the deadline of opening, backing off or "
        "closing counts as stuck: the systemd watchdog is no longer fed and /healthz fails.",
    )


class LogSection(Model):
    """What the gateway logs, and how (standard error; under systemd, the journal)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="The lowest level logged."
    )
    format: Literal["text", "json"] = Field(
        "text",
        description="text: UTC timestamps (under systemd: syslog priority prefixes, no "
        "timestamps); json: one object per line (ts, level, logger, msg, link).",
    )


class MetricsAuth(Model):
    """Credentials for `/`, `/status` and `/metrics` (the probes `/healthz` and `/readyz` stay
    open): a bearer token, or a user name and password (HTTP basic auth). Relative file paths
    are relative to the config file; surrounding whitespace of a file's content is removed."""

    token: SecretStr | None = Field(None, description="Bearer token (`Authorization: Bearer`).")
    token_file: Path | None = Field(None, description="File holding the bearer token.")
    username: str | None = Field(None, min_length=1, description="Basic auth user name.")
    password: SecretStr | None = Field(None, description="Basic auth password.")
    password_file: Path | None = Field(None, description="File holding the basic auth password.")

    @model_validator(mode="after")
    def _one_scheme(self) -> MetricsAuth:
        token = self.token is not None or self.token_file is not None
        basic = self.username is not None
        if self.token is not None and self.token_file is not None:
            raise ValueError("give either token or token_file, not both")
        if self.password is not None and self.password_file is not None:
            raise ValueError("give either password or password_file, not both")
        if token == basic:
            raise ValueError("give a token (token or token_file) or a username with a password")
        if basic and self.password is None and self.password_file is None:
            raise ValueError("username needs password or password_file")
        if token and (self.password is not None or self.password_file is not None):
            raise ValueError("password and password_file go with username, not with a token")
        for secret in (self.token, self.password):
            if secret is not None and not secret.get_secret_value().strip():
                raise ValueError("an empty token or password would let anyone in")
        return self


class MetricsSection(Model):
    """The HTTP endpoint: `/metrics` (Prometheus), `/healthz`, `/readyz`, `/status` and the
    status page `/`."""

    enabled: bool = Field(True, description="Serve the HTTP endpoint.")
    host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="Listen address; `0.0.0.0` or `::` to let other hosts scrape it.",
    )
    port: int = Field(9108, ge=0, le=65535, description="Listen port; 0 picks a free one (logged).")
    sensor_values: bool = Field(
        False,
        description="Also export the latest value of every numeric sensor as "
        "`gateway_sensor_value{device,sensor,unit}` (useful with Prometheus alone, no broker).",
    )
    outbox_high_water: int = Field(
        10_000,
        ge=1,
        description="`/readyz` reports not ready while the outbox holds more readings than this.",
    )
    auth: MetricsAuth | None = Field(
        None,
        description="Protect `/`, `/status` and `/metrics` with a bearer token or basic auth "
        "(`/healthz` and `/readyz` stay open). Default: no authentication; a host other than "
        "loopback then needs allow_unauthenticated.",
    )
    allow_unauthenticated: bool = Field(
        False,
        description="Serve a host other than loopback without auth (anyone who reaches it "
        "reads the status page, /status and /metrics). Without it, such a config is an error.",
    )
    max_connections: int = Field(
        64,
        ge=1,
        le=1000,
        description="HTTP connections open at once. A new one beyond it closes the one that "
        "has waited longest without a request, or, if every one is being answered, is "
        'answered 503 and closed (gateway_input_refused_total{edge="http"}).',
    )
    header_timeout: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Seconds a client has to send a whole request head, from connecting or "
        "from its first byte after an idle keep-alive; then 408 and closed.",
    )
    idle_timeout: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Seconds a kept-alive connection may wait for its next request.",
    )
    send_timeout: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Seconds a client may take to read an answer before it is closed.",
    )

    @model_validator(mode="after")
    def _auth_off_loopback(self) -> MetricsSection:
        open_to_all = self.auth is None and not self.allow_unauthenticated
        if self.enabled and open_to_all and not is_loopback(self.host):
            raise ValueError(
                f"host {self.host} is reachable from other hosts and there is no "
                "authentication: set metrics.auth (a token or a username and password), "
                "or allow_unauthenticated: true to serve anyone who can reach it"
            )
        return self


def is_loopback(host: str) -> bool:
    """Whether a listen address is reachable from this host only (`localhost` included)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class HomeAssistantSection(Model):
    """Home Assistant MQTT discovery of the configured devices (never of passers-by)."""

    discovery: bool = Field(False, description="Announce the configured devices.")
    prefix: str = Field(
        "homeassistant",
        pattern=r"^[^#+]+$",
        description="Discovery prefix (Home Assistant's MQTT integration setting).",
    )
    status_topic: str = Field(
        "homeassistant/status",
        pattern=r"^[^#+]+$",
        description="Home Assistant's birth/last-will topic: on `online` the configs and the "
        "last values are published again.",
    )
    mode: Literal["device", "component"] = Field(
        "device",
        description="device: one config per device (Home Assistant >= 2024.12); component: one "
        "config per sensor (older Home Assistant, openHAB).",
    )
    announce_delay: float = Field(
        3.0,
        ge=0,
        le=60,
        description="After Home Assistant says `online`, wait a random time up to this many "
        "seconds before announcing (many gateways must not answer at the same instant).",
    )
    state_resend_delay: float = Field(
        1.0,
        ge=0,
        le=60,
        description="After announcing a new or changed config, publish the entity's last value "
        "again this many seconds later: Home Assistant subscribes to a new entity's state topic "
        "only after its config arrived (70-150 ms), and a value sent before is not shown. "
        "0: never.",
    )
