"""Configuration models (pydantic v2) and the loader that points errors at file:line:col.

Every timeout, limit and backoff default of the gateway lives in these models, documented in the
field descriptions (`gateway schema` prints them as JSON Schema).
"""

from __future__ import annotations

import codecs
import hashlib
import re
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from gateway.backoff import BackoffPolicy
from gateway.errors import ConfigError
from gateway.yamlsource import Located, Path_, dotted, load_yaml

# Device ids and sensor names become MQTT topic levels: no wildcards, separators or spaces.
TopicLevel = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", min_length=1, max_length=64)]
_TOPIC_LEVEL = re.compile(r"[A-Za-z0-9_.-]{1,64}")


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
    stall_timeout: float = Field(
        10.0,
        gt=0,
        description="A link this many seconds past the deadline of opening, backing off or "
        "closing counts as stuck: the systemd watchdog is no longer fed and /healthz fails.",
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

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttSection:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give either password or password_file, not both")
        return self


class LogSection(Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class MetricsSection(Model):
    """The HTTP endpoint: `/metrics` (Prometheus), `/healthz`, `/readyz` and `/status`."""

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


# -- serial devices: identity, framing, decoders, polling -----------------------------------------

SensorName = TopicLevel  # a sensor name becomes the last topic level of its readings


def hex_bytes(text: str) -> bytes:
    """`"aa 55"`, `"AA55"` -> b"\\xaa\\x55" (the config's notation for bytes)."""
    return bytes.fromhex(text)


def _check_hex(text: str) -> str:
    try:
        bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{text!r} is not hex bytes such as 'aa 55'") from None
    return text


HexBytes = Annotated[str, AfterValidator(_check_hex)]


def _usb_id(value: Any) -> Any:
    # YAML reads `vid: 0403` as the octal number 259 and `vid: 6001` as decimal: both wrong.
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(  # noqa: TRY004 - pydantic reports ValueError, not TypeError
            'write USB ids in quotes, as lsusb shows them: "0403"'
        )
    if isinstance(value, str):
        text = value.lower().removeprefix("0x")
        if len(text) != 4 or any(c not in "0123456789abcdef" for c in text):
            raise ValueError(f'{value!r} is not a USB id (4 hex digits, e.g. "0403")')
        return text
    return value


UsbId = Annotated[str, BeforeValidator(_usb_id)]


class SerialMatch(Model):
    """Find the port by what the device is rather than by its tty name. Every given criterion
    must hold; the port is looked up again at every (re)open, so a device that comes back as
    ttyUSB1 instead of ttyUSB0 is found."""

    vid: UsbId | None = Field(None, description='USB vendor id as lsusb shows it, quoted: "0403".')
    pid: UsbId | None = Field(None, description='USB product id, quoted: "6001".')
    serial_number: str | None = Field(None, description="USB serial number, exactly.")
    by_id: str | None = Field(
        None,
        description="Name of a symlink in by_id_dir, or a glob: `usb-FTDI_*_A50285BI-if00-*`.",
    )
    by_id_dir: Path = Field(
        Path("/dev/serial/by-id"),
        description="Directory of symlinks to ports that `by_id` is matched in (udev's stable "
        "names; /dev/serial/by-path or a directory of your own symlinks work the same way).",
    )

    @field_validator("by_id")
    @classmethod
    def _a_name_not_a_path(cls, value: str | None) -> str | None:
        if value is not None and "/" in value:
            raise ValueError("give the name in by_id_dir (a glob is fine); a path goes in `port:`")
        return value

    @model_validator(mode="after")
    def _something_to_match(self) -> SerialMatch:
        if not (self.vid or self.pid or self.serial_number or self.by_id):
            raise ValueError("give at least one of vid, pid, serial_number, by_id")
        return self


Endian = Literal["big", "little"]


class _ChecksumOptions(Model):
    checksum: Literal["none", "xor", "sum", "sum16", "crc16_modbus"] = Field(
        "none",
        description="Checksum at the end of each frame: xor and sum are 1 byte, sum16 and "
        "crc16_modbus (CRC-16/MODBUS) 2 bytes.",
    )
    checksum_endian: Endian | None = Field(
        None,
        description="Byte order of a 2-byte checksum; default little for crc16_modbus, "
        "big for sum16.",
    )
    checksum_includes_start: bool = Field(
        False, description="The checksum covers the start marker too (else: what follows it)."
    )

    @property
    def checksum_size(self) -> int:
        return {"none": 0, "xor": 1, "sum": 1}.get(self.checksum, 2)


class DelimiterFraming(Model):
    """Frames separated by delimiter bytes (binary-safe; empty frames are skipped)."""

    type: Literal["delimiter"]
    delimiter: HexBytes = Field(min_length=2, description="The delimiter, hex: '7e', '0d 0a'.")
    max_frame: int = Field(4096, ge=1, description="Longer frames are counted and skipped.")


class FixedFraming(_ChecksumOptions):
    """Frames of one size. With a start marker or a checksum the framer finds the frame
    boundaries again after garbage; with neither it cannot."""

    type: Literal["fixed"]
    length: int = Field(ge=1, le=65536, description="Bytes per frame, marker and checksum too.")
    start: HexBytes = Field("", description="Marker each frame starts with, hex (default none).")

    @model_validator(mode="after")
    def _room_for_payload(self) -> FixedFraming:
        if self.length <= len(hex_bytes(self.start)) + self.checksum_size:
            raise ValueError("length leaves no payload after the start marker and checksum")
        return self


class BinaryFraming(_ChecksumOptions):
    """start marker | length field | payload | checksum. Decoders get the payload."""

    type: Literal["binary"]
    start: HexBytes = Field(min_length=2, description="Marker each frame starts with, hex.")
    length_size: Literal[1, 2] = Field(1, description="Bytes of the length field after start.")
    length_endian: Endian = Field("big", description="Byte order of a 2-byte length field.")
    length_adjust: int = Field(
        0,
        ge=-65536,
        le=65536,
        description="Added to the length field to give the payload size: -2 when it counts a "
        "2-byte checksum, say.",
    )
    max_frame: int = Field(
        256, ge=2, le=65536, description="Larger frames (by their length field) are refused."
    )


def _kind(names: frozenset[str]) -> Callable[[Any], str | None]:
    """The tag of a decoder or framing setting: one of `names` (settings without options, such
    as `kv`) or an object's `type`. Anything else has no tag, which gives one clear error
    instead of an error per alternative."""

    def tag(value: Any) -> str | None:
        if isinstance(value, str):
            return value if value in names else None
        kind = value.get("type") if isinstance(value, Mapping) else getattr(value, "type", None)
        return kind if isinstance(kind, str) and kind not in names else None

    return tag


Framing = Annotated[
    Annotated[Literal["line"], Tag("line")]
    | Annotated[DelimiterFraming, Tag("delimiter")]
    | Annotated[FixedFraming, Tag("fixed")]
    | Annotated[BinaryFraming, Tag("binary")],
    Discriminator(
        _kind(frozenset({"line"})),
        custom_error_type="framing",
        custom_error_message="framing must be `line` or an object with type delimiter, fixed "
        "or binary",
    ),
]


class CsvDecoder(Model):
    """Delimited values in a fixed column order: `21.5,40,1013`."""

    type: Literal["csv"]
    columns: list[SensorName | None] = Field(
        min_length=1, description="Sensor name per column; null skips a column."
    )
    delimiter: str = Field(",", min_length=1, max_length=1, description="Column separator.")

    @field_validator("columns")
    @classmethod
    def _a_named_column(cls, value: list[str | None]) -> list[str | None]:
        if all(name is None for name in value):
            raise ValueError("name at least one column")
        return value


class RegexDecoder(Model):
    """Named groups of a regular expression: `T=(?P<temp>[-\\d.]+)C`."""

    type: Literal["regex"]
    pattern: str = Field(description="Searched in each frame; every named group is a sensor.")

    @field_validator("pattern")
    @classmethod
    def _compiles_with_named_groups(cls, value: str) -> str:
        try:
            groups = re.compile(value).groupindex
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        if not groups:
            raise ValueError("needs at least one named group: (?P<name>...)")
        if bad := [name for name in groups if not _TOPIC_LEVEL.fullmatch(name)]:
            raise ValueError(f"group names must be ASCII topic levels: {', '.join(bad)}")
        return value


class StructField(Model):
    name: SensorName
    scale: float = Field(1.0, description="Multiplies the raw value.")
    offset: float = Field(0.0, description="Added after scaling: value = raw * scale + offset.")
    unit: str | None = Field(None, description="Unit, unless `sensors:` gives one.")


class StructDecoder(Model):
    """Binary payloads unpacked with a Python struct format: `>HhI`."""

    type: Literal["struct"]
    format: str = Field(description="struct format with a byte order first (< > ! =).")
    fields: list[StructField | SensorName | None] = Field(
        description="One per unpacked value: a name, {name, scale, offset, unit}, or null to "
        "skip it."
    )
    skip: int = Field(0, ge=0, description="Bytes at the start of the frame to skip.")

    @field_validator("format")
    @classmethod
    def _valid_format(cls, value: str) -> str:
        if not value or value[0] not in "<>!=":
            raise ValueError("start with the byte order: < (little), > or ! (big), = (native)")
        try:
            struct.Struct(value)
        except struct.error as exc:
            raise ValueError(f"not a struct format: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_field_per_value(self) -> StructDecoder:
        layout = struct.Struct(self.format)
        values = len(layout.unpack(bytes(layout.size)))
        if all(f is None for f in self.fields):
            raise ValueError("name at least one field")
        if values != len(self.fields):
            raise ValueError(
                f"{self.format!r} unpacks {values} value(s) but fields has {len(self.fields)}"
            )
        return self

    def field_specs(self) -> list[StructField | None]:
        return [StructField(name=f) if isinstance(f, str) else f for f in self.fields]


Decoder = Annotated[
    Annotated[Literal["kv"], Tag("kv")]
    | Annotated[Literal["json"], Tag("json")]
    | Annotated[Literal["nmea"], Tag("nmea")]
    | Annotated[CsvDecoder, Tag("csv")]
    | Annotated[RegexDecoder, Tag("regex")]
    | Annotated[StructDecoder, Tag("struct")],
    Discriminator(
        _kind(frozenset({"kv", "json", "nmea"})),
        custom_error_type="decoder",
        custom_error_message="decoder must be kv, json, nmea, or an object with type csv, "
        "regex or struct (e.g. {type: csv, columns: [temp, hum]})",
    ),
]


class PollConfig(Model):
    """Request/response devices: write a query every `interval`, wait `timeout` for the answer.
    A missed answer is counted and the query is sent again at the next interval."""

    query: str | None = Field(
        None, description='Text written as is (encoded with `encoding`): "READ?\\r\\n".'
    )
    query_hex: HexBytes | None = Field(
        None, description="Or bytes, hex: '01 03 00 00 00 02 c4 0b'."
    )
    interval: float = Field(1.0, gt=0, description="Seconds between queries.")
    timeout: float = Field(
        0.5, gt=0, description="Seconds to wait for the first frame after a query."
    )

    @model_validator(mode="after")
    def _one_query_within_the_interval(self) -> PollConfig:
        if (self.query is None) == (self.query_hex is None):
            raise ValueError("give either query or query_hex")
        if self.query == "" or self.query_hex == "":
            raise ValueError("the query must not be empty")
        if self.timeout > self.interval:
            raise ValueError("timeout must not be longer than interval")
        return self


class SerialDevice(DeviceBase):
    type: Literal["serial"]
    match: SerialMatch | None = Field(
        None, description="Find the port by USB id, serial number or by-id name instead of `port`."
    )
    port: str | None = Field(
        None,
        validate_default=True,
        description="Device path, e.g. /dev/ttyUSB0 or /dev/serial/by-id/...; symlinks are "
        "followed at every (re)open. Give `port` or `match`.",
    )
    baudrate: int = Field(9600, gt=0, description="Bits per second.")
    bytesize: Literal[5, 6, 7, 8] = Field(8, description="Data bits.")
    parity: Literal["N", "E", "O", "M", "S"] = Field(
        "N", description="None, even, odd, mark or space."
    )
    stopbits: float = Field(1, description="1, 1.5 or 2.")
    rtscts: bool = Field(False, description="Hardware flow control (RTS/CTS).")
    xonxoff: bool = Field(False, description="Software flow control (XON/XOFF).")
    framing: Framing = Field(
        "line",
        description="`line` (split at `terminator`), or {type: delimiter | fixed | binary, ...}.",
    )
    decoder: Decoder = Field(
        "kv", description="kv | json | nmea, or {type: csv | regex | struct, ...}."
    )
    terminator: str = Field("\n", min_length=1, description="Line terminator.")
    encoding: str = Field(
        "utf-8", description="Of the terminator, text queries and the csv and regex decoders."
    )
    max_line: int = Field(4096, ge=16, description="Longer lines are counted and skipped.")
    poll: PollConfig | None = Field(None, description="Ask the device for each reading.")
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

    @field_validator("port")
    @classmethod
    def _port_or_match(cls, value: str | None, info: ValidationInfo) -> str | None:
        # `match` is declared first, so it is validated by now; if it is invalid it is missing
        # from info.data and its own error says enough.
        if "match" not in info.data:
            return value
        if value is None and info.data["match"] is None:
            raise PydanticCustomError("missing", "Field required")
        if value is not None and info.data.get("match") is not None:
            raise ValueError("give either port or match, not both")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        return value

    @property
    def match_text(self) -> str:
        """`vid=0403 pid=6001`: the criteria given, for log lines and errors."""
        m = self.match
        if m is None:
            return ""
        given = {"vid": m.vid, "pid": m.pid, "serial_number": m.serial_number, "by_id": m.by_id}
        return " ".join(f"{k}={v}" for k, v in given.items() if v is not None)


# -- Bluetooth LE (issue 5) ------------------------------------------------------------------

_BASE_UUID = "-0000-1000-8000-00805f9b34fb"
GATT_FORMATS = ("temperature", "humidity", "battery", "heart_rate", "text", "raw")


def _mac(value: str) -> str:
    return value.upper()


def _uuid(value: Any) -> Any:
    """`2a37`, `0x2A37` or a full UUID -> the full lower-case form bleak reports."""
    if isinstance(value, int):
        value = f"{value:04x}"
    if not isinstance(value, str):
        return value
    text = value.lower().removeprefix("0x")
    if re.fullmatch(r"[0-9a-f]{4}", text):
        return f"0000{text}{_BASE_UUID}"
    if re.fullmatch(r"[0-9a-f]{8}", text):
        return f"{text}{_BASE_UUID}"
    if not re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text):
        raise ValueError(f"{value!r} is not a UUID (e.g. 2a37 or 00002a37-0000-1000-8000-...)")
    return text


MacAddress = Annotated[
    str, Field(pattern=r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$"), AfterValidator(_mac)
]
AdapterName = Annotated[str, Field(pattern=r"^hci[0-9]{1,3}$")]
Uuid = Annotated[str, BeforeValidator(_uuid)]


class StructSpec(Model):
    """A Python `struct` layout: `format: "<hhB"`, `fields: [temperature, humidity, battery]`."""

    format: str = Field(description="struct format with explicit byte order (< > !), e.g. <hH.")
    fields: list[str] = Field(description="One name per value; `_` skips a value.")
    scale: dict[str, float] = Field(default_factory=dict, description="Per field: multiply by.")
    offset: int = Field(0, ge=0, le=255, description="Bytes to skip before the layout.")

    @model_validator(mode="after")
    def _layout(self) -> StructSpec:
        check_struct(self.format, self.fields, self.scale)
        return self


def check_struct(fmt: str, fields: list[str], scale: Mapping[str, float]) -> None:
    if not fmt or fmt[0] not in "<>!":
        raise ValueError("struct format must start with a byte order: < (little) > or ! (big)")
    try:
        count = len(struct.unpack(fmt, bytes(struct.calcsize(fmt))))
    except struct.error as exc:
        raise ValueError(f"invalid struct format {fmt!r}: {exc}") from exc
    if len(fields) != count:
        raise ValueError(f"struct format {fmt!r} has {count} value(s), fields names {len(fields)}")
    names = [f for f in fields if f != "_"]
    bad = [f for f in names if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", f)]
    if bad or len(set(names)) != len(names):
        raise ValueError(f"field names must be unique topic levels: {fields}")
    if unknown := set(scale) - set(names):
        raise ValueError(f"scale names unknown fields: {sorted(unknown)}")


class AdvertStructSpec(StructSpec):
    """Where the struct decoder finds its bytes: one company's manufacturer data or one
    service's data."""

    manufacturer_id: int | None = Field(None, ge=0, le=0xFFFF, description="Company id.")
    service_uuid: Uuid | None = Field(None, description="Service data UUID, e.g. 181a.")

    @model_validator(mode="after")
    def _one_source(self) -> AdvertStructSpec:
        if (self.manufacturer_id is None) == (self.service_uuid is None):
            raise ValueError("give exactly one of manufacturer_id and service_uuid")
        return self


class BleAdvertDevice(DeviceBase):
    """A passive sensor: its advertisements, heard by the adapter's scanner, are decoded."""

    type: Literal["ble_advert"]
    address: MacAddress | None = Field(None, description="The device's address.")
    name: str | None = Field(
        None, description="Or: a pattern (fnmatch, e.g. `ATC_*`) on the advertised name."
    )
    decoder: Literal["bthome", "pvvx", "atc", "ruuvi", "ibeacon", "struct"]
    bindkey: SecretStr | None = Field(
        None, description="BTHome encryption key: 32 hex digits (keep it out of logs)."
    )
    struct: AdvertStructSpec | None = Field(None, description="Layout for `decoder: struct`.")
    adapter: AdapterName | None = Field(None, description="Default: ble.adapter.")
    republish_after: float = Field(
        60.0, ge=0, description="Unchanged values are published again at most this often (s)."
    )
    rssi: bool = Field(
        False, description="Also publish signal_strength (RSSI, dBm), every republish_after."
    )
    stale_after: float = Field(
        900.0, gt=0, description="Not heard this long (s): the device's link goes down."
    )
    repeat_window: float = Field(
        4.0,
        ge=0,
        description="BTHome: an advert with the last packet id within this many seconds of "
        "the previous copy is a repeat and dropped; after a longer silence, a new packet (s).",
    )

    @field_validator("bindkey")
    @classmethod
    def _hex_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(r"[0-9A-Fa-f]{32}", value.get_secret_value()):
            raise ValueError("bindkey must be 32 hex digits (16 bytes)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> BleAdvertDevice:
        if (self.address is None) == (self.name is None):
            raise ValueError("give exactly one of address and name")
        if (self.decoder == "struct") != (self.struct is not None):
            raise ValueError("`struct:` goes with `decoder: struct`, and only with it")
        if self.bindkey is not None and self.decoder != "bthome":
            raise ValueError("bindkey is only used by `decoder: bthome`")
        return self


class GattValueSpec(Model):
    """A characteristic whose value becomes readings."""

    characteristic: Uuid = Field(description="UUID, e.g. 2a37 or the full form.")
    format: str = Field(
        description="temperature (0x2A6E), humidity (0x2A6F), battery (0x2A19), heart_rate "
        "(0x2A37), text (UTF-8), raw (hex string), or a struct format such as <hH."
    )
    sensor: TopicLevel | None = Field(None, description="Sensor name; default: the format's.")
    fields: list[str] = Field(default_factory=list, description="For a struct format.")
    scale: dict[str, float] = Field(default_factory=dict, description="For a struct format.")

    @model_validator(mode="after")
    def _format(self) -> GattValueSpec:
        if self.format in GATT_FORMATS:
            if self.fields or self.scale:
                raise ValueError(f"fields/scale go with a struct format, not {self.format!r}")
        else:
            check_struct(self.format, self.fields, self.scale)
        return self


class GattPollSpec(GattValueSpec):
    interval: float = Field(60.0, gt=0, description="Read every this many seconds.")


class GattWriteSpec(Model):
    """An MQTT command written to a characteristic."""

    characteristic: Uuid
    response: bool = Field(True, description="Write with response (acknowledged).")
    payload: Literal["raw", "hex", "text"] = Field(
        "raw", description="How the MQTT payload becomes bytes: as is, hex digits, UTF-8."
    )
    value: str | None = Field(
        None,
        pattern=r"^([0-9A-Fa-f]{2})+$",
        description="Fixed bytes (hex); the payload is ignored.",
    )


class BleGattDevice(DeviceBase):
    """A connected device: notifications, periodic reads and command writes over GATT."""

    type: Literal["ble_gatt"]
    address: MacAddress
    adapter: AdapterName | None = Field(None, description="Default: ble.adapter.")
    notify: list[GattValueSpec] = Field(default_factory=list)
    poll: list[GattPollSpec] = Field(default_factory=list)
    commands: dict[TopicLevel, GattWriteSpec] = Field(default_factory=dict)
    find_timeout: float = Field(
        30.0, gt=0, description="Wait this long for the scanner to hear the device (s)."
    )
    connect_timeout: float = Field(
        60.0, gt=0, description="Whole connect, all attempts (outer safety timeout, s)."
    )
    connect_attempts: int = Field(3, ge=1, le=10, description="Attempts per connect.")
    io_timeout: float = Field(10.0, gt=0, description="Per read, write or subscribe (s).")
    disconnect_timeout: float = Field(5.0, gt=0, description="Disconnect on stop (s).")


ScanningMode = Literal["active", "passive"]
# AD types a passive-scanning pattern may name: those of bleak's AdvertisementDataType.
AD_TYPES = frozenset({*range(0x01, 0x0B), 0x0D, 0x16, 0x20, 0x21, 0xFF})
AD_DATA_MAX = 31  # bytes of data in a legacy advertisement, the most a pattern can match


class PassivePattern(Model):
    """A BlueZ advertisement monitor pattern: an advertisement matches when one of its AD
    structures of type `ad_type` holds `data` at byte `start` of its data."""

    ad_type: int = Field(
        description="AD type: 0x16 service data (16-bit UUID), 0xFF manufacturer data, "
        "0x09 complete local name, 0x03 16-bit service UUIDs, ..."
    )
    data: str = Field(
        pattern=r"^([0-9A-Fa-f]{2})+$",
        description="The bytes to find, hex, as sent (little endian): `9904` is Ruuvi's "
        "company id 0x0499, `d2fc` BTHome's service UUID 0xFCD2.",
    )
    start: int = Field(0, ge=0, le=30, description="Where in the AD structure's data.")

    @field_validator("ad_type")
    @classmethod
    def _known_type(cls, value: int) -> int:
        if value not in AD_TYPES:
            known = ", ".join(f"0x{t:02X}" for t in sorted(AD_TYPES))
            raise ValueError(f"ad_type 0x{value:02X} is not one of {known}")
        return value

    @model_validator(mode="after")
    def _fits(self) -> PassivePattern:
        if self.start + len(self.data) // 2 > AD_DATA_MAX:
            raise ValueError(f"start + length of data exceeds {AD_DATA_MAX} bytes")
        return self


class BleAdapterSpec(Model):
    """Per-adapter settings, overriding the `ble` section's for one adapter."""

    scanning_mode: ScanningMode | None = Field(None, description="Default: ble.scanning_mode.")
    passive_patterns: list[PassivePattern] = Field(
        default_factory=list, description="Added to ble.passive_patterns on this adapter."
    )


class BleSection(Model):
    """Bluetooth LE: the adapters' scanners and connection limits."""

    adapter: AdapterName = Field("hci0", description="Default adapter of BLE devices.")
    scanning_mode: ScanningMode = Field(
        "active",
        description="active (scan requests: names and scan responses too) or passive (listen "
        "only, through BlueZ's advertisement monitor with patterns from the devices' decoders; "
        "needs BlueZ's experimental features, falls back to active where unsupported).",
    )
    passive_patterns: list[PassivePattern] = Field(
        default_factory=list,
        description="Passive scanning: patterns added to those derived from the decoders "
        "(e.g. for ble_gatt devices, which have none).",
    )
    adapters: dict[AdapterName, BleAdapterSpec] = Field(
        default_factory=dict, description="Per-adapter overrides: scanning_mode, patterns."
    )
    unknown_devices: Literal["ignore", "publish"] = Field(
        "ignore",
        description="Adverts of unconfigured devices: ignore, or publish what a built-in "
        "decoder reads, as device `ble_<address>` (limited by `allow`).",
    )
    allow: list[str] = Field(
        default_factory=list,
        description="With unknown_devices: publish: address patterns (fnmatch) to publish; "
        "empty: any.",
    )
    max_connections: int = Field(
        3, ge=1, le=32, description="GATT connections at once per adapter; more links wait."
    )
    silence_timeout: float = Field(
        60.0,
        gt=0,
        description="No advert this long while advert devices are configured: "
        "the scanner is silent and is restarted (s).",
    )
    restarts: int = Field(
        2, ge=0, description="Silent-scanner restarts before the adapter is power-cycled."
    )
    power_cycles: int = Field(
        1, ge=0, description="Power cycles before the daemon exits (status 3) for systemd."
    )
    start_timeout: float = Field(10.0, gt=0, description="Start/stop of a scan (s).")
    power_timeout: float = Field(10.0, gt=0, description="Each step of a power cycle (s).")
    backoff: BackoffConfig = BackoffConfig()

    def scanning_mode_of(self, adapter: str) -> ScanningMode:
        spec = self.adapters.get(adapter)
        if spec is None or spec.scanning_mode is None:
            return self.scanning_mode
        return spec.scanning_mode

    def passive_patterns_of(self, adapter: str) -> list[PassivePattern]:
        spec = self.adapters.get(adapter)
        return [*self.passive_patterns, *(spec.passive_patterns if spec else ())]


# -- end of Bluetooth LE ---------------------------------------------------------------------


Device = Annotated[SerialDevice | BleAdvertDevice | BleGattDevice, Field(discriminator="type")]


class Config(Model):
    gateway: GatewaySection
    mqtt: MqttSection = MqttSection()
    outbox: OutboxConfig = OutboxConfig()
    log: LogSection = LogSection()
    metrics: MetricsSection = MetricsSection()
    devices: list[Device] = Field(default_factory=list)
    ble: BleSection = BleSection()

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
