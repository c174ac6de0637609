"""Decoders (kv, json) and to_readings: good frames, rejected frames, and random input that may
only ever raise DecodeError."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import SensorSpec, SerialDevice
from gateway.decoders import DECODERS, DecodeError, make_decoder, to_readings
from gateway.decoders.jsonobj import decode_json
from gateway.decoders.kv import decode_kv
from gateway.models import Reading, Value

pytestmark = pytest.mark.timeout(30)

TOPIC_LEVEL = re.compile(r"[A-Za-z0-9_.-]{1,64}")


# -- kv --------------------------------------------------------------------------------------


def test_kv_numbers_bools_and_words() -> None:
    fields = decode_kv(b"temp=21.5,hum=40;ok=true dry=FALSE\tstate=idle neg=-3 big=1e3")
    assert fields == {
        "temp": 21.5,
        "hum": 40,
        "ok": True,
        "dry": False,
        "state": "idle",
        "neg": -3,
        "big": 1000.0,
    }
    assert type(fields["hum"]) is int
    assert type(fields["temp"]) is float
    assert type(fields["ok"]) is bool


def test_kv_tolerates_surrounding_whitespace_and_repeated_separators() -> None:
    assert decode_kv(b"  a=1,, ;b=2 \r") == {"a": 1, "b": 2}


@pytest.mark.parametrize("value", [b"nan", b"NaN", b"inf", b"-inf", b"Infinity", b"1e999"])
def test_kv_rejects_non_finite_numbers(value: bytes) -> None:
    with pytest.raises(DecodeError, match="finite"):
        decode_kv(b"temp=" + value)


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"   ",
        b"temp",
        b"temp=",
        b"=21",
        b"1temp=21",
        b"temp=21,hum",
        b"temp=a/b",
        b"temp=" + b"x" * 65,
        b"k" * 65 + b"=1",
        b"temp=\xff",
    ],
)
def test_kv_rejects_malformed_frames(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_kv(frame)


# -- json ------------------------------------------------------------------------------------


def test_json_scalars() -> None:
    assert decode_json(b'{"temp": 21.5, "hum": 40, "ok": true, "state": "idle"}') == {
        "temp": 21.5,
        "hum": 40,
        "ok": True,
        "state": "idle",
    }


def test_json_nested_objects_are_flattened_and_lists_and_nulls_skipped() -> None:
    frame = b'{"a": {"b": 1, "c": {"d": true}}, "list": [1, 2], "none": null, "t": 2}'
    assert decode_json(frame) == {"a_b": 1, "a_c_d": True, "t": 2}


@pytest.mark.parametrize(
    "frame", [b"[1, 2]", b"42", b'"text"', b"null", b"true"], ids=lambda f: f.decode()
)
def test_json_rejects_non_objects(frame: bytes) -> None:
    with pytest.raises(DecodeError, match="expected a JSON object"):
        decode_json(frame)


@pytest.mark.parametrize(
    "frame", [b'{"t": NaN}', b'{"t": Infinity}', b'{"t": -Infinity}', b'{"t": 1e999}']
)
def test_json_rejects_non_finite_numbers(frame: bytes) -> None:
    with pytest.raises(DecodeError, match="finite"):
        decode_json(frame)


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"{",
        b"{'t': 1}",
        b'{"t": 1',
        b"\xff\xfe{}",
        b"{}",
        b'{"list": [1]}',
        b'{"bad key": 1}',
        b'{"a/b": 1}',
        b'{"": 1}',
        b'{"t\\n": 1}',
        b'{"' + b"k" * 65 + b'": 1}',
        b"[" * 100_000,
    ],
    ids=lambda f: repr(f[:20]),
)
def test_json_rejects_malformed_frames(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_json(frame)


# -- random input ----------------------------------------------------------------------------


def check_fields(fields: dict[str, Value]) -> None:
    assert fields
    for key, value in fields.items():
        assert TOPIC_LEVEL.fullmatch(key), key
        assert isinstance(value, bool | int | float | str)
        if isinstance(value, float):
            assert math.isfinite(value)


KV_TEXT = st.text(alphabet="ab1.=,; \t\r\n-+eE_xnaif:", max_size=60)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


@settings(max_examples=500, deadline=None)
@given(frame=st.binary(max_size=200) | KV_TEXT.map(str.encode))
def test_kv_raises_only_decode_error(frame: bytes) -> None:
    try:
        fields = decode_kv(frame)
    except DecodeError:
        return
    check_fields(fields)


@settings(max_examples=200, deadline=None)
@given(
    frame=st.binary(max_size=200)
    | JSON_VALUES.map(lambda v: json.dumps(v).encode())
    | st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=5).map(
        lambda v: json.dumps(v).encode()
    )
)
def test_json_raises_only_decode_error(frame: bytes) -> None:
    try:
        fields = decode_json(frame)
    except DecodeError:
        return
    check_fields(fields)


# -- to_readings -----------------------------------------------------------------------------


def test_to_readings_applies_unit_and_type() -> None:
    sensors = {
        "temp": SensorSpec(unit="°C", type="float"),
        "hum": SensorSpec(unit="%"),
        "count": SensorSpec(type="int"),
        "label": SensorSpec(type="str"),
        "on": SensorSpec(type="bool"),
        "off": SensorSpec(type="bool"),
    }
    fields: dict[str, Value] = {
        "temp": 21,
        "hum": 40,
        "count": "7.9",
        "label": 12.5,
        "on": "ON",
        "off": 0,
        "raw": "idle",
    }

    readings = to_readings("boiler", fields, sensors, ts=1234.5)

    assert readings == [
        Reading("boiler", "temp", 21.0, "°C", 1234.5),
        Reading("boiler", "hum", 40, "%", 1234.5),
        Reading("boiler", "count", 7, None, 1234.5),
        Reading("boiler", "label", "12.5", None, 1234.5),
        Reading("boiler", "on", True, None, 1234.5),
        Reading("boiler", "off", False, None, 1234.5),
        Reading("boiler", "raw", "idle", None, 1234.5),
    ]
    assert type(readings[0].value) is float
    assert type(readings[2].value) is int


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("warm", "float"),
        ("warm", "int"),
        ("nan", "int"),
        ("1e400", "int"),
        ("9" * 400, "int"),
        ("nan", "float"),
        ("inf", "float"),
        ("-Infinity", "float"),
        ("1e400", "float"),
    ],
)
def test_to_readings_bad_coercion_is_a_decode_error(value: str, kind: Any) -> None:
    sensors = {"temp": SensorSpec(type=kind)}
    with pytest.raises(DecodeError, match=f"temp=.* is not a {kind}|not a finite number"):
        to_readings("boiler", {"temp": value}, sensors, ts=0.0)


@settings(max_examples=500, deadline=None)
@given(
    value=st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["1e400", "-1e400", "nan", "inf", "1_000", " 12 ", "0x10", "١٢"]),
    kind=st.sampled_from(["float", "int", "str", "bool", None]),
)
def test_to_readings_raises_only_decode_error(value: Value, kind: Any) -> None:
    sensors = {"v": SensorSpec(unit="u", type=kind)}
    try:
        [reading] = to_readings("dev", {"v": value}, sensors, ts=1.0)
    except DecodeError:
        return
    assert (reading.device, reading.sensor, reading.unit) == ("dev", "v", "u")
    if isinstance(reading.value, float):
        assert math.isfinite(reading.value)
    if kind is not None:
        expected_type = {"float": float, "int": int, "str": str, "bool": bool}[kind]
        assert type(reading.value) is expected_type


def test_make_decoder_follows_the_device_config() -> None:
    base = {"id": "boiler", "type": "serial", "port": "/dev/ttyUSB0"}
    assert make_decoder(SerialDevice.model_validate(base)) is decode_kv
    assert make_decoder(SerialDevice.model_validate({**base, "decoder": "json"})) is decode_json
    assert set(DECODERS) == {"kv", "json"}
