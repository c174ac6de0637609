"""Configuration models (pydantic v2) and the loader that points errors at file:line:col.

Every timeout, limit and backoff default of the gateway lives in these models, documented in the
field descriptions (`gateway schema` prints them as JSON Schema).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.backoff import BackoffPolicy
from gateway.errors import ConfigError
from gateway.yamlsource import Located, Path_, dotted, load_yaml

# Device ids and sensor names become MQTT topic levels: no wildcards, separators or spaces.
TopicLevel = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", min_length=1, max_length=64)]


class Model(BaseModel):
    """Frozen, strict about unknown keys: a typo in a key is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BackoffConfig(Model):
    initial: float = Field(0.5, gt=0, description="First retry delay bound, seconds.")
    max: float = Field(30.0, gt=0, description="Cap on the retry delay, seconds.")
    multiplier: float = Field(2.0, ge=1, description="Growth of the delay bound per failure.")
    reset_after: float = Field(
        30.0, ge=0, description="A link up this long starts its next backoff from `initial`."
    )

    def policy(self) -> BackoffPolicy:
        return BackoffPolicy(self.initial, self.max, self.multiplier, self.reset_after)


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
    commit_interval: float = Field(
        0.0,
        ge=0,
        le=5,
        description="Group commits for this long (seconds); 0 commits at the end of each "
        "event-loop iteration, which already groups a burst.",
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
    file: str = Field("outbox.sqlite3", description="File name inside state_dir.")


class GatewaySection(Model):
    id: TopicLevel = Field(description="Gateway id: status topic and default MQTT client id.")
    state_dir: Path = Field(
        Path("/var/lib/gateway"),
        description="Where state lives. Relative paths are relative to the config file.",
    )
    shutdown_timeout: float = Field(
        10.0, gt=0, description="Seconds to flush queued readings and close links on SIGTERM."
    )


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


class MqttSection(Model):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    client_id: str | None = Field(
        None, description="Default: `gateway-<id>-<hash>`, stable per gateway id and host."
    )
    keepalive: int = Field(30, ge=1, le=65535, description="MQTT keepalive, seconds.")
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = Field(
        None, description="File holding the password (relative to the config file)."
    )
    topic_prefix: str = Field("gateway", pattern=r"^[^#+]+$")
    qos: Literal[0, 1, 2] = Field(1, description="QoS of readings.")
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to wait for CONNACK.")
    publish_timeout: float = Field(
        10.0, gt=0, description="Seconds to wait for a PUBACK before the session is reset."
    )
    inflight: int = Field(
        64, ge=1, le=65535, description="Publishes awaiting acknowledgement at once."
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

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttSection:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give either password or password_file, not both")
        return self


class LogSection(Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class SensorSpec(Model):
    unit: str | None = Field(None, description="Unit published with the value, e.g. °C.")
    type: Literal["float", "int", "str", "bool"] | None = Field(
        None, description="Coerce the decoded value to this type."
    )


class DeviceBase(Model):
    id: TopicLevel
    sensors: dict[str, SensorSpec] = Field(
        default_factory=dict, description="Per-sensor unit and type."
    )
    backoff: BackoffConfig = BackoffConfig()


class SerialDevice(DeviceBase):
    type: Literal["serial"]
    port: str = Field(description="Device path, e.g. /dev/ttyUSB0.")
    baudrate: int = Field(9600, gt=0)
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: float = Field(1, description="1, 1.5 or 2.")
    decoder: Literal["kv", "json"] = "kv"
    terminator: str = Field("\n", min_length=1, description="Line terminator.")
    encoding: str = "utf-8"
    max_line: int = Field(4096, ge=16, description="Longer lines are counted and skipped.")
    open_timeout: float = Field(5.0, gt=0, description="Seconds allowed to open the port.")
    exclusive: bool = Field(True, description="Lock the port so a second opener fails.")
    commands: dict[TopicLevel, str] = Field(
        default_factory=dict,
        description="MQTT command name -> text written to the port; `{payload}` is replaced by "
        "the command's payload and the terminator is appended. `raw` (payload as is) is built in.",
    )

    @field_validator("stopbits")
    @classmethod
    def _valid_stopbits(cls, value: float) -> float:
        if value not in (1, 1.5, 2):
            raise ValueError("stopbits must be 1, 1.5 or 2")
        return value


Device = Annotated[SerialDevice, Field(discriminator="type")]


class Config(Model):
    gateway: GatewaySection
    mqtt: MqttSection = MqttSection()
    outbox: OutboxConfig = OutboxConfig()
    log: LogSection = LogSection()
    devices: list[Device] = Field(default_factory=list)

    def device(self, device_id: str) -> Device | None:
        return next((d for d in self.devices if d.id == device_id), None)


def default_client_id(gateway_id: str) -> str:
    """Stable per gateway id, and distinct for gateways that share an id on different hosts."""
    import socket  # noqa: PLC0415 - only needed here

    digest = hashlib.sha1(f"{gateway_id}@{socket.gethostname()}".encode(), usedforsecurity=False)
    return f"gateway-{gateway_id}-{digest.hexdigest()[:8]}"


def _strip_tags(loc: tuple[int | str, ...], data: Any) -> Path_:
    """Drop the discriminator tags pydantic puts in error paths (`devices.0.serial.port`)."""
    out: list[str | int] = []
    node = data
    for part in loc:
        is_tag = isinstance(node, Mapping) and isinstance(part, str) and part not in node
        if is_tag and node.get("type") == part:
            continue
        out.append(part)
        node = (
            node.get(part)
            if isinstance(node, Mapping)
            else (
                node[part]
                if isinstance(node, list) and isinstance(part, int) and part < len(node)
                else None
            )
        )
    return tuple(out)


def _format_errors(exc: ValidationError, located: Located) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = _strip_tags(err["loc"], located.data)
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see `gateway schema`)"
        elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, "type")
            if err["type"] == "union_tag_not_found":
                message = "missing `type:` (it selects the device model, e.g. `type: serial`)"
        problems.append(f"{located.where(loc)}: {dotted(loc)}: {message}")
    return problems


def _resolve_paths(cfg: Config, base: Path, located: Located) -> Config:
    """Make relative paths relative to the config file and read password_file."""
    state_dir = cfg.gateway.state_dir
    if not state_dir.is_absolute():
        state_dir = (base / state_dir).resolve()
    mqtt = cfg.mqtt
    if mqtt.password_file is not None:
        file = mqtt.password_file if mqtt.password_file.is_absolute() else base / mqtt.password_file
        try:
            secret = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            loc: Path_ = ("mqtt", "password_file")
            raise ConfigError(
                [f"{located.where(loc)}: {dotted(loc)}: cannot read {file}: {exc.strerror}"]
            ) from exc
        mqtt = mqtt.model_copy(update={"password": SecretStr(secret), "password_file": file})
    if mqtt.tls is not None:
        tls = mqtt.tls
        files = {
            name: (value if value.is_absolute() else base / value)
            for name in ("ca_file", "cert_file", "key_file")
            if (value := getattr(tls, name)) is not None
        }
        mqtt = mqtt.model_copy(update={"tls": tls.model_copy(update=files)})
    return cfg.model_copy(
        update={"gateway": cfg.gateway.model_copy(update={"state_dir": state_dir}), "mqtt": mqtt}
    )


def _check_unique_ids(cfg: Config, located: Located) -> list[str]:
    seen: dict[str, int] = {}
    problems = []
    for i, device in enumerate(cfg.devices):
        if device.id in seen:
            loc: Path_ = ("devices", i, "id")
            problems.append(
                f"{located.where(loc)}: {dotted(loc)}: duplicate device id {device.id!r} "
                f"(first used by devices[{seen[device.id]}])"
            )
        seen.setdefault(device.id, i)
    return problems


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Load, interpolate and validate a config file; raise ConfigError listing every problem."""
    file = Path(path)
    located = load_yaml(file, env)
    if not isinstance(located.data, dict):
        raise ConfigError([f"{file}:1:1: the config must be a mapping with a `gateway:` section"])
    try:
        cfg = Config.model_validate(located.data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, located)) from exc
    if problems := _check_unique_ids(cfg, located):
        raise ConfigError(problems)
    return _resolve_paths(cfg, file.resolve().parent, located)


def json_schema() -> dict[str, Any]:
    return TypeAdapter(Config).json_schema()
