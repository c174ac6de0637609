"""The status page's rendering, from real status documents of a (not running) Gateway: escaping,
an empty gateway, values with units, sparklines that stay in their box, the bounded rings and
the BLE table of unknown advertisers."""

from __future__ import annotations

import itertools
import math
import re
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.ble.strangers import Strangers
from gateway.config import load_config
from gateway.decoders.ble import Advert
from gateway.families.ble import BLE
from gateway.health import status_document
from gateway.lifecycle import Gateway
from gateway.limits import RECENT_MAX_SENSORS as MAX_SENSORS
from gateway.limits import RING_POINTS, RING_SPACING
from gateway.models import Reading
from gateway.recent import Recent
from gateway.statuspage.render import (
    SPARK_HEIGHT,
    SPARK_WIDTH,
    ago,
    render_main,
    render_page,
    sparkline,
    value_text,
)
from gateway.wiring import Graph

EVIL = '<script>alert("x")</script>'
ENV = "0000181a-0000-1000-8000-00805f9b34fb"  # pvvx/atc service data
PVVX = "56341238c1a46b080c12860b5f1204"  # 21.55 °C, 46.20 %, 2950 mV, 95 %


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text, as a browser's parser sees them."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def named(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def make_gateway(tmp_path: Path, yaml: str) -> Graph:
    """The gateway as wired (not running): its graph is what the status document reads."""
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml, encoding="utf-8")
    return Gateway(load_config(config), config).graph


def two_devices(tmp_path: Path) -> Graph:
    return make_gateway(
        tmp_path,
        "gateway: {id: edge-1}\n"
        "devices:\n"
        "  - {id: boiler, type: serial, port: /dev/ttyX, name: 'Boiler <b>room</b>',"
        "     sensors: {temp: {unit: '°C'}}}\n"
        "  - {id: door, type: serial, port: /dev/ttyY, decoder: json}\n",
    )


def feed(gw: Graph, device: str, sensor: str, values: list[Any], unit: str | None = None) -> None:
    start = time.time() - RING_SPACING * len(values)
    for i, value in enumerate(values):
        gw.seen.record(Reading(device, sensor, value, unit, start + i * RING_SPACING))


# -- escaping ------------------------------------------------------------------------------------


def test_a_device_that_sends_script_shows_it_as_text(tmp_path: Path) -> None:
    gw = two_devices(tmp_path)
    feed(gw, "door", "note", [EVIL])
    feed(gw, "door", EVIL, [1.0, 2.0])  # a decoder that names sensors from the data
    page = render_page(status_document(gw))
    parsed = Elements(page)
    # The only script is the page's own; no element came from the device's text.
    assert parsed.named("script") == [{"src": "static/page.js", "defer": None}]
    assert EVIL in "".join(parsed.text)  # shown, as text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "Boiler &lt;b&gt;room&lt;/b&gt;" in page
    assert not parsed.named("b")


def test_error_texts_and_advertiser_names_are_escaped_too(tmp_path: Path) -> None:
    gw = two_devices(tmp_path)
    doc = status_document(gw)
    doc["devices"]["boiler"].update(state="backing_off", reason=f"port {EVIL}", retry_in=0.4)
    doc["mqtt"].update(connected=False, reason='refused <img src=x onerror="alert(1)">')
    doc["ble"] = {
        "adapters": {"hci0": _adapter()},
        "unknown": [_stranger(name=EVIL, snippet=f"  - id: {EVIL}")],
    }
    parsed = Elements(render_main(doc))
    assert not parsed.named("script")
    assert not parsed.named("img")
    text = "".join(parsed.text)
    assert f"port {EVIL}" in text
    assert 'refused <img src=x onerror="alert(1)">' in text
    assert f"  - id: {EVIL}" in text


def _adapter() -> dict[str, Any]:
    return {"state": "up", "mode": "active", "adverts_per_second": 3.5, "ladder": "ok"}


def _stranger(**extra: Any) -> dict[str, Any]:
    return {
        "adapter": "hci0",
        "address": "AA:BB:CC:DD:EE:FF",
        "name": None,
        "rssi": -70,
        "decoder": None,
        "values": "",
        "snippet": "",
        "last_seen_age": 1.0,
        "adverts": 1,
        **extra,
    }


# -- what is shown -------------------------------------------------------------------------------


def test_an_empty_gateway_renders(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path, "gateway: {id: lonely}\n")
    doc = status_document(gw)
    assert doc["devices"] == {}
    assert doc["ble"] is None  # no Bluetooth configured: nothing of it
    page = render_page(doc)
    assert "No devices configured." in page
    assert 'id="ble"' not in page
    assert '<span class="bad" id="broker-state">disconnected</span>' in page
    assert "<title>lonely · iot-gateway</title>" in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page


def test_each_device_shows_its_values_with_units_and_counts(tmp_path: Path) -> None:
    gw = two_devices(tmp_path)
    feed(gw, "boiler", "temp", [21.0, 21.5, 22.25], unit="°C")
    feed(gw, "door", "open", [True])
    gw.metrics.frame_errors.labels("boiler", "decode").inc(3)
    gw.metrics.frame_errors.labels("boiler", "checksum").inc()
    gw.metrics.filter_dropped.labels("door", "open", "delta").inc(2)
    doc = status_document(gw)
    boiler, door = doc["devices"]["boiler"], doc["devices"]["door"]
    assert boiler["sensors"]["temp"]["value"] == 22.25
    assert boiler["sensors"]["temp"]["unit"] == "°C"
    assert len(boiler["sensors"]["temp"]["history"]) == 3
    assert boiler["decode_errors"] == {"total": 4, "by": {"decode": 3, "checksum": 1}}
    assert door["filter_dropped"] == {"total": 2, "by": {"delta": 2}}
    assert boiler["family"] == "serial"
    assert boiler["name"] == "Boiler <b>room</b>"
    assert {"link", "state", "last_seen", "last_seen_age"} <= boiler.keys()  # kept as they were
    main = render_main(doc)
    row = re.search(r'<tr id="device-boiler".*?</tr>', main)
    assert row is not None
    assert "22.25 °C" in row.group()
    assert "decode 4 · filtered 0" in row.group()
    assert "<svg" in row.group()  # a sparkline for the numeric sensor
    door_row = re.search(r'<tr id="device-door".*?</tr>', main)
    assert door_row is not None
    assert "true" in door_row.group()
    assert "<svg" not in door_row.group()  # booleans get none
    assert "s ago" in door_row.group()


def test_values_ages_and_durations_read_as_a_person_would() -> None:
    assert value_text(21.5, "°C") == "21.5 °C"
    assert value_text(1 / 3, None) == "0.333333"
    assert value_text(None, "%") == "null %"
    assert value_text(False, None) == "false"
    assert ago(None) == "never"
    assert ago(12.4) == "12 s ago"
    assert ago(0.25) == "0.2 s ago"
    assert ago(185) == "3 min 5 s ago"
    assert ago(2 * 3600 + 600) == "2 h 10 min ago"
    assert ago(3 * 86400 + 4 * 3600) == "3 d 4 h ago"


# -- sparklines ----------------------------------------------------------------------------------


def _coordinates(svg: str) -> list[tuple[float, float]]:
    match = re.search(r'points="([^"]*)"', svg)
    assert match, svg
    return [(float(x), float(y)) for x, y in (p.split(",") for p in match.group(1).split())]


numbers = st.floats(allow_nan=True, allow_infinity=True, width=32)


@given(st.lists(st.tuples(st.floats(0, 1e9), numbers), min_size=0, max_size=150))
def test_a_sparkline_stays_inside_its_box(points: list[tuple[float, float]]) -> None:
    points.sort()
    svg = sparkline([list(p) for p in points])
    finite = [p for p in points if math.isfinite(p[1])]
    if len(finite) < 2:
        assert svg == ""
        return
    coords = _coordinates(svg)
    assert len(coords) == len(finite)
    for x, y in coords:
        assert 0 <= x <= SPARK_WIDTH
        assert 1 <= y <= SPARK_HEIGHT - 1


def test_a_sparkline_draws_up_for_higher_values_and_flat_in_the_middle() -> None:
    coords = _coordinates(sparkline([[0, 1.0], [10, 5.0], [20, 3.0]]))
    assert coords[0] == (0.0, SPARK_HEIGHT - 1)  # the lowest value at the bottom
    assert coords[1] == (SPARK_WIDTH / 2, 1.0)  # the highest at the top
    assert coords[2][0] == SPARK_WIDTH
    flat = _coordinates(sparkline([[0, 7.0], [5, 7.0]]))
    assert {y for _, y in flat} == {SPARK_HEIGHT / 2}


def test_the_rings_are_bounded_in_points_spacing_and_sensors() -> None:
    recent = Recent()
    for i in range(5000):  # 10 readings a second for 500 s
        recent.record(Reading("d", "t", float(i), None, 1000.0 + i * 0.1))
    ring = recent.of("d")["t"].ring
    assert len(ring) == RING_POINTS
    times = [ts for ts, _ in ring]
    assert all(b - a >= RING_SPACING for a, b in itertools.pairwise(times))
    assert ring[-1][1] == 4999.0  # the newest value is always the last point
    assert times[-1] - times[0] >= (RING_POINTS - 1) * RING_SPACING  # minutes, not seconds
    for i in range(MAX_SENSORS + 10):
        recent.record(Reading("kv", f"s{i}", i, None, 1.0))
    assert len(recent.of("kv")) == MAX_SENSORS
    recent.record(Reading("d", "word", "text", None, 2000.0))
    assert not recent.of("d")["word"].ring  # no points for strings


# -- Bluetooth: unknown advertisers --------------------------------------------------------------


def test_unknown_advertisers_are_kept_bounded_most_recent_first() -> None:
    strangers = Strangers(limit=3)
    for i in range(5):
        strangers.heard(Advert(f"AA:00:00:00:00:0{i}"), float(i))
    strangers.heard(Advert("AA:00:00:00:00:03", rssi=-40), 9.0)
    heard = strangers.recent_first()
    assert [s.advert.address for s in heard] == [
        "AA:00:00:00:00:03",
        "AA:00:00:00:00:04",
        "AA:00:00:00:00:02",
    ]
    assert heard[0].adverts == 2
    assert heard[0].first_seen == 3.0
    assert heard[0].last_seen == 9.0


def test_the_ble_section_names_the_decoder_and_a_config_snippet(tmp_path: Path) -> None:
    gw = make_gateway(
        tmp_path,
        "gateway: {id: edge-1}\n"
        "devices:\n"
        "  - {id: kitchen, type: ble_advert, address: 'A4:C1:38:00:00:01', decoder: pvvx}\n",
    )
    adapter = BLE.hub(gw.cfg, gw.families).adapter("hci0")
    heard = Advert(
        "A4:C1:38:12:34:56", name=EVIL, rssi=-61, service_data={ENV: bytes.fromhex(PVVX)}
    )
    adapter.strangers.heard(heard, time.time())
    adapter.strangers.heard(Advert("A4:C1:38:00:00:01"), time.time())  # configured: not listed
    doc = status_document(gw)
    assert doc["ble"]["adapters"]["hci0"]["state"] == "stopped"  # no scanner link running
    (listed,) = doc["ble"]["unknown"]  # the configured device is not listed
    assert listed["address"] == "A4:C1:38:12:34:56"
    assert listed["decoder"] == "pvvx"  # the same code path as `gateway scan`
    assert "temperature=21.55°C" in listed["values"]
    assert listed["rssi"] == -61
    assert listed["snippet"] == (
        "  - id: ble_a4c138123456\n"
        "    type: ble_advert\n"
        "    address: A4:C1:38:12:34:56\n"
        "    decoder: pvvx"
    )
    parsed = Elements(render_main(doc))
    assert not parsed.named("script")
    text = "".join(parsed.text)
    assert EVIL in text
    assert "decoder: pvvx" in text


# -- controls (issue 23) ---------------------------------------------------------------------------


def test_each_control_shows_its_last_state_as_the_device_said_it(tmp_path: Path) -> None:
    gw = make_gateway(
        tmp_path,
        "gateway: {id: edge-1}\n"
        "devices:\n"
        "  - id: heater\n"
        "    type: serial\n"
        "    port: /dev/ttyX\n"
        "    commands: {power: 'PWR {payload}', mode: 'M {payload}', reset: RST}\n"
        "    controls:\n"
        "      power: {platform: switch, payload_on: '1', payload_off: '0', state: power}\n"
        "      mode: {platform: select, options: {'1': eco}, state: mode}\n"
        "      reset: {platform: button}\n",
    )
    doc = status_document(gw)
    assert doc["devices"]["heater"]["controls"]["power"]["state"] is None  # not heard yet
    feed(gw, "heater", "power", [0, 1])
    feed(gw, "heater", "mode", [EVIL])  # a value without a label: shown as it came, as text
    doc = status_document(gw)
    controls = doc["devices"]["heater"]["controls"]
    assert (controls["power"]["state"], controls["mode"]["state"]) == ("on", EVIL)
    page = render_page(doc)
    parsed = Elements(page)
    assert parsed.named("script") == [{"src": "static/page.js", "defer": None}]
    assert [a for a in parsed.named("ul") if a.get("class") == "controls"] == [
        {"class": "controls"}
    ]
    text = "".join(parsed.text)
    assert "power switch on" in text
    assert f"mode select {EVIL}" in text
    assert "reset button" in text
