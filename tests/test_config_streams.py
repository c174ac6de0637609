"""Config of sensor streams and Home Assistant, through `load_config` on YAML files: every
filter shape of the contract, filter errors located at FILE:LINE:COL and the field path, Home
Assistant's unit/state-class/device-class checks, batch and `payload: device` conflicts, the
`homeassistant:` section, friendly names and availability of BLE advert devices, `gateway
schema`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from gateway.app_config import load_config
from gateway.cli import main
from gateway.config import (
    BleAdvertDevice,
    Config,
    SensorSpec,
    SerialDevice,
    json_schema,
)
from gateway.config.filters import FILTERS, OrSpec, parse_threshold
from gateway.config.filters.specs import (
    CalibrateLinearSpec,
    DeltaSpec,
    FilterOutSpec,
    HeartbeatSpec,
    MedianSpec,
    TimeoutSpec,
)
from gateway.errors import ConfigError
from gateway.streams.chain import build_chain

pytestmark = pytest.mark.timeout(30)

HEAD = """\
gateway:
  id: gw1
  state_dir: state
"""


def write(directory: Path, body: str) -> Path:
    path = directory / "config.yaml"
    path.write_text(HEAD + textwrap.dedent(body), encoding="utf-8")
    return path


def serial(sensors: str, extra: str = "") -> str:
    """One serial device `dev` with the given `sensors:` block (indented as under it)."""
    return (
        "devices:\n  - id: dev\n    type: serial\n    port: /dev/ttyUSB0\n"
        + textwrap.indent(textwrap.dedent(extra), "    ")
        + "    sensors:\n"
        + textwrap.indent(textwrap.dedent(sensors), "      ")
    )


def line_of(path: Path, text: str) -> int:
    """The 1-based number of the first line of the file that contains `text`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(n for n, line in enumerate(lines, 1) if text in line)


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    return info.value.problems


def sensors_of(cfg: Config) -> dict[str, SensorSpec]:
    [device] = cfg.devices
    return device.sensors


# -- good filter shapes ------------------------------------------------------------------------

EVERY_FILTER = """\
t:
  filters:
    - multiply: 1.8
    - offset: 32
    - calibrate_linear: ["0.0 -> 0.5", {from: 10, to: 11}]
    - filter_out: 85
    - clamp: {min_value: -40, max_value: 125}
    - median:
    - min: {window_size: 3, send_every: 3}
    - max: {}
    - quantile: {window_size: 7, quantile: 0.5}
    - sliding_window_moving_average: {window_size: 4, send_every: 2, send_first_at: 2}
    - exponential_moving_average: {alpha: 0.2, send_every: 1}
    - throttle_average: 1min
    - round: 1
    - delta: "5%"
    - throttle: "10s"
    - heartbeat: 300
    - timeout: {timeout: 5min, value: last}
    - skip_initial: 2
    - debounce: 500ms
    - or: [{delta: 0.5}, {heartbeat: 300}]
"""


def test_every_filter_of_the_contract_parses(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, serial(EVERY_FILTER)), env={})
    filters = sensors_of(cfg)["t"].filters

    assert [f.key for f in filters] == list(FILTERS.names())  # every filter, in order
    by_name: dict[str, Any] = {f.key: f for f in filters}
    assert by_name["multiply"].root == 1.8
    assert by_name["offset"].root == 32
    assert isinstance(by_name["offset"].root, int)  # an int stays an int
    calibrate = by_name["calibrate_linear"]
    assert isinstance(calibrate, CalibrateLinearSpec)
    assert calibrate.root.datapoints == [(0.0, 0.5), (10.0, 11.0)]
    assert isinstance(by_name["filter_out"], FilterOutSpec)
    assert by_name["filter_out"].root == [85]  # the scalar shorthand is a list
    median = by_name["median"]
    assert isinstance(median, MedianSpec)
    assert (median.root.window_size, median.root.send_every, median.root.send_first_at) == (5, 5, 1)
    assert by_name["max"].root.window_size == 5
    assert by_name["min"].root.window_size == 3
    assert by_name["quantile"].root.quantile == 0.5
    assert by_name["throttle_average"].root == 60.0  # "1min"
    assert by_name["throttle"].root == 10.0  # "10s"
    assert by_name["debounce"].root == 0.5  # "500ms"
    delta = by_name["delta"]
    assert isinstance(delta, DeltaSpec)
    assert parse_threshold(delta.root.min_value) == (0.05, True)  # relative
    heartbeat = by_name["heartbeat"]
    assert isinstance(heartbeat, HeartbeatSpec)
    assert (heartbeat.root.period, heartbeat.root.optimistic) == (300.0, False)
    timeout = by_name["timeout"]
    assert isinstance(timeout, TimeoutSpec)
    assert (timeout.root.timeout, timeout.root.value) == (300.0, "last")
    assert by_name["skip_initial"].root == 2
    either = by_name["or"]
    assert isinstance(either, OrSpec)
    near, beat = either.root
    assert isinstance(near, DeltaSpec)
    assert isinstance(beat, HeartbeatSpec)
    assert parse_threshold(near.root.min_value) == (0.5, False)
    assert beat.root.period == 300.0
    # What parsed also builds a running chain, and dumps back to the YAML shape.
    assert [f.name for f in build_chain(filters).filters] == list(FILTERS.names())
    assert SensorSpec.model_validate(sensors_of(cfg)["t"].model_dump()) == sensors_of(cfg)["t"]
    assert either.model_dump() == {
        "or": [
            {"delta": {"min_value": 0.5, "max_value": None}},
            {"heartbeat": {"period": 300.0, "optimistic": False}},
        ]
    }


@pytest.mark.parametrize(
    ("item", "fields", "expected"),
    [
        ("heartbeat: {period: 10s, optimistic: true}", ("period", "optimistic"), (10.0, True)),
        ("timeout: 600", ("timeout", "value"), (600.0, None)),
        ("timeout: {timeout: 1h, value: -1}", ("timeout", "value"), (3600.0, -1)),
        ("delta: {min_value: 0.1, max_value: 10}", ("min_value", "max_value"), (0.1, 10.0)),
        ("delta: {max_value: 20%}", ("min_value", "max_value"), (0.0, "20%")),
        ("clamp: {max_value: 100, ignore_out_of_range: true}",
         ("min_value", "max_value", "ignore_out_of_range"), (None, 100, True)),
        ("filter_out: [85, err, null, true]", (), [85, "err", None, True]),
    ],
)  # fmt: skip
def test_long_and_short_forms(
    tmp_path: Path, item: str, fields: tuple[str, ...], expected: object
) -> None:
    cfg = load_config(write(tmp_path, serial(f"t:\n  filters:\n    - {item}\n")), env={})
    [spec] = sensors_of(cfg)["t"].filters
    root = spec.root
    assert (tuple(getattr(root, name) for name in fields) if fields else root) == expected


# -- filter errors -----------------------------------------------------------------------------


def test_unknown_filter_name_is_one_error_on_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        serial("""\
            t:
              filters:
                - offset: 1
                - medain: {window_size: 3}
            """),
    )
    [problem] = problems_of(path)  # one error, not one per known filter
    assert problem.startswith(
        f"{path}:{line_of(path, 'medain')}:13: devices[0].sensors.t.filters[1]: "
    )
    assert "unknown filter 'medain' (did you mean 'median'?)" in problem
    assert "known: calibrate_linear, clamp, debounce" in problem


def test_esphome_filter_that_is_not_available_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, serial("t:\n  filters:\n    - lambda: return x;\n"))
    [problem] = problems_of(path)
    assert problem.startswith(
        f"{path}:{line_of(path, 'lambda')}:13: devices[0].sensors.t.filters[0]: "
    )
    assert "ESPHome's filter 'lambda' is not available here" in problem


def test_two_filters_in_one_item(tmp_path: Path) -> None:
    path = write(tmp_path, serial("t:\n  filters:\n    - {offset: 1, multiply: 2}\n"))
    [problem] = problems_of(path)
    assert "devices[0].sensors.t.filters[0]: one filter per list item" in problem


def test_median_window_size_zero_points_at_the_option(tmp_path: Path) -> None:
    path = write(tmp_path, serial("t:\n  filters:\n    - median: {window_size: 0}\n"))
    [problem] = problems_of(path)
    # Located at the option itself, not at a doubled `median.median` path.
    line = line_of(path, "window_size")
    assert problem.startswith(
        f"{path}:{line}:22: devices[0].sensors.t.filters[0].median.window_size: "
    )
    assert "greater than or equal to 1" in problem


@pytest.mark.parametrize(
    ("item", "where", "message"),
    [
        ('delta: "150%"', "filters[0].delta", "a percentage 0%..100%"),
        ('heartbeat: "10"', "filters[0].heartbeat", "'10' has no unit"),
        ("throttle: 10x", "filters[0].throttle", "unknown unit 'x'"),
        ("multiply: true", "filters[0].multiply", "expected a number"),
        ("round: 16", "filters[0].round", "less than or equal to 15"),
        ("delta: {min_value: 2, max_value: 1}", "filters[0].delta.max_value", "must be above"),
        ("or: []", "filters[0].or", "at least 1 item"),
        ("or: [{delta: 0.5}, {throtle: 1s}]", "filters[0].or[1]", "did you mean 'throttle'?"),
    ],
)
def test_bad_filter_options_are_located(
    tmp_path: Path, item: str, where: str, message: str
) -> None:
    path = write(tmp_path, serial(f"t:\n  filters:\n    - {item}\n"))
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:{line_of(path, item)}:")
    assert f": devices[0].sensors.t.{where}: " in problem
    assert message in problem


# -- Home Assistant checks of sensors ----------------------------------------------------------


def test_unit_that_does_not_fit_the_device_class(tmp_path: Path) -> None:
    path = write(tmp_path, serial('temp:\n  device_class: temperature\n  unit: "C"\n'))
    [problem] = problems_of(path)
    where = f"{path}:{line_of(path, 'unit:')}:9"  # at the unit, not at the device class
    assert problem == (
        f"{where}: devices[0].sensors.temp.unit: unit 'C' does not fit device_class temperature: "
        "use one of °C, °F, K"
    )


def test_state_class_the_device_class_does_not_allow(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        serial('hum: {device_class: humidity, unit: "%", state_class: total_increasing}\n'),
    )
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:{line_of(path, 'total_increasing')}:")
    assert ": devices[0].sensors.hum." in problem
    assert problem.endswith(
        "state_class total_increasing is not allowed for device_class humidity: use measurement"
    )


def test_unknown_device_class(tmp_path: Path) -> None:
    path = write(tmp_path, serial('hum:\n  device_class: humidty\n  unit: "%"\n'))
    [problem] = problems_of(path)
    where = f"{path}:{line_of(path, 'humidty')}:9"
    assert problem == (
        f"{where}: devices[0].sensors.hum.device_class: unknown device_class 'humidty' "
        "(did you mean humidity?)"
    )


def test_good_classes_and_binary_device_classes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        serial("""\
            temp: {device_class: temperature, unit: "°C", state_class: measurement}
            energy: {device_class: energy, unit: kWh, state_class: total_increasing}
            door: {device_class: door, type: bool}
            motion: {device_class: motion}
            """),
    )
    sensors = sensors_of(load_config(path, env={}))
    assert sensors["door"].device_class == "door"
    assert sensors["door"].type == "bool"
    assert sensors["energy"].state_class == "total_increasing"
    assert sensors["motion"].device_class == "motion"


def test_bool_sensor_with_a_class_binary_sensors_do_not_have(tmp_path: Path) -> None:
    path = write(tmp_path, serial("door: {device_class: temperature_delta, type: bool}\n"))
    [problem] = problems_of(path)
    assert "devices[0].sensors.door.device_class: unknown binary_sensor device_class" in problem


def test_discovery_and_batch_conflict(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "homeassistant: {discovery: true}\n" + serial("t: {}\n", "batch: {max_items: 10}\n"),
    )
    [problem] = problems_of(path)
    assert problem.startswith(
        f"{path}:{line_of(path, 'batch:')}:5: devices[0].batch: Home Assistant cannot read batches"
    )

    # Without discovery the same device is fine.
    cfg = load_config(write(tmp_path, serial("t: {}\n", "batch: {max_items: 10}\n")), env={})
    [device] = cfg.devices
    assert device.batch is not None
    assert device.batch.max_items == 10


@pytest.mark.parametrize("name", ["ts", "seq"])
def test_payload_device_reserves_ts_and_seq(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, serial(f"{name}: {{unit: s}}\n", "payload: device\n"))
    [problem] = problems_of(path)
    where = f"{path}:{line_of(path, f'{name}: ')}:7"
    assert problem == (
        f"{where}: devices[0].sensors.{name}: with payload: device, `{name}` is the frame's own "
        "key; name the sensor differently"
    )
    # With payload: sensor the name is an ordinary topic level.
    cfg = load_config(write(tmp_path, serial(f"{name}: {{unit: s}}\n")), env={})
    assert name in sensors_of(cfg)


def test_homeassistant_section_defaults_and_component_mode(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""), env={})
    ha = cfg.homeassistant
    assert (ha.discovery, ha.prefix, ha.status_topic, ha.mode, ha.announce_delay) == (
        False,
        "homeassistant",
        "homeassistant/status",
        "device",
        3.0,
    )

    cfg = load_config(
        write(tmp_path, "homeassistant: {discovery: true, mode: component, prefix: ha}\n"), env={}
    )
    assert (cfg.homeassistant.discovery, cfg.homeassistant.mode) == (True, "component")
    assert cfg.homeassistant.prefix == "ha"

    path = write(tmp_path, "homeassistant:\n  mode: entity\n")
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:5:3: homeassistant.mode: ")


def test_sensor_homeassistant_overrides_are_kept(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        serial(
            "t:\n  homeassistant: {name: Temperature, suggested_display_precision: 1, icon: null}\n"
        ),
    )
    assert sensors_of(load_config(path, env={}))["t"].homeassistant == {
        "name": "Temperature",
        "suggested_display_precision": 1,
        "icon": None,
    }


# -- friendly names and availability -----------------------------------------------------------


def advert(body: str) -> str:
    return "devices:\n  - id: th\n    type: ble_advert\n    decoder: pvvx\n" + textwrap.indent(
        textwrap.dedent(body), "    "
    )


def test_ble_advert_name_with_address_is_the_friendly_name(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, advert('address: "a4:c1:38:12:34:56"\nname: Kitchen\n')), env={}
    )
    [device] = cfg.devices
    assert isinstance(device, BleAdvertDevice)
    assert (device.address, device.name, device.friendly_name) == (
        "A4:C1:38:12:34:56",
        None,
        "Kitchen",
    )
    assert device.display_name == "Kitchen"


def test_ble_advert_name_alone_is_a_pattern(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, advert('name: "ATC_*"\nfriendly_name: Bedroom\n')), env={})
    [device] = cfg.devices
    assert isinstance(device, BleAdvertDevice)
    assert (device.address, device.name) == (None, "ATC_*")
    assert device.display_name == "Bedroom"

    cfg = load_config(write(tmp_path, advert('name: "ATC_*"\n')), env={})
    assert cfg.devices[0].display_name == "th"  # default: the id


def test_ble_advert_without_address_or_name(tmp_path: Path) -> None:
    path = write(tmp_path, advert("rssi: true\n"))
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:5:5: devices[0]: ")
    assert "exactly one of address and name" in problem


def test_display_name_of_other_devices(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, serial("t: {}\n", "name: Boiler room\n")), env={})
    assert cfg.devices[0].display_name == "Boiler room"
    cfg = load_config(write(tmp_path, serial("t: {}\n")), env={})
    assert cfg.devices[0].display_name == "dev"


def availability_timeout(tmp_path: Path, body: str) -> float | None:
    [device] = load_config(write(tmp_path, body), env={}).devices
    return device.availability_timeout


def test_availability_timeout(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, serial("t: {}\n", "availability: {timeout: 120}\n")), env={})
    [device] = cfg.devices
    assert isinstance(device, SerialDevice)
    assert (device.availability.timeout, device.availability_timeout) == (120.0, 120.0)
    assert availability_timeout(tmp_path, serial("t: {}\n")) is None  # default: link state only

    # An advert device is offline once not heard for stale_after, unless told otherwise.
    body = 'address: "a4:c1:38:12:34:56"\n'
    assert availability_timeout(tmp_path, advert(body)) == 900.0  # stale_after's default
    body += "stale_after: 300\n"
    assert availability_timeout(tmp_path, advert(body)) == 300.0
    body += "availability: {timeout: 120}\n"
    assert availability_timeout(tmp_path, advert(body)) == 120.0

    path = write(tmp_path, serial("t: {}\n", "availability: {timeout: 0}\n"))
    [problem] = problems_of(path)
    assert problem.startswith(
        f"{path}:{line_of(path, 'availability')}:20: devices[0].availability.timeout: "
    )


# -- the schema --------------------------------------------------------------------------------


def test_schema_describes_filters_and_homeassistant(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json_schema()

    assert "homeassistant" in printed["properties"]
    defs = printed["$defs"]
    assert set(defs["HomeAssistantSection"]["properties"]) >= {"discovery", "prefix", "mode"}
    sensor = defs["SensorSpec"]["properties"]
    assert {"filters", "homeassistant", "device_class", "state_class"} <= set(sensor)
    # Every filter has a schema whose single property is its name (the YAML's `- name: ...`).
    documented = {
        key for d in defs.values() if len(props := d.get("properties", {})) == 1 for key in props
    }
    assert set(FILTERS.names()) <= documented
    assert "availability" in defs["SerialDevice"]["properties"]
    assert "friendly_name" in defs["BleAdvertDevice"]["properties"]
