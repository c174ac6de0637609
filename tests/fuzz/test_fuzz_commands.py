"""The command path under hypothesis: topics, the payload conversions of every family that takes
commands (serial command templates, Modbus register writes of every data type and scale, BLE
GATT payload formats) and the router that ties them together.

What is asserted: the conversions raise only the gateway's own refusals (GatewayError, or a
ValueError with a message); the router's `handle()` always returns a bounded reply string and
never raises; metric labels stay within the configured devices.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from fuzzing import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from gateway.ble.gatt import command_bytes
from gateway.commands import UNKNOWN, Command, CommandRouter, CommandTarget, parse_topic
from gateway.config import RegisterSpec, SerialDevice
from gateway.config.ble import GattWriteSpec
from gateway.errors import GatewayError
from gateway.limits import COMMAND_MAX_PAYLOAD, COMMAND_MAX_REPLY
from gateway.metrics import Metrics
from gateway.modbus.registers import encode
from gateway.mqtt.command_runner import CommandRunner

T = TypeVar("T")

NUMBERS = [
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
]

# Numbers as text: what a person, a script or an attacker may send.
number_texts = st.one_of(
    st.integers().map(str),
    st.floats().map(repr),
    st.from_regex(r"[+-]?\d{0,40}(\.\d{0,40})?([eE][+-]?\d{1,12})?", fullmatch=True),
    st.sampled_from(
        [
            *("nan", "-nan", "inf", "-Infinity", "sNaN", "1e30", "1e400", "1e39", "-1e999999999"),
            *("1e-999999999", "0", "-0", "1_000", " 42 ", "١٢٣", "0x10", "", "  "),
        ]
    ),
)
texts = st.one_of(number_texts, st.text(max_size=80))
payloads = st.one_of(
    st.binary(max_size=COMMAND_MAX_PAYLOAD + 8),
    texts.map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@st.composite
def registers(draw: st.DrawFn) -> RegisterSpec:
    kind = draw(st.sampled_from([*NUMBERS, "string", "bits", "coil"]))
    spec: dict[str, Any] = {
        "name": "r",
        "address": draw(st.integers(0, 1000)),
        "word_order": draw(st.sampled_from(["big", "little"])),
        "byte_order": draw(st.sampled_from(["big", "little"])),
    }
    if kind == "coil":
        spec["function"] = "coil"
    else:
        spec["data_type"] = kind
    if kind in ("string", "bits"):
        spec["count"] = draw(st.integers(1, 8))
    if kind == "string":
        spec["encoding"] = draw(st.sampled_from(["utf-8", "ascii", "latin-1", "utf-16-le"]))
    if kind in NUMBERS:
        spec["scale"] = draw(st.sampled_from([1.0, 0.1, 0.001, 10.0, -2.5, 1e-9, 1e9, 1e300]))
        spec["offset"] = draw(st.sampled_from([0.0, -40.0, 273.15, 1e-300, -1e300]))
    return RegisterSpec.model_validate(spec)


def refused_with_a_message(exc: BaseException) -> bool:
    return isinstance(exc, GatewayError | ValueError) and bool(str(exc))


def outcome(call: Callable[[], T]) -> T | Exception:
    """What `call` returned, or the exception it raised (any: which ones is what is tested)."""
    try:
        return call()
    except Exception as exc:  # (any: which ones come out is what is tested)
        return exc


@FUZZ
@given(st.text(max_size=120), st.sampled_from(["gateway", "site/a/gw"]))
def test_topics_parse_or_are_ignored_and_reply_addresses_are_judged(
    topic: str, prefix: str
) -> None:
    parsed = parse_topic(topic, prefix, "set")
    assert parsed is None or all(level and "/" not in level for level in parsed)
    runner = CommandRunner(
        CommandRouter(lambda _d: None, 0), Metrics(), prefix=prefix, verb="set", reply_timeout=1
    )
    allowed = runner.allowed(topic)
    if allowed:
        assert "+" not in topic
        assert "#" not in topic
        assert parse_topic(topic, prefix, "set") is None  # never one of our command topics


@FUZZ
@given(registers(), texts)
def test_modbus_writes_convert_or_refuse(reg: RegisterSpec, text: str) -> None:
    target = outcome(lambda: encode(reg, text))
    if isinstance(target, Exception):
        assert refused_with_a_message(target), repr(target)
        return
    if isinstance(target, bool):
        assert reg.kind == "bool"
        return
    assert len(target) == reg.words
    assert all(0 <= word <= 0xFFFF for word in target)


@FUZZ
@given(
    st.sampled_from(["raw", "hex", "text"]),
    st.one_of(st.none(), st.sampled_from(["00", "A5FF", "0102030405"])),
    payloads,
)
def test_gatt_payload_formats_convert_or_refuse(
    fmt: str, value: str | None, payload: bytes
) -> None:
    spec = GattWriteSpec.model_validate(
        {"characteristic": "0000ffe1-0000-1000-8000-00805f9b34fb", "payload": fmt, "value": value}
    )
    data = outcome(lambda: command_bytes(spec, payload))
    assert isinstance(data, bytes) or refused_with_a_message(data), repr(data)


# Templates with other fields (`{0}`, `{x}`) are refused when the config is loaded.
TEMPLATES = ["SP {payload}", "{payload}", "RST", "{{x}} {payload}", "{payload:>8}"]


def serial_link(encoding: str, framing: str) -> Any:
    """A serial link that is not open: its execute fills the template, then finds it down."""
    from gateway.links.serial import SerialLink  # noqa: PLC0415 - serial extras, lazily

    device = SerialDevice.model_validate(
        {
            "id": "boiler",
            "type": "serial",
            "port": "/dev/null",
            "encoding": encoding,
            "framing": framing if framing == "line" else {"type": "fixed", "length": 4},
            "decoder": "kv"
            if framing == "line"
            else {"type": "struct", "format": ">I", "fields": ["n"]},
            "commands": {f"c{i}": template for i, template in enumerate(TEMPLATES)},
            "raw_commands": True,
        }
    )
    return SerialLink(device, lambda _readings: None, Metrics())


@FUZZ
@given(
    st.sampled_from(["utf-8", "ascii", "latin-1", "utf-16"]),
    st.sampled_from(["line", "fixed"]),
    st.sampled_from(["raw", "nope", *(f"c{i}" for i in range(len(TEMPLATES)))]),
    payloads,
)
def test_serial_command_templates_fill_or_refuse(
    encoding: str, framing: str, name: str, payload: bytes
) -> None:
    link = serial_link(encoding, framing)
    refusal = outcome(lambda: asyncio.run(link.execute(name, payload)))
    assert isinstance(refusal, Exception), "an unopened port took a write"
    assert refused_with_a_message(refusal), repr(refusal)


class Converting:
    """A command target that is up and runs one family's conversion as its execute."""

    is_up = True

    def __init__(self, convert: Any) -> None:
        self._convert = convert

    async def wait_up(self) -> None:
        return None

    async def execute(self, command: str, payload: bytes) -> str | None:
        result = self._convert(command, payload)
        return result if isinstance(result, str) else None


BUGS: list[type[Exception]] = [KeyError, RuntimeError, TimeoutError, OSError, AttributeError]


def _bug(command: str, payload: bytes) -> None:
    raise BUGS[len(payload) % len(BUGS)](command)


def targets(reg: RegisterSpec) -> dict[str, CommandTarget]:
    gatt = GattWriteSpec.model_validate(
        {"characteristic": "0000ffe1-0000-1000-8000-00805f9b34fb", "payload": "hex"}
    )
    return {
        "meter": Converting(lambda _c, p: str(encode(reg, p.decode()))),
        "lamp": Converting(lambda _c, p: command_bytes(gatt, p).hex()),
        "buggy": Converting(_bug),
    }


@FUZZ
@given(
    registers(),
    st.one_of(st.sampled_from(["meter", "lamp", "buggy"]), st.text(max_size=80)),
    st.text(max_size=80),
    payloads,
)
def test_the_router_always_replies_and_labels_stay_bounded(
    reg: RegisterSpec, device: str, name: str, payload: bytes
) -> None:
    known = targets(reg)
    router = CommandRouter(known.get, ttl=0)
    reply = asyncio.run(router.handle(Command(device, name, payload)))
    assert isinstance(reply, str)
    assert reply == "ok" or reply.startswith(("ok: ", "error: "))
    assert len(reply) <= COMMAND_MAX_REPLY
    assert router.label(device) in {*known, UNKNOWN}
