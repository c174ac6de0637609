"""Topics and payloads (gateway/mqtt/topics.py): pure functions, no broker. The reading payload
is checked byte for byte against json.dumps; a batch against the payloads its readings would
have had alone."""

from __future__ import annotations

import json
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from gateway.models import Reading
from gateway.mqtt.topics import batch_payload, batch_topic, reading_payload, sensor_of


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
    device: str
    topic: str
    payload: bytes


_names = st.text("abcXYZ019_.-", min_size=1, max_size=12)


@given(
    readings=st.lists(
        st.tuples(_names, _values, st.none() | st.sampled_from(["°C", 'q"uote'])), min_size=1
    ),
    prefix=st.sampled_from(["gateway", "site/a", "x"]),
)
def test_a_batch_is_the_array_of_each_readings_own_payload_with_its_sensor(
    readings: list[tuple[str, float | int | str | bool, str | None]], prefix: str
) -> None:
    records = []
    expected = []
    for seq, (sensor, value, unit) in enumerate(readings, start=1):
        reading = Reading("vib1", sensor, value, unit, 1764074400.5 + seq)
        alone = reading_payload(reading, seq)
        records.append(Stored("vib1", f"{prefix}/vib1/{sensor}", alone))
        expected.append({"sensor": sensor, **json.loads(alone)})
    assert json.loads(batch_payload(prefix, records)) == expected


def test_batch_example() -> None:
    a = Stored("vib1", "gateway/vib1/x", reading_payload(Reading("vib1", "x", 1.5, "g", 10.0), 7))
    b = Stored("vib1", "gateway/vib1/y", reading_payload(Reading("vib1", "y", 2, None, 10.0), 8))
    assert batch_payload("gateway", [a, b]) == (
        b'[{"sensor": "x", "value": 1.5, "unit": "g", "ts": 10.0, "seq": 7}, '
        b'{"sensor": "y", "value": 2, "unit": null, "ts": 10.0, "seq": 8}]'
    )
    assert batch_topic("gateway", "vib1") == "gateway/vib1/batch"


def test_sensor_of_a_record_stored_under_another_prefix_is_its_last_level() -> None:
    assert sensor_of("new", "vib1", "new/vib1/x") == "x"
    assert sensor_of("new", "vib1", "old/vib1/x") == "x"
