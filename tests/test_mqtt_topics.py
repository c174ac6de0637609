"""Topics and payloads (gateway/mqtt/topics.py): pure functions, no broker. The reading payload
is checked byte for byte against json.dumps; a batch against the payloads its readings would
have had alone."""

from __future__ import annotations

import json
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from gateway.models import Reading
from gateway.mqtt.topics import (
    batch_topic,
    device_fields,
    reading_fields,
    reading_payload,
    render,
    render_batch,
)


# -- the reading payload -------------------------------------------------------------------------
def _json_payload(reading: Reading, seq: int | None) -> bytes:
    body: dict[str, object] = {
        "value": reading.value,
        "unit": reading.unit,
        "ts": round(reading.ts, 3),
    }
    if seq is not None:
        body["seq"] = seq
    return json.dumps(body, ensure_ascii=False).encode()


_values = (
    st.booleans()
    | st.integers(-(10**30), 10**30)
    # Finite only: NaN and infinities have no JSON form, and the payload builders refuse them
    # (ValueError, counted by the encoder: tests/test_encoding.py).
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)


@given(
    value=_values,
    unit=st.none() | st.sampled_from(["°C", "%", 'odd "unit"\n', "hPa"]),
    ts=st.floats(0, 4e9),
    seq=st.none() | st.integers(1, 10**12),
)
def test_payload_is_byte_for_byte_what_json_dumps_gives(
    value: float | int | str | bool, unit: str | None, ts: float, seq: int | None
) -> None:
    reading = Reading("dev", "temp", value, unit, ts)
    payload = reading_payload(reading, seq)
    assert payload == _json_payload(reading, seq)


def test_payload_example() -> None:
    reading = Reading("boiler", "temp", 21.5, "°C", 1764074400.1234)
    assert json.loads(reading_payload(reading, 42)) == {
        "value": 21.5,
        "unit": "°C",
        "ts": 1764074400.123,
        "seq": 42,
    }


@dataclass
class Stored:
    sensor: str | None
    fields: bytes
    seq: int


_names = st.text("abcXYZ019_.-", min_size=1, max_size=12)


@given(
    readings=st.lists(
        st.tuples(_names, _values, st.none() | st.sampled_from(["°C", 'q"uote'])), min_size=1
    ),
)
def test_a_batch_is_the_array_of_each_readings_own_payload_with_its_sensor(
    readings: list[tuple[str, float | int | str | bool, str | None]],
) -> None:
    records = []
    expected = []
    for seq, (sensor, value, unit) in enumerate(readings, start=1):
        reading = Reading("vib1", sensor, value, unit, 1764074400.5 + seq)
        alone = reading_payload(reading, seq)
        stored = Stored(sensor, reading_fields(reading), seq)
        assert render(stored) == alone  # rendered at take time: the same bytes
        records.append(stored)
        expected.append({"sensor": sensor, **json.loads(alone)})
    assert json.loads(render_batch(records)) == expected


def test_batch_example() -> None:
    a = Stored("x", reading_fields(Reading("vib1", "x", 1.5, "g", 10.0)), 7)
    b = Stored("y", reading_fields(Reading("vib1", "y", 2, None, 10.0)), 8)
    c = Stored(None, device_fields(({"x": 1.5}, 10.0)), 9)  # a device-mode object
    assert render_batch([a, b, c]) == (
        b'[{"sensor": "x", "value": 1.5, "unit": "g", "ts": 10.0, "seq": 7}, '
        b'{"sensor": "y", "value": 2, "unit": null, "ts": 10.0, "seq": 8}, '
        b'{"x": 1.5, "ts": 10.0, "seq": 9}]'
    )
    assert batch_topic("gateway", "vib1") == "gateway/vib1/batch"
