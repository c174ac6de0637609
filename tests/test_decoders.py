"""Decoders (kv, json, csv, regex, struct, nmea) and to_readings: good frames, rejected frames,
and random input that may only ever raise DecodeError."""

from __future__ import annotations

import json
import math
import re
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import SensorSpec, SerialDevice
from gateway.decoders import DECODERS, DecodeError, make_decoder, sensor_specs, to_readings
from gateway.decoders.jsonobj import decode_json
from gateway.decoders.kv import decode_kv
from gateway.decoders.nmea import decode_nmea
from gateway.models import Reading, Value
from gateway.simdevices import nmea_sentence

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
    assert set(DECODERS) == {"kv", "json", "nmea"}


# -- csv, regex, struct, nmea --------------------------------------------------------------------


def serial(decoder: Any, **extra: Any) -> SerialDevice:
    return SerialDevice.model_validate(
        {"id": "dev", "type": "serial", "port": "/dev/ttyUSB0", "decoder": decoder, **extra}
    )


def decode(decoder: Any, frame: bytes, **extra: Any) -> dict[str, Value]:
    return make_decoder(serial(decoder, **extra))(frame)


def test_csv_named_columns_skipped_columns_and_empty_cells() -> None:
    spec = {"type": "csv", "columns": ["temp", None, "hum", "state", "ok"]}
    assert decode(spec, b"21.5,xx,40,idle,true") == {
        "temp": 21.5,
        "hum": 40,
        "state": "idle",
        "ok": True,
    }
    assert decode(spec, b'21.5,xx,,"two words",') == {"temp": 21.5, "state": "two words"}
    semicolons = {**spec, "delimiter": ";"}
    assert decode(semicolons, "1;2;3;°C;false".encode("latin-1"), encoding="latin-1") == {
        "temp": 1,
        "hum": 3,
        "state": "°C",
        "ok": False,
    }


@pytest.mark.parametrize(
    "frame", [b"1,2,3", b"1,2,3,4,5,6", b",,,,", b"nan,1,2,3,4", b"\xff,1,2,3,4", b'"a,1,2,3,4']
)
def test_csv_rejects_frames_that_do_not_fit_the_columns(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        decode({"type": "csv", "columns": ["a", "b", "c", "d", "e"]}, frame)


def test_regex_named_groups() -> None:
    spec = {"type": "regex", "pattern": r"T=(?P<temp>-?[\d.]+)C(?: H=(?P<hum>\d+)%)?"}
    assert decode(spec, b"#12 T=-3.5C H=40% end") == {"temp": -3.5, "hum": 40}
    assert decode(spec, b"T=21C") == {"temp": 21}  # a group that did not take part: no value
    with pytest.raises(DecodeError, match="does not match"):
        decode(spec, b"temp 21")


def meter_decoder() -> dict[str, Any]:
    return {
        "type": "struct",
        "format": ">HhIf?4s",
        "skip": 1,
        "fields": [
            {"name": "voltage", "scale": 0.1, "unit": "V"},
            {"name": "temp", "scale": 0.5, "offset": -40},
            "energy",
            "power",
            None,
            "model",
        ],
    }


def test_struct_scales_offsets_and_names_fields() -> None:
    frame = b"\x81" + struct.pack(">HhIf?4s", 2345, 130, 70000, 1.5, True, b"M1\0\0")
    assert decode(meter_decoder(), frame) == {
        "voltage": 234.5,  # 2345 * 0.1, not 234.50000000000003
        "temp": 25.0,
        "energy": 70000,
        "power": 1.5,
        "model": "M1",
    }


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x81" + bytes(14),  # one byte short
        b"\x81" + bytes(16),  # one byte long
        b"\x81" + struct.pack(">HhIf?4s", 1, 1, 1, math.nan, False, b"xx"),
        b"\x81" + struct.pack(">HhIf?4s", 1, 1, 1, 1.0, False, b"\xff\xfe"),
    ],
)
def test_struct_rejects_frames_of_the_wrong_size_and_bad_values(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(meter_decoder(), frame)


GGA = b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"
RMC = b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"


def test_nmea_gga_and_rmc() -> None:
    assert decode_nmea(GGA) == {
        "fix_quality": 1,
        "satellites": 8,
        "lat": 48.1173,
        "lon": 11.5166667,
        "hdop": 0.9,
        "alt": 545.4,
    }
    assert decode_nmea(RMC) == {"lat": 48.1173, "lon": 11.5166667, "speed": 11.524, "course": 84.4}


def test_nmea_southern_and_western_hemispheres_and_other_talkers() -> None:
    fields = decode_nmea(nmea_sentence("GNGGA,0,3351.000,S,15112.600,W,2,12,1.0,-3.0,M,,,,"))
    assert (fields["lat"], fields["lon"], fields["alt"]) == (-33.85, -151.21, -3.0)


def test_nmea_without_fix_gives_no_position() -> None:
    assert decode_nmea(nmea_sentence("GPGGA,0,,,,,0,00,,,M,,M,,")) == {
        "fix_quality": 0,
        "satellites": 0,
    }
    assert decode_nmea(nmea_sentence("GPRMC,0,V,,,,,,,230394,,")) == {}


def test_nmea_other_sentences_are_ignored_not_errors() -> None:
    assert decode_nmea(nmea_sentence("GPGSV,1,1,01,07,79,048,42")) == {}
    assert decode_nmea(nmea_sentence("PUBX,00,foo")) == {}


@pytest.mark.parametrize(
    "frame",
    [
        GGA.replace(b"*47", b"*48"),  # wrong checksum
        GGA.replace(b"545.4", b"545.5"),  # damaged in transit: the checksum catches it
        GGA[:-3],  # no checksum
        GGA.replace(b"*47", b"*4G"),
        GGA[1:],
        b"$" + b"x" * 200,
        nmea_sentence("GPGGA,0,4807.038,N"),  # too short
        nmea_sentence("GPGGA,0,9107.038,N,01131.000,E,1,08,0.9,545.4,M,,M,,"),  # lat > 90
        nmea_sentence("GPGGA,0,4867.038,N,01131.000,E,1,08,0.9,545.4,M,,M,,"),  # 67 minutes
        nmea_sentence("GPGGA,0,4807.038,X,01131.000,E,1,08,0.9,545.4,M,,M,,"),
        nmea_sentence("GPGGA,0,4807.038,N,01131.000,E,1,08,0.9,nan,M,,M,,"),
        nmea_sentence("GPRMC,0,A,4807.038,N,01131.000,E,fast,084.4,230394,,"),
        "$GPGGA,ü*00".encode(),
    ],
)
def test_nmea_rejects_damaged_sentences(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_nmea(frame)


def test_sensor_specs_add_decoder_units_under_the_configured_ones() -> None:
    gps = serial("nmea", sensors={"alt": {"unit": "ft"}, "speed": {"type": "float"}})
    specs = sensor_specs(gps)
    assert specs["alt"] == SensorSpec(unit="ft")  # the config wins
    assert specs["speed"] == SensorSpec(unit="m/s", type="float")  # the unit fills a gap
    assert specs["lat"].unit == "°"
    meter = serial(meter_decoder(), sensors={"energy": {"unit": "kWh"}})
    specs = sensor_specs(meter)
    assert (specs["voltage"].unit, specs["energy"].unit) == ("V", "kWh")
    assert "temp" not in specs


ANY_DECODER = st.sampled_from(
    [
        "kv",
        "json",
        "nmea",
        {"type": "csv", "columns": ["a", None, "b"]},
        {"type": "regex", "pattern": r"(?P<a>\w+)=(?P<b>[^,]*)"},
        meter_decoder(),
        {"type": "struct", "format": "<d", "fields": ["x"]},
    ]
)
NMEA_LIKE = st.builds(
    lambda body, damage: nmea_sentence(body) if not damage else b"$" + body.encode() + b"*00",
    st.text(alphabet="GPAMRC0123456789.,NSEW-", max_size=70),
    st.booleans(),
)


@settings(max_examples=500, deadline=None)
@given(decoder=ANY_DECODER, frame=st.binary(max_size=80) | NMEA_LIKE)
def test_every_decoder_raises_only_decode_error(decoder: Any, frame: bytes) -> None:
    try:
        fields = make_decoder(serial(decoder))(frame)
    except DecodeError:
        return
    if fields:
        check_fields(fields)


# -- numbers that do not fit a float (issue 21, items 7 and 16) -----------------------------

HUGE = "9" * 400  # an int Python holds, a float cannot (and JSON consumers cannot either)
OVER_INT_LIMIT = "9" * 5000  # beyond int()'s 4300-digit limit: ValueError, not a number


@pytest.mark.parametrize("digits", [HUGE, "-" + HUGE])
def test_kv_number_beyond_a_float_is_a_decode_error(digits: str) -> None:
    with pytest.raises(DecodeError, match="float"):
        decode_kv(f"temp=1,big={digits}".encode())


def test_kv_number_beyond_the_int_digit_limit_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode_kv(f"big={OVER_INT_LIMIT}".encode())


@pytest.mark.parametrize("digits", [HUGE, "-" + HUGE])
def test_json_number_beyond_a_float_is_a_decode_error(digits: str) -> None:
    with pytest.raises(DecodeError, match="float"):
        decode_json(f'{{"temp": 1, "big": {digits}}}'.encode())


def test_json_number_beyond_the_int_digit_limit_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode_json(f'{{"big": {OVER_INT_LIMIT}}}'.encode())


def test_csv_and_regex_numbers_beyond_a_float_are_decode_errors() -> None:
    with pytest.raises(DecodeError, match="float"):
        decode({"type": "csv", "columns": ["a", "b"]}, f"1,{HUGE}".encode())
    with pytest.raises(DecodeError, match="float"):
        decode({"type": "regex", "pattern": r"v=(?P<v>\d+)"}, f"v={HUGE}".encode())


def test_the_largest_ints_a_float_holds_still_decode() -> None:
    assert decode_kv(b"big=18446744073709551615") == {"big": 18446744073709551615}
    assert decode_json(b'{"big": -18446744073709551615}') == {"big": -18446744073709551615}


def test_to_readings_int_coercion_of_a_huge_float_fits_a_float() -> None:
    [reading] = to_readings("d", {"x": 1e300}, {"x": SensorSpec(type="int")}, 0.0)
    assert isinstance(reading.value, int)
    assert float(reading.value) == 1e300


@pytest.mark.parametrize(
    ("fmt", "raw", "field"),
    [
        ("<d", 1e308, {"name": "x", "scale": 10.0}),  # the scale overflows a double
        ("<d", -1e308, {"name": "x", "scale": 1e10}),
        ("<d", 1e308, {"name": "x", "offset": 1e308}),  # the offset does
        ("<f", 3e38, {"name": "x", "scale": 1e300}),
    ],
)
def test_struct_scale_or_offset_overflowing_a_double_is_a_decode_error(
    fmt: str, raw: float, field: dict[str, Any]
) -> None:
    with pytest.raises(DecodeError, match="finite"):
        decode({"type": "struct", "format": fmt, "fields": [field]}, struct.pack(fmt, raw))


# -- user regexes in linear time (issue 21, item 19) -----------------------------------------


@pytest.mark.timeout(10)  # Python's backtracking engine: about 2 minutes for this line
def test_a_backtracking_regex_gives_up_in_linear_time() -> None:
    spec = {"type": "regex", "pattern": r"T=(?P<temp>(\d+)+)C"}
    with pytest.raises(DecodeError, match="does not match"):
        decode(spec, b"T=" + b"1" * 30 + b"x")
    assert decode(spec, b"T=" + b"1" * 30 + b"C") == {"temp": int("1" * 30)}


def test_regex_syntax_users_write_still_works() -> None:
    pattern = r"(?i)^id:(?P<id>\w+)\s+t=(?P<temp>[-+]?\d*\.?\d+)\s*°?C?(?:\s+(?P<ok>ok|fail))?\z"
    spec = {"type": "regex", "pattern": pattern}
    assert decode(spec, "ID:x1  t=-3.25 °C OK".encode()) == {"id": "x1", "temp": -3.25, "ok": "OK"}
    assert decode(spec, b"id:x1 t=.5") == {"id": "x1", "temp": 0.5}


@pytest.mark.parametrize("kind", ["float", "int", "str", "bool"])
@pytest.mark.parametrize("raw", [10**400, 10**5000], ids=["400_digits", "5000_digits"])
def test_to_readings_of_an_int_beyond_a_float_is_a_decode_error(raw: int, kind: Any) -> None:
    """Found by the fuzz suite: coercing it raised OverflowError, or ValueError (str() of an
    int over 4300 digits), also while writing the error message."""
    with pytest.raises(DecodeError, match="float"):
        to_readings("d", {"x": raw}, {"x": SensorSpec(type=kind)}, 0.0)
