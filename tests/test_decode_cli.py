"""`gateway decode`: one device's framer, decoder and sensor-stream filters on a sample, printed
as `TOPIC PAYLOAD` lines (and `dropped SENSOR=VALUE by filter NAME`), for every decoder family:
serial kv/csv/regex/nmea/struct (line and binary framing), BLE adverts given as raw AD
structures (pvvx, BTHome, Ruuvi), a GATT characteristic value. Exit 0 decoded, 1 nothing
decoded or unknown device, 2 config error."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main

pytestmark = pytest.mark.timeout(30)

REPO = Path(__file__).resolve().parent.parent
GGA = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"
# Advertisement payloads from tests/test_ble_decoders.py (published samples).
PVVX = "56341238c1a46b080c12860b5f1204"  # 21.55 °C, 46.20 %, 2950 mV, 95 %
BTHOME = "4002ca0903bf13"  # bthome.io example: 25.06 °C, 50.55 %
RUUVI = "0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F"  # Ruuvi RAWv2 test vector

CONFIG = """\
gateway:
  id: gw1
  state_dir: state
devices:
  - id: boiler
    type: serial
    port: /dev/ttyUSB0
    decoder: kv
    sensors:
      temp: {unit: "°C"}
  - id: tank
    type: serial
    port: /dev/ttyUSB1
    sensors:
      temp:
        filters:
          - filter_out: 85
          - offset: -0.5
          - multiply: 2
      level:
        filters:
          - delta: 0.5
  - id: room
    type: serial
    port: /dev/ttyUSB2
    payload: device
  - id: meter
    type: serial
    port: /dev/ttyUSB3
    framing: {type: binary, start: "aa 55", checksum: xor}
    decoder:
      type: struct
      format: ">hH"
      fields: [{name: power, scale: 0.1, unit: W}, energy]
  - id: logger
    type: serial
    port: /dev/ttyUSB4
    decoder: {type: csv, columns: [temp, null, hum]}
  - id: probe
    type: serial
    port: /dev/ttyUSB5
    decoder: {type: regex, pattern: 'T=(?P<temp>-?[0-9.]+)C H=(?P<hum>[0-9]+)%'}
  - id: gps
    type: serial
    port: /dev/ttyUSB6
    decoder: nmea
  - id: kitchen
    type: ble_advert
    name: "ATC_*"
    decoder: pvvx
  - id: bathroom
    type: ble_advert
    address: "54:48:E6:8F:80:A5"
    decoder: bthome
  - id: balcony
    type: ble_advert
    address: "CB:B8:33:4C:88:4F"
    decoder: ruuvi
  - id: strap
    type: ble_gatt
    address: "11:22:33:44:55:66"
    notify:
      - {characteristic: 2a37, format: heart_rate}
    poll:
      - {characteristic: 2a19, format: battery}
"""
DEVICE_IDS = "boiler, tank, room, meter, logger, probe, gps, kitchen, bathroom, balcony, strap"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def decode(
    capsys: pytest.CaptureFixture[str], config: Path, *args: str
) -> tuple[int, list[str], str]:
    """Run `gateway decode` in-process: (exit status, stdout lines, stderr)."""
    code = main(["decode", "-c", str(config), *args])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def published(lines: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """The `TOPIC PAYLOAD` lines, payloads parsed; checks what every payload must hold."""
    out = []
    for line in lines:
        topic, _, body = line.partition(" ")
        if not topic.startswith("gateway/"):
            continue
        payload = json.loads(body)
        assert "seq" not in payload  # given by the outbox, not by the decoder
        assert abs(payload["ts"] - time.time()) < 60
        out.append((topic, payload))
    return out


def values(lines: list[str]) -> dict[str, Any]:
    """topic -> (value, unit) of a sensor-mode device's output."""
    return {topic: (p["value"], p["unit"]) for topic, p in published(lines)}


def ad(kind: int, body: str | bytes) -> str:
    """One AD structure as hex: length (of type and data), type, data."""
    data = bytes.fromhex(body) if isinstance(body, str) else body
    return bytes([len(data) + 1, kind, *data]).hex()


FLAGS = ad(0x01, "06")  # LE general discoverable, BR/EDR not supported


# -- serial: kv, filters, payload: device -----------------------------------------------------


def test_kv_line_prints_one_topic_and_payload_per_sensor(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    code, lines, err = decode(capsys, config, "--device", "boiler", "--line", "temp=21.5 hum=40")

    assert (code, err) == (0, "")
    assert [topic for topic, _ in published(lines)] == ["gateway/boiler/temp", "gateway/boiler/hum"]
    assert values(lines) == {"gateway/boiler/temp": (21.5, "°C"), "gateway/boiler/hum": (40, None)}
    assert len(lines) == 2  # nothing else is printed for a clean decode


def test_filters_transform_values_and_name_the_filter_that_dropped_one(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    code, lines, _ = decode(capsys, config, "--device", "tank", "--line", "temp=20.5")
    assert code == 0
    assert values(lines) == {"gateway/tank/temp": (40.0, None)}  # (20.5 - 0.5) * 2

    code, lines, _ = decode(capsys, config, "--device", "tank", "--line", "temp=85 level=3")
    assert code == 0  # decoded, although the filter dropped the value
    assert lines == ["dropped temp=85 by filter filter_out", *lines[1:]]
    assert values(lines) == {"gateway/tank/level": (3, None)}


def test_file_of_lines_runs_through_delta_in_order(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    sample = tmp_path / "capture.txt"
    sample.write_bytes(b"level=40\nlevel=40.2\nlevel=41\n")

    code, lines, _ = decode(capsys, config, "--device", "tank", "--file", str(sample))

    assert code == 0
    assert [line.split(" ")[0] for line in lines] == [
        "gateway/tank/level",
        "dropped",
        "gateway/tank/level",
    ]
    assert lines[1] == "dropped level=40.2 by filter delta"
    assert [p["value"] for _, p in published(lines)] == [40, 41]


def test_device_payload_prints_one_object_with_every_key(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    code, lines, _ = decode(capsys, config, "--device", "room", "--line", "temp=21.5 hum=40")

    assert code == 0
    [(topic, payload)] = published(lines)
    assert topic == "gateway/room"
    assert {k: v for k, v in payload.items() if k != "ts"} == {"temp": 21.5, "hum": 40}

    # Later frames keep the latest value of every sensor, as the daemon's encoder does.
    sample = tmp_path / "room.txt"
    sample.write_text("temp=21.5\nhum=40\ntemp=22\n", encoding="utf-8")
    code, lines, _ = decode(capsys, config, "--device", "room", "--file", str(sample))
    assert code == 0
    assert [{k: v for k, v in p.items() if k != "ts"} for _, p in published(lines)] == [
        {"temp": 21.5},
        {"temp": 21.5, "hum": 40},
        {"temp": 22, "hum": 40},
    ]


# -- serial: binary framing with struct, csv, regex, nmea ------------------------------------


def binary_frame(payload: str) -> str:
    body = bytes([len(bytes.fromhex(payload)), *bytes.fromhex(payload)])
    xor = 0
    for byte in body:
        xor ^= byte
    return (b"\xaa\x55" + body + bytes([xor])).hex()


def test_binary_frames_from_hex_are_unpacked_by_struct(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    frame = binary_frame("00d7 04d2")  # power 215 * 0.1 W, energy 1234
    assert frame == "aa550400d704d205"

    code, lines, _ = decode(capsys, config, "--device", "meter", "--hex", f"ff {frame}")

    assert code == 0
    assert values(lines) == {
        "gateway/meter/power": (21.5, "W"),
        "gateway/meter/energy": (1234, None),
    }
    assert "framing: 1 frame(s) skipped (resync)" in lines  # the leading ff


def test_binary_frame_with_a_bad_checksum_or_cut_short_decodes_nothing(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    code, lines, _ = decode(capsys, config, "--device", "meter", "--hex", "aa550400d704d2ff")
    assert code == 1
    assert lines[0] == "framing: 1 frame(s) skipped (checksum)"
    assert lines[-1] == "no readings"
    assert published(lines) == []

    code, lines, _ = decode(capsys, config, "--device", "meter", "--hex", "aa:55:04:00:d7")
    assert code == 1
    assert lines == [
        "framing: 5 byte(s) left that do not make a frame (yet)",
        "no readings",
    ]


def test_csv_line(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    code, lines, _ = decode(capsys, config, "--device", "logger", "--line", "21.5,skipped,40")
    assert code == 0
    assert values(lines) == {"gateway/logger/temp": (21.5, None), "gateway/logger/hum": (40, None)}


def test_regex_line(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    code, lines, _ = decode(capsys, config, "--device", "probe", "--line", "T=-3.5C H=81% ok")
    assert code == 0
    assert values(lines) == {"gateway/probe/temp": (-3.5, None), "gateway/probe/hum": (81, None)}


def test_nmea_gga_sentence(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    code, lines, _ = decode(capsys, config, "--device", "gps", "--line", GGA)
    assert code == 0
    got = values(lines)
    assert got["gateway/gps/lat"] == (48.1173, "°")
    assert got["gateway/gps/lon"][1] == "°"
    assert got["gateway/gps/lon"][0] == pytest.approx(11.516667)
    assert got["gateway/gps/alt"] == (545.4, "m")
    assert (got["gateway/gps/satellites"], got["gateway/gps/fix_quality"]) == ((8, None), (1, None))


def test_nmea_sentence_with_a_wrong_checksum_is_not_decoded(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    code, lines, _ = decode(capsys, config, "--device", "gps", "--line", GGA[:-2] + "48")
    assert code == 1
    assert "checksum mismatch" in lines[0]
    assert lines[-1] == "no readings"


def test_line_that_does_not_decode(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    code, lines, err = decode(capsys, config, "--device", "boiler", "--line", "garbage")
    assert (code, err) == (1, "")
    assert lines == [
        "frame b'garbage': not decoded: not a key=value pair: 'garbage'",
        "no readings",
    ]


# -- ids, config errors, samples --------------------------------------------------------------


def test_unknown_device_lists_the_ids(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    code, lines, err = decode(capsys, config, "--device", "nope", "--line", "temp=1")
    assert (code, lines) == (1, [])
    assert err.strip() == f"no device 'nope' in the config (devices: {DEVICE_IDS})"


def test_config_error_exits_2_with_file_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            gateway: {id: gw1}
            devices:
              - id: boiler
                type: serial
                port: /dev/ttyUSB0
                sensors:
                  temp:
                    filters:
                      - medain: 5
            """
        ),
        encoding="utf-8",
    )
    code, lines, err = decode(capsys, path, "--device", "boiler", "--line", "temp=1")
    assert (code, lines) == (2, [])
    assert err.startswith(f"{path}:9:13: devices[0].sensors.temp.filters[0]: unknown filter")
    assert "did you mean 'median'?" in err


def test_unreadable_samples(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    code, lines, err = decode(capsys, config, "--device", "meter", "--hex", "aa 5")
    assert (code, lines) == (1, [])
    assert err.startswith("cannot read the sample:")

    code, _, err = decode(capsys, config, "--device", "meter", "--file", str(tmp_path / "none"))
    assert code == 1
    assert err.startswith("cannot read the sample:")


def test_entry_point_in_a_subprocess(config: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "decode", "-c", str(config), "--device", "boiler",
         "--line", "temp=21.5"],
        capture_output=True, text=True, cwd=REPO, timeout=20,
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, "")
    topic, _, body = result.stdout.strip().partition(" ")
    assert topic == "gateway/boiler/temp"
    assert json.loads(body)["value"] == 21.5
    assert json.loads(body)["unit"] == "°C"


# -- Bluetooth LE adverts (raw AD structures) and GATT values ---------------------------------


def test_pvvx_service_data_of_a_device_matched_by_name(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    advert = FLAGS + ad(0x09, b"ATC_123456") + ad(0x16, "1a18" + PVVX)  # 0x181A, LE

    code, lines, _ = decode(capsys, config, "--device", "kitchen", "--hex", advert)

    assert code == 0
    assert values(lines) == {
        "gateway/kitchen/temperature": (21.55, "°C"),
        "gateway/kitchen/humidity": (46.2, "%"),
        "gateway/kitchen/battery": (95, "%"),
        "gateway/kitchen/voltage": (2.95, "V"),
    }


def test_bthome_unencrypted_service_data(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    advert = FLAGS + ad(0x16, "d2fc" + BTHOME)  # 0xFCD2, LE

    code, lines, _ = decode(capsys, config, "--device", "bathroom", "--hex", advert)

    assert code == 0
    assert values(lines) == {
        "gateway/bathroom/temperature": (25.06, "°C"),
        "gateway/bathroom/humidity": (50.55, "%"),
    }


def test_bthome_button_event(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    code, lines, _ = decode(capsys, config, "--device", "bathroom", "--hex", ad(0x16, "d2fc403a04"))
    assert code == 0
    assert values(lines) == {"gateway/bathroom/button": ("long_press", None)}


def test_ruuvi_manufacturer_data(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    advert = FLAGS + ad(0xFF, "9904" + RUUVI)  # company 0x0499, LE

    code, lines, _ = decode(capsys, config, "--device", "balcony", "--hex", advert)

    assert code == 0
    got = values(lines)
    assert got["gateway/balcony/temperature"] == (24.3, "°C")
    assert got["gateway/balcony/humidity"] == (53.49, "%")
    assert got["gateway/balcony/pressure"] == (1000.44, "hPa")
    assert got["gateway/balcony/voltage"] == (2.977, "V")
    assert got["gateway/balcony/movement_counter"] == (66, None)
    assert len(got) == 9


@pytest.mark.parametrize(
    ("device", "advert", "message"),
    [
        ("kitchen", ad(0xFF, "9904" + RUUVI), "not decoded: "),  # not the device's format
        ("bathroom", FLAGS, "not decoded: no BTHome service data"),
        ("balcony", "1bff9904", "not decoded: AD structure at byte 0 runs past the end"),
    ],
)
def test_advert_that_does_not_decode(
    capsys: pytest.CaptureFixture[str], config: Path, device: str, advert: str, message: str
) -> None:
    code, lines, _ = decode(capsys, config, "--device", device, "--hex", advert)
    assert code == 1
    assert lines[0].startswith(message)
    assert lines[-1] == "no readings"
    assert published(lines) == []


@pytest.mark.parametrize("characteristic", [None, "2a37", "0x2A37"])
def test_gatt_heart_rate_value(
    capsys: pytest.CaptureFixture[str], config: Path, characteristic: str | None
) -> None:
    which = [] if characteristic is None else ["--characteristic", characteristic]
    # flags 0x06: 8-bit value, sensor contact supported and detected; 0x48 = 72 bpm
    code, lines, _ = decode(capsys, config, "--device", "strap", "--hex", "0648", *which)

    assert code == 0
    assert values(lines) == {
        "gateway/strap/heart_rate": (72, "bpm"),
        "gateway/strap/sensor_contact": (True, None),
    }


def test_gatt_characteristic_selects_the_format(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    code, lines, _ = decode(
        capsys, config, "--device", "strap", "--hex", "5f", "--characteristic", "2a19"
    )
    assert code == 0
    assert values(lines) == {"gateway/strap/battery": (95, "%")}

    # Without --characteristic the first (notify) one is taken: one byte is no heart rate.
    code, lines, _ = decode(capsys, config, "--device", "strap", "--hex", "5f")
    assert code == 1
    assert lines[0].startswith("not decoded: ")


@pytest.mark.parametrize(
    ("characteristic", "message"),
    [
        ("2a6e", "not decoded: no notify or poll characteristic of this device matches"),
        ("zz", "not decoded: --characteristic 'zz' is not a UUID"),
    ],
)
def test_gatt_characteristic_that_does_not_fit(
    capsys: pytest.CaptureFixture[str], config: Path, characteristic: str, message: str
) -> None:
    code, lines, _ = decode(
        capsys, config, "--device", "strap", "--hex", "0648", "--characteristic", characteristic
    )
    assert code == 1
    assert lines[0].startswith(message)
    assert lines[-1] == "no readings"


def one_device(tmp_path: Path, device: str) -> Path:
    """A config file with one device, given as the YAML of its list item."""
    config = tmp_path / "one.yaml"
    config.write_text(f"gateway: {{id: gw1}}\ndevices:\n{device}", "utf-8")
    return config


def test_timed_filters_show_what_they_would_emit_later(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = one_device(
        tmp_path,
        "  - {id: t, type: serial, port: /dev/null, sensors: {temp: {filters: [{debounce: 1}]}}}\n",
    )
    code, lines, _ = decode(capsys, config, "--device", "t", "--line", "temp=3")
    assert code == 0
    assert lines[0] == "dropped temp=3 by filter debounce"
    assert lines[1] == "1 s later, when the filters' timers first fire:"
    assert lines[2].startswith("gateway/t/temp ")
    assert json.loads(lines[2].split(" ", 1)[1])["value"] == 3


def test_a_line_is_sent_in_the_devices_encoding_with_its_delimiter(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = one_device(
        tmp_path,
        "  - {id: d, type: serial, port: /dev/null, encoding: latin-1,"
        " framing: {type: delimiter, delimiter: '3b'},"
        " decoder: {type: regex, pattern: 'T=(?P<temp>[0-9.]+)°'}}\n",
    )
    code, lines, _ = decode(capsys, config, "--device", "d", "--line", "T=21.5°")
    assert code == 0
    assert [json.loads(line.split(" ", 1)[1])["value"] for line in lines] == [21.5]


def test_a_modbus_device_is_refused_with_a_reason(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = one_device(
        tmp_path,
        "  - {id: m, type: modbus, port: /dev/null, registers: [{name: v, address: 0}]}\n",
    )
    code, lines, _ = decode(capsys, config, "--device", "m", "--hex", "0001")
    assert code == 1
    assert "does not read modbus devices" in lines[0]


def test_controls_and_their_state_after_the_sample(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Issue 23: each control, and its state as Home Assistant would show it."""
    path = tmp_path / "config.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            gateway: {id: gw1, state_dir: state}
            devices:
              - id: heater
                type: serial
                port: /dev/ttyUSB0
                commands: {power: "P {payload}", mode: "M {payload}", reset: R, led: "L {payload}"}
                controls:
                  power: {platform: switch, payload_on: "1", payload_off: "0", state: power}
                  mode: {platform: select, options: {"2": comfort}, state: mode}
                  reset: {platform: button}
                  led: {platform: switch}
            """
        ),
        encoding="utf-8",
    )
    code, lines, _ = decode(capsys, path, "--device", "heater", "--line", "power=1,temp=20")
    assert code == 0
    assert lines[-4:] == [
        "control power (switch): on (from power)",
        "control mode (select): state from mode: not in the sample",
        "control reset (button): a button, no state",
        "control led (switch): optimistic (no state sensor)",
    ]
    _, lines, _ = decode(capsys, path, "--device", "heater", "--line", "mode=2")
    assert "control mode (select): comfort (from mode)" in lines
