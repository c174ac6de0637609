"""Controls in the config (issue 23): the contract's shapes load as written, and the mistakes are
refused at FILE:LINE:COL with the reason: a control on a read-only register, a select without
options, a switch whose state sensor does not exist, a platform Home Assistant does not have."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.app_config import load_config
from gateway.config import BleGattDevice, ModbusDevice, SerialDevice
from gateway.errors import ConfigError
from gateway.families import family_of

pytestmark = pytest.mark.timeout(30)

HEAD = """\
gateway: {id: gw1, state_dir: /tmp/gw}
mqtt: {host: 127.0.0.1}
devices:
"""

# The contract, as written (only `characteristic: ...` filled in, and a port each).
CONTRACT = (
    HEAD
    + """\
  - id: meter1
    type: modbus
    port: /dev/ttyUSB1
    registers:
      - {name: relay, address: 3, function: coil,
         homeassistant: {platform: switch}}                       # coil -> switch (default)
      - {name: setpoint, address: 0x10, function: holding, data_type: int16, scale: 0.1, unit: "°C",
         homeassistant: {platform: number, min: 5, max: 30, step: 0.5, mode: box}}
      - {name: mode, address: 0x11, function: holding, data_type: uint16,
         options: {0: "off", 1: eco, 2: comfort},                  # value <-> label, both ways
         homeassistant: {platform: select}}
  - id: heater
    type: serial
    port: /dev/ttyUSB0
    commands:
      power: "PWR {payload}"
      reset: "RST"
    controls:
      power: {platform: switch, payload_on: "1", payload_off: "0", state: power}   # state: a sensor
      reset: {platform: button}
  - id: led
    type: ble_gatt
    address: "AA:BB:CC:DD:EE:FF"
    commands:
      led: {characteristic: "0000ff01-0000-1000-8000-00805f9b34fb", payload: hex}
    controls:
      led: {platform: select, options: {"00": "off", "ff": "on"}}
"""
)


def write(tmp_path: Path, devices: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(HEAD + textwrap.indent(textwrap.dedent(devices), "  "), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    return info.value.problems


def modbus(register: str, device: str = "meter1", unit: int = 1) -> str:
    return f"""\
- id: {device}
  type: modbus
  port: /dev/ttyUSB1
  unit_id: {unit}
  registers:
    - {{name: power, address: 0, function: input}}
    - {register}
"""


def test_the_contract_loads_as_written(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONTRACT, encoding="utf-8")
    meter, heater, led = load_config(path, env={}).devices
    assert isinstance(meter, ModbusDevice)
    assert isinstance(heater, SerialDevice)
    assert isinstance(led, BleGattDevice)
    relay, setpoint, mode = (family_of(meter).controls(meter)[n] for n in meter.sensors)
    assert (relay.platform, relay.state, relay.state_bool) == ("switch", "relay", True)
    assert (setpoint.platform, setpoint.minimum, setpoint.maximum, setpoint.step) == (
        "number",
        5.0,
        30.0,
        0.5,
    )
    assert setpoint.unit == "°C"
    assert dict(setpoint.overrides) == {"min": 5, "max": 30, "step": 0.5, "mode": "box"}
    assert (mode.platform, dict(mode.options)) == (
        "select",
        {"0": "off", "1": "eco", "2": "comfort"},
    )
    power, reset = family_of(heater).controls(heater).values()
    assert (power.platform, power.state, power.payload_on, power.payload_off) == (
        "switch",
        "power",
        "1",
        "0",
    )
    assert (reset.platform, reset.state) == ("button", None)
    [led_select] = family_of(led).controls(led).values()
    assert (led_select.platform, dict(led_select.options)) == ("select", {"00": "off", "ff": "on"})


def test_a_coil_is_a_switch_unless_it_says_otherwise(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        modbus("{name: relay, address: 3, function: coil}")
        + modbus(
            "{name: relay, address: 3, function: coil, "
            "homeassistant: {platform: binary_sensor, name: Relay state}}",
            "meter2",
            2,
        ),
    )
    meter1, meter2 = load_config(path, env={}).devices
    assert [c.platform for c in family_of(meter1).controls(meter1).values()] == ["switch"]
    assert family_of(meter2).controls(meter2) == {}
    # A register that is only read gives its `homeassistant:` keys to its sensor.
    assert dict(meter2.sensors["relay"].homeassistant) == {"name": "Relay state"}


@pytest.mark.parametrize(
    ("register", "message"),
    [
        (
            "{name: volts, address: 1, function: input, homeassistant: {platform: number}}",
            "a number needs a register it can write: an input register is read-only",
        ),
        (
            "{name: door, address: 1, function: discrete, homeassistant: {platform: switch}}",
            "a switch needs a register it can write: a discrete register is read-only",
        ),
        (
            "{name: mode, address: 1, homeassistant: {platform: select}}",
            "a select needs the register's options",
        ),
        (
            "{name: relay, address: 1, function: coil, homeassistant: {platform: swtich}}",
            "Home Assistant has no platform 'swtich'",
        ),
        (
            "{name: t, address: 1, homeassistant: {platform: climate}}",
            "platform climate: the gateway makes switch, number, select, button, sensor, "
            "binary_sensor here",
        ),
        (
            "{name: t, address: 1, homeassistant: {platform: number, min: 30, max: 5}}",
            "min must be below max",
        ),
        (
            "{name: t, address: 1, homeassistant: {platform: number, max: high}}",
            "max must be a number",
        ),
        (
            '{name: t, address: 1, options: {0: "off"}, homeassistant: {platform: number}}',
            "a register with options is a select, not a number",
        ),
        (
            '{name: t, address: 1, function: coil, options: {0: "off"}}',
            "options are for registers",
        ),
        (
            '{name: t, address: 1, options: {0: "off", 1: "off"}}',
            "every option needs a label of its own",
        ),
    ],
)
def test_register_controls_refused_at_their_line(
    tmp_path: Path, register: str, message: str
) -> None:
    [problem] = problems_of(write(tmp_path, modbus(register)))
    key = (
        "options" if "options are" in message or "label of its own" in message else "homeassistant"
    )
    assert problem.startswith(f"{tmp_path / 'config.yaml'}:10:")
    assert f": devices[0].registers[1].{key}: " in problem
    assert message in problem


SERIAL = """\
- id: heater
  type: serial
  port: /dev/ttyUSB0
  decoder: {{type: csv, columns: [temp, relay]}}
  commands:
    power: "PWR {{payload}}"
    mode: "MODE {{payload}}"
  controls:
{controls}
"""


@pytest.mark.parametrize(
    ("controls", "line", "where", "message"),
    [
        (
            "    power: {platform: switch, state: power}",
            12,
            "devices[0].controls.power.state",
            "no sensor 'power' to take the state from (sensors: relay, temp)",
        ),
        (
            "    mode: {platform: select}",
            12,
            "devices[0].controls.mode",
            "a select needs options",
        ),
        (
            "    power: {platform: toggle}",
            12,
            "devices[0].controls.power",
            "Home Assistant has no platform 'toggle'",
        ),
        (
            "    reboot: {platform: button}",
            12,
            "devices[0].controls.reboot",
            "no command 'reboot' to control (commands: mode, power)",
        ),
        (
            '    mode: {platform: switch, options: {"1": eco}}',
            12,
            "devices[0].controls.mode",
            "options are for a select, not a switch",
        ),
    ],
)
def test_serial_controls_refused_at_their_line(
    tmp_path: Path, controls: str, line: int, where: str, message: str
) -> None:
    path = write(tmp_path, SERIAL.format(controls=controls))
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:{line}:")
    assert f": {where}: " in problem
    assert message in problem


def test_a_state_sensor_the_decoder_names_is_found(tmp_path: Path) -> None:
    """csv names its columns: `relay` exists; kv names sensors as they come: any name does."""
    path = write(tmp_path, SERIAL.format(controls="    power: {platform: switch, state: relay}"))
    [heater] = load_config(path, env={}).devices
    assert family_of(heater).controls(heater)["power"].state == "relay"
    kv = SERIAL.replace("  decoder: {{type: csv, columns: [temp, relay]}}\n", "")
    path = write(tmp_path, kv.format(controls="    power: {platform: switch, state: pwr}"))
    load_config(path, env={})
