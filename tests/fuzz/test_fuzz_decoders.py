"""Fuzz: every serial decoder (kv, json, nmea, csv, regex, struct), the text-to-value helpers
(`values`), the event-name test (`events`) and `to_readings`, on random bytes and on near-valid
frames (built valid, then mutated). Only `DecodeError` may come out; what comes out is a value
JSON and a float can carry (no NaN, no infinity, no int beyond a float), under a topic-level
name, and no string longer than MAX_TEXT from the text decoders.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import struct
import sys
from functools import cache
from typing import Any

from fuzzing import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import SensorSpec, SerialDevice
from gateway.decoders import make_decoder, to_readings
from gateway.decoders.events import is_event
from gateway.decoders.values import decode_text, parse_number, parse_value
from gateway.errors import DecodeError
from gateway.limits import MAX_TEXT
from gateway.models import Value
from gateway.simdevices import nmea_sentence

TOPIC_LEVEL = re.compile(r"[A-Za-z0-9_.-]{1,64}")
FLOAT_MAX = sys.float_info.max

STRUCT = {
    "type": "struct",
    "format": ">HhIfd?4sq",
    "skip": 1,
    "fields": [
        {"name": "voltage", "scale": 0.1},
        {"name": "temp", "scale": 1e300, "offset": -40},  # overflows a double for big raws
        "energy",
        "power",
        {"name": "big", "scale": 1e10},
        None,
        "model",
        "count",
    ],
}
DECODERS: dict[str, Any] = {
    "kv": "kv",
    "json": "json",
    "nmea": "nmea",
    "csv": {"type": "csv", "columns": ["a", None, "b", "c"]},
    "csv_semicolon": {"type": "csv", "columns": ["a", "b"], "delimiter": ";"},
    "regex": {"type": "regex", "pattern": r"T=(?P<temp>[-+\d.eE]+)C(?: H=(?P<hum>\S+))?"},
    "regex_backtracking": {"type": "regex", "pattern": r"^(?P<v>(\d+)+)$"},
    "struct": STRUCT,
    "struct_double": {"type": "struct", "format": "<d", "fields": [{"name": "x", "scale": 3}]},
}


@cache  # one decoder per config, as a link has
def decoder(name: str) -> Any:
    device = SerialDevice.model_validate(
        {"id": "dev", "type": "serial", "port": "/dev/null", "decoder": DECODERS[name]}
    )
    return make_decoder(device)


def check_value(value: object) -> None:
    assert isinstance(value, bool | int | float | str), type(value)
    if isinstance(value, float):
        assert math.isfinite(value), value
    elif isinstance(value, int) and not isinstance(value, bool):
        assert -FLOAT_MAX <= value <= FLOAT_MAX  # a JSON consumer reads it as a double
    json.dumps(value, allow_nan=False)  # what the payload builder does


def check_fields(fields: dict[str, Value]) -> None:
    for key, value in fields.items():
        assert TOPIC_LEVEL.fullmatch(key), key
        check_value(value)


def decodes_or_refuses(name: str, frame: bytes) -> None:
    try:
        fields = decoder(name)(frame)
    except DecodeError:
        return
    check_fields(fields)


def mutated(frames: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """A valid frame with a few bytes flipped, cut or repeated."""

    def mutate(frame: bytes, edits: list[tuple[int, int, int]]) -> bytes:
        data = bytearray(frame)
        for kind, at, byte in edits:
            if not data:
                break
            i = at % len(data)
            if kind == 0:
                data[i] = byte
            elif kind == 1:
                del data[i:]
            else:
                data[i:i] = data[i : i + 1 + byte % 8] * (1 + byte % 3)
        return bytes(data)

    edit = st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 255))
    return st.builds(mutate, frames, st.lists(edit, max_size=3))


NUMBER_TEXT = st.one_of(
    st.integers().map(str),
    st.floats().map(repr),
    st.sampled_from(["9" * 400, "-" + "9" * 400, "9" * 5000, "1e999", "nan", "-inf", "1_0"]),
    st.from_regex(r"\A[-+]?[0-9]{0,30}(\.[0-9]{0,5})?([eE][-+]?[0-9]{1,4})?\Z"),
)
KV_LINES = st.lists(
    st.tuples(
        st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_.-]{0,8}\Z"), NUMBER_TEXT | st.text(max_size=8)
    ),
    min_size=1,
    max_size=5,
).map(lambda pairs: ",".join(f"{k}={v}" for k, v in pairs).encode())
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats()
    | st.text(max_size=10)
)
JSON_OBJECTS = st.recursive(
    st.dictionaries(st.text(max_size=8), JSON_SCALARS, max_size=4),
    lambda children: st.dictionaries(
        st.text(max_size=8), children | JSON_SCALARS | st.lists(JSON_SCALARS), max_size=3
    ),
    max_leaves=12,
).map(lambda obj: json.dumps(obj).encode())  # NaN and Infinity too: Python writes them
NMEA = st.builds(
    nmea_sentence,
    st.from_regex(
        r"\AG[PN](GGA|RMC|GSV),[0-9]{6}(\.[0-9]{2})?,[AV0-9]?,[0-9.]{0,12},[NSEW]?,"
        r"[0-9.]{0,12},[NSEW]?(,[0-9.eE+-]{0,8}){4}(,[A-Z0-9.]*){0,5}\Z"
    ),
)
CSV_LINES = st.lists(NUMBER_TEXT | st.text(max_size=300), min_size=1, max_size=5).map(
    lambda cells: ",".join(cells).encode()
)
REGEX_LINES = st.builds(
    lambda t, h: f"T={t}C H={h}".encode(), NUMBER_TEXT, NUMBER_TEXT | st.text(max_size=300)
)
STRUCT_FRAMES = st.builds(
    lambda head, raw: head + raw,
    st.binary(min_size=1, max_size=1),
    st.binary(min_size=35, max_size=35),
) | st.builds(
    lambda h, v, t, e, p, d, b, m, c: h + struct.pack(">HhIfd?4sq", v, t, e, p, d, b, m, c),
    st.binary(min_size=1, max_size=1),
    st.integers(0, 0xFFFF),
    st.integers(-0x8000, 0x7FFF),
    st.integers(0, 0xFFFFFFFF),
    st.floats(width=32),
    st.floats(),
    st.booleans(),
    st.binary(max_size=4),
    st.integers(-(2**63), 2**63 - 1),
)


@FUZZ
@given(name=st.sampled_from(sorted(DECODERS)), frame=st.binary(max_size=300))
def test_every_decoder_on_random_bytes_raises_only_decode_error(name: str, frame: bytes) -> None:
    decodes_or_refuses(name, frame)


@FUZZ
@given(frame=KV_LINES | mutated(KV_LINES))
def test_kv_near_valid(frame: bytes) -> None:
    decodes_or_refuses("kv", frame)


@FUZZ
@given(frame=JSON_OBJECTS | mutated(JSON_OBJECTS))
def test_json_near_valid(frame: bytes) -> None:
    decodes_or_refuses("json", frame)


@FUZZ
@given(frame=NMEA | mutated(NMEA))
def test_nmea_near_valid(frame: bytes) -> None:
    decodes_or_refuses("nmea", frame)


@FUZZ
@given(frame=CSV_LINES | mutated(CSV_LINES), name=st.sampled_from(["csv", "csv_semicolon"]))
def test_csv_near_valid(frame: bytes, name: str) -> None:
    try:
        fields = decoder(name)(frame)
    except DecodeError:
        return
    check_fields(fields)
    assert all(len(v) <= MAX_TEXT for v in fields.values() if isinstance(v, str))


@FUZZ
@given(frame=REGEX_LINES | mutated(REGEX_LINES))
def test_regex_near_valid(frame: bytes) -> None:
    try:
        fields = decoder("regex")(frame)
    except DecodeError:
        return
    check_fields(fields)
    assert all(len(v) <= MAX_TEXT for v in fields.values() if isinstance(v, str))


@FUZZ
@given(frame=st.from_regex(rb"\A\d{0,40}[x!]?\Z") | st.binary(max_size=60))
def test_a_backtracking_pattern_decodes_or_refuses(frame: bytes) -> None:
    """`(\\d+)+` on RE2: linear, whatever the line (Python's engine took minutes)."""
    decodes_or_refuses("regex_backtracking", frame)


@FUZZ
@given(frame=STRUCT_FRAMES | mutated(STRUCT_FRAMES), name=st.sampled_from(["struct"]))
def test_struct_near_valid(frame: bytes, name: str) -> None:
    decodes_or_refuses(name, frame)


@FUZZ
@given(frame=st.builds(struct.pack, st.just("<d"), st.floats()) | st.binary(max_size=10))
def test_struct_scaled_double(frame: bytes) -> None:
    decodes_or_refuses("struct_double", frame)


@FUZZ
@given(text=NUMBER_TEXT | st.text(max_size=400))
def test_values_parse_only_finite_numbers_that_fit_a_float(text: str) -> None:
    for parse in (parse_number, parse_value):
        try:
            value = parse(text)
        except DecodeError:
            continue
        if value is not None:
            check_value(value)


@FUZZ
@given(frame=st.binary(max_size=100), encoding=st.sampled_from(["utf-8", "ascii", "latin-1"]))
def test_decode_text_raises_only_decode_error(frame: bytes, encoding: str) -> None:
    with contextlib.suppress(DecodeError):
        assert isinstance(decode_text(frame, encoding), str)


@FUZZ
@given(name=st.text(max_size=70))
def test_is_event_answers_any_name(name: str) -> None:
    assert isinstance(is_event(name), bool)


VALUES = (
    st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.just(10**5000)  # beyond the int-to-text limit: no repr of it in a message
    | st.floats()
    | NUMBER_TEXT
    | st.text(max_size=20)
)


@FUZZ
@given(
    fields=st.dictionaries(st.from_regex(r"\A[a-z]{1,5}\Z"), VALUES, max_size=4),
    kind=st.sampled_from([None, "float", "int", "str", "bool"]),
)
def test_to_readings_coerces_or_raises_decode_error(fields: dict[str, Value], kind: Any) -> None:
    sensors = {name: SensorSpec(type=kind) for name in fields}
    try:
        readings = to_readings("dev", fields, sensors, 0.0)
    except DecodeError:
        return
    for reading in readings:
        if kind in {"float", "int"}:
            check_value(reading.value)
