"""The Modbus transport keys (`transport`, `host`, `port`, `unit_id`, the serial line keys) in
any combination and of any type: a config loads or is refused with the gateway's own
`ConfigError`, whose lines point into the file; nothing else comes out."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from fuzzing import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import ModbusDevice, load_config
from gateway.errors import ConfigError

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False),
    st.text(max_size=40),
)
KEYS = {
    "transport": st.one_of(st.sampled_from(["serial", "tcp", "rtu_over_tcp", "udp"]), SCALARS),
    "host": st.one_of(st.sampled_from(["127.0.0.1", "localhost", "::1", ""]), SCALARS),
    "port": st.one_of(st.integers(min_value=-1, max_value=70000), st.just("/dev/ttyUSB0"), SCALARS),
    "unit_id": st.one_of(st.integers(min_value=-1, max_value=300), SCALARS),
    "baudrate": SCALARS,
    "parity": SCALARS,
    "match": st.one_of(st.just({"vid": "0403"}), SCALARS),
}
DEVICE = st.fixed_dictionaries({}, optional=KEYS)


@FUZZ
@given(st.lists(DEVICE, min_size=1, max_size=3))
def test_transport_keys_load_or_fail_with_a_config_error(devices: list[dict[str, Any]]) -> None:
    config = {
        "gateway": {"id": "gw1"},
        "devices": [
            {
                "id": f"d{i}",
                "type": "modbus",
                "registers": [{"name": "r", "address": 0}],
                **device,
            }
            for i, device in enumerate(devices)
        ],
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gateway.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        problems: list[str] = []
        try:
            cfg = load_config(path, env={})
        except ConfigError as exc:
            problems = exc.problems
        else:
            for device in cfg.devices:
                assert isinstance(device, ModbusDevice)
                assert device.bus_key  # each has a connection to share
            return
    assert problems
    assert all(line.startswith(str(path)) for line in problems)
