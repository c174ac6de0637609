"""The `mqtt` section: the broker (one, or several `servers` tried in turn, each `host:port` or a
mapping), authentication, TLS, topics, the MQTT 5 options, commands; and the default client id."""

from __future__ import annotations

import hashlib
import re
import string
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.config.base import BackoffConfig, Model, TopicLevel


class TlsConfig(Model):
    """TLS to the broker. Relative paths are relative to the config file."""

    ca_file: Path | None = Field(None, description="CA bundle; default: the system's CAs.")
    cert_file: Path | None = Field(None, description="Client certificate (mutual TLS).")
    key_file: Path | None = Field(None, description="Client private key (mutual TLS).")
    insecure: bool = Field(
        False, description="Skip certificate and host name checks (testing only; logged loudly)."
    )

    @model_validator(mode="after")
    def _cert_and_key(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


DEFAULT_HOST = "127.0.0.1"
TOPIC_PLACEHOLDERS = frozenset({"gateway"})  # what `mqtt.topic_prefix` may contain in braces


class MqttServer(Model):
    """One broker of `mqtt.servers` (the mapping form; a string `host:port` is the short one)."""

    host: str = Field(min_length=1, description="Host name or address (IPv6 without brackets).")
    port: int | None = Field(None, ge=1, le=65535, description="Default: `mqtt.port`.")
    tls_server_name: str | None = Field(
        None,
        min_length=1,
        description="With TLS: the name the broker's certificate must carry (and the SNI), when "
        "it differs from `host` (an address, or a node name behind a load balancer).",
    )


_HOST_PORT = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+(?:%\w+)?)\]|(?P<host>[^\s:\[\]/]+))(?::(?P<port>\d+))?$"
)


def parse_server(text: str) -> MqttServer:
    """`"host:port"`, `"[::1]:1883"`, a bare host (port: `mqtt.port`), a bare IPv6 address."""
    text = text.strip()
    if text.count(":") > 1 and not text.startswith("["):
        return MqttServer(host=text)  # a bare IPv6 address: no port to split off
    match = _HOST_PORT.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not `host`, `host:port` or `[v6 address]:port`")
    port = match["port"]
    if port is not None and not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port} of {text!r} is not in 1..65535")
    return MqttServer(host=match["v6"] or match["host"], port=int(port) if port else None)


def _server_from_text(value: object) -> object:
    return parse_server(value) if isinstance(value, str) else value


# A server given as a string or a mapping; the model always holds the mapping form.
ServerEntry = Annotated[
    MqttServer, BeforeValidator(_server_from_text, json_schema_input_type=str | MqttServer)
]


def _check_topic_template(text: str) -> str:
    try:
        fields = [
            (name, spec, conv)
            for _, name, spec, conv in string.Formatter().parse(text)
            if name is not None
        ]
    except ValueError as exc:  # a lone `{` or `}`
        raise ValueError(f"{exc} (`{{gateway}}` is the one placeholder)") from None
    for name, spec, conv in fields:
        if name not in TOPIC_PLACEHOLDERS or spec or conv:
            shown = name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "")
            raise ValueError(
                f"unknown placeholder {{{shown}}}; the one known is {{gateway}} (the gateway id)"
            )
    return text


TopicTemplate = Annotated[str, Field(pattern=r"^[^#+]+$"), AfterValidator(_check_topic_template)]


class MqttSection(Model):
    """The broker connection, topics and commands."""

    host: str = Field(DEFAULT_HOST, description="The broker's host name or address.")
    port: int = Field(
        1883,
        ge=1,
        le=65535,
        description="The broker's port; also the port of a `servers` entry that gives none.",
    )
    servers: list[ServerEntry] | None = Field(
        None,
        min_length=1,
        description="Several brokers (cluster nodes), tried in turn: `host:port`, "
        "`[v6]:port`, a bare host (port: `port`) or `{host, port, tls_server_name}`. A failed "
        "connect or a lost connection moves to the next one. Instead of `host`.",
    )
    client_id: str | None = Field(
        None, description="Default: `gateway-<id>-<hash>`, stable per gateway id and host."
    )
    keepalive: int = Field(30, ge=1, le=65535, description="MQTT keepalive, seconds.")
    username: str | None = Field(None, description="User name to authenticate with.")
    password: SecretStr | None = Field(
        None, description="Password (masked in the log); or `password_file`, not both."
    )
    password_file: Path | None = Field(
        None, description="File holding the password (relative to the config file)."
    )
    topic_prefix: TopicTemplate = Field(
        "gateway",
        description="First topic level(s); `{gateway}` stands for the gateway id "
        "(`site/{gateway}`).",
    )
    qos: Literal[0, 1, 2] = Field(1, description="QoS of readings.")
    protocol: Literal["3.1.1", "5"] = Field(
        "3.1.1", description='MQTT version: "3.1.1" or "5" (quoted in YAML: a string).'
    )
    session_expiry: int = Field(
        0,
        ge=0,
        le=0xFFFFFFFF,
        description="MQTT 5: Session Expiry Interval (seconds) sent on CONNECT; above 0 the "
        "broker keeps the session (subscriptions, queued commands) that long after a "
        "disconnect and the gateway resumes it on reconnect. Ignored over 3.1.1.",
    )
    message_expiry: int | None = Field(
        None,
        ge=1,
        le=0xFFFFFFFF,
        description="MQTT 5: Message Expiry Interval (seconds) of reading publishes: the "
        "broker drops a reading still queued for a subscriber after this long. Ignored "
        "over 3.1.1.",
    )
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to wait for CONNACK.")
    publish_timeout: float = Field(
        10.0, gt=0, description="Seconds to wait for a PUBACK before the session is reset."
    )
    inflight: int = Field(
        256,
        ge=1,
        le=65535,
        description="Publishes awaiting acknowledgement at once. An MQTT 5 broker's receive "
        "maximum lowers it (mosquitto: max_inflight_messages, default 20); QoS 2 over MQTT "
        "3.1.1 keeps at most 20.",
    )
    tls: TlsConfig | None = Field(None, description="Enable TLS (give at least `{}`).")
    command_verb: TopicLevel = Field(
        "set", description="Commands are read from `<prefix>/<device>/<verb>/<command>`."
    )
    commands: bool = Field(True, description="Subscribe to command topics.")
    command_ttl: float = Field(
        0.0,
        ge=0,
        description="A command for a device that is down waits this long for it "
        "(seconds); 0 replies with an error at once.",
    )
    backoff: BackoffConfig = BackoffConfig()

    @field_validator("servers")
    @classmethod
    def _servers_or_host(
        cls, servers: list[MqttServer] | None, info: ValidationInfo
    ) -> list[MqttServer] | None:
        # Declared after host: its value is known here, and the error points at `servers`.
        host = info.data.get("host", DEFAULT_HOST)
        if servers is not None and host != DEFAULT_HOST:
            raise ValueError(f"give either servers or host ({host}), not both")
        return servers

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttSection:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give either password or password_file, not both")
        return self

    @model_validator(mode="after")
    def _resumable(self) -> MqttSection:
        if self.session_expiry and self.protocol == "5" and self.qos == 2:
            # A new connection numbers its packets from 1 again; a resumed session may still
            # hold one of those ids as an unfinished QoS 2 exchange and drop the new message.
            raise ValueError("session_expiry with qos 2 could lose readings: use qos 1")
        return self

    def server_list(self) -> list[MqttServer]:
        """The brokers in the order they are tried: `servers`, or `host`/`port` as one."""
        if self.servers is None:
            return [MqttServer(host=self.host, port=self.port)]
        return [s if s.port else s.model_copy(update={"port": self.port}) for s in self.servers]

    def prefix_for(self, gateway_id: str) -> str:
        """`topic_prefix` with `{gateway}` filled in: the prefix of every topic."""
        return self.topic_prefix.format(gateway=gateway_id)


def default_client_id(gateway_id: str) -> str:
    """Stable per gateway id, and distinct for gateways that share an id on different hosts."""
    import socket  # noqa: PLC0415 - only needed here

    digest = hashlib.sha1(f"{gateway_id}@{socket.gethostname()}".encode(), usedforsecurity=False)
    return f"gateway-{gateway_id}-{digest.hexdigest()[:8]}"
