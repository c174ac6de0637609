"""Serial devices: the port (`match`, settings; shared with Modbus RTU), framing, decoders,
polling."""

from __future__ import annotations

import codecs
import string
import struct
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from gateway.config.base import (
    TOPIC_LEVEL_RE,
    HexBytes,
    Model,
    SensorName,
    TopicLevel,
    hex_bytes,
)
from gateway.config.controls import ControlSpec
from gateway.config.devices import DeviceBase, device_model
from gateway.patterns import compile_linear
from gateway.yamlsource import Path_

#: A sensor a decoder's config names: (name, its unit if the config gives one, where it is
#: written relative to the decoder).
NamedSensor = tuple[str, str | None, Path_]


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

    def named_sensors(self) -> Iterator[NamedSensor]:
        for k, column in enumerate(self.columns):
            if column is not None:
                yield column, None, ("columns", k)


class RegexDecoder(Model):
    """Named groups of a regular expression: `T=(?P<temp>[-\\d.]+)C`."""

    type: Literal["regex"]
    pattern: str = Field(description="Searched in each frame; every named group is a sensor.")

    @field_validator("pattern")
    @classmethod
    def _compiles_with_named_groups(cls, value: str) -> str:
        groups = compile_linear(value).groupindex  # ValueError: why RE2 cannot run it
        if not groups:
            raise ValueError("needs at least one named group: (?P<name>...)")
        if bad := [name for name in groups if not TOPIC_LEVEL_RE.fullmatch(name)]:
            raise ValueError(f"group names must be ASCII topic levels: {', '.join(bad)}")
        return value

    def named_sensors(self) -> Iterator[NamedSensor]:
        for name in compile_linear(self.pattern).groupindex:
            yield name, None, ("pattern",)


class StructField(Model):
    name: SensorName = Field(description="The sensor's name: the topic level of its readings.")
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

    def named_sensors(self) -> Iterator[NamedSensor]:
        for k, field in enumerate(self.fields):
            if isinstance(field, str):
                yield field, None, ("fields", k)
            elif field is not None:
                yield field.name, field.unit, ("fields", k, "name")


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


def _template_fields(template: str) -> list[tuple[str, str | None, str | None]]:
    """The replacement fields of a `str.format` template: (name, conversion, format spec)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:  # a single { or }
        raise ValueError(f"not a template: {exc} (write {{{{ and }}}} for braces)") from None
    return [(name, conv, spec) for _, name, spec, conv in parsed if name is not None]


def _check_template(template: str) -> str:
    for name, _, _ in _template_fields(template):
        if name != "payload":
            raise ValueError(f"unknown field {{{name}}}: only {{payload}} is filled in")
    try:
        template.format(payload="0")
    except ValueError as exc:  # a format spec that does not fit a text
        raise ValueError(f"{{payload}} cannot be filled in: {exc}") from None
    return template


CommandTemplate = Annotated[str, AfterValidator(_check_template)]


class SerialCommand(Model):
    """A command whose template says how its payload is taken: as text (checked) or as bytes."""

    template: CommandTemplate = Field(
        description="Written to the port; `{payload}` is replaced by the command's payload."
    )
    payload: Literal["text", "bytes"] = Field(
        "text",
        description="`text`: the payload must be text in `encoding` without control "
        "characters (a terminator in it would write a second command), else it is refused; "
        "`bytes`: the payload's bytes as they come, any byte allowed (`{payload}` as is, "
        "without a conversion or format spec).",
    )

    @model_validator(mode="after")
    def _bytes_go_in_as_they_are(self) -> SerialCommand:
        if self.payload == "bytes" and any(
            conv or spec for _, conv, spec in _template_fields(self.template)
        ):
            raise ValueError("with payload: bytes, write {payload} without ! or :")
        return self


def _command_form(value: Any) -> str:
    return "template" if isinstance(value, str) else "object"


# A string is the template of a text command (the form of 0.1); an object says more. Tagged, so
# a mistake gets one error of the form written rather than one per form.
CommandSpec = Annotated[
    Annotated[CommandTemplate, Tag("template")] | Annotated[SerialCommand, Tag("object")],
    Discriminator(_command_form),
]


class SerialPortOptions(Model):
    """Where a serial port is and how it is set up: what a serial device and a Modbus RTU device
    share (`match` and `port` first: `port`'s check reads `match`)."""

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
    open_timeout: float = Field(5.0, gt=0, description="Seconds allowed to open the port.")

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

    @property
    def match_text(self) -> str:
        """`vid=0403 pid=6001`: the criteria given, for log lines and errors."""
        m = self.match
        if m is None:
            return ""
        given = {"vid": m.vid, "pid": m.pid, "serial_number": m.serial_number, "by_id": m.by_id}
        return " ".join(f"{k}={v}" for k, v in given.items() if v is not None)


@device_model
class SerialDevice(SerialPortOptions, DeviceBase):
    type: Literal["serial"]
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
    exclusive: bool = Field(True, description="Lock the port so a second opener fails.")
    commands: dict[TopicLevel, CommandSpec] = Field(
        default_factory=dict,
        description="MQTT command name -> text written to the port; `{payload}` is replaced by "
        "the command's payload (text without control characters, else refused) and the "
        "terminator is appended. Or {template, payload: bytes} for a payload of any bytes.",
    )
    controls: dict[TopicLevel, ControlSpec] = Field(
        default_factory=dict,
        description="Command name -> its Home Assistant control: {platform: switch, "
        "payload_on, payload_off, state: <sensor>} | {platform: button} | {platform: select, "
        "options: {payload: label}} | {platform: number, min, max, step}.",
    )
    raw_commands: bool = Field(
        False,
        description="Accept the built-in `raw` command: its payload is written to the port as "
        "it comes (any bytes, several commands at once). Off unless you need it.",
    )
    write_timeout: float = Field(
        2.0,
        gt=0,
        description="Seconds a command waits while the port holds more unwritten bytes than "
        "its high-water mark (the device reads slower than commands come); then it is "
        "answered `error: busy`.",
    )

    def decoder_sensors(self) -> Iterator[NamedSensor]:
        """The sensors the decoder's config names (kv, json and nmea name theirs only when
        they send them), located relative to the device."""
        if not isinstance(self.decoder, str):
            for name, unit, at in self.decoder.named_sensors():
                yield name, unit, ("decoder", *at)

    def named_sensors(self) -> Iterator[tuple[str, Path_]]:
        for name, _, at in self.decoder_sensors():
            yield name, at
        yield from super().named_sensors()

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
            "\n".encode(value)  # base64, rot13 and friends are codecs, not text encodings
        except LookupError:
            raise ValueError(f"unknown encoding {value!r} (a text encoding: utf-8, ...)") from None
        return value
