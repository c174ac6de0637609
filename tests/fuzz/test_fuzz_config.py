"""The config file is input from outside: whatever it holds, loading it gives a `Config` or a
`ConfigError` (one located problem per line), never a yaml, pydantic, Unicode or recursion
error, and in bounded memory (issue 21, items 9 and 10)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from fuzzing import FUZZ, FUZZ_HEAVY
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import Config, load_config
from gateway.errors import ConfigError

pytestmark = pytest.mark.timeout(600)

MEMORY_BOUND = 50_000_000  # bytes one load may allocate at its peak (the bound of item 10)

# Pieces of YAML text: structure, tags, anchors and aliases, merge keys, odd scalars and
# characters, and bits of a real config.
PIECES = [
    "gateway:",
    "  id: gw1",
    "\n",
    "  ",
    "- ",
    "? ",
    ": ",
    ", ",
    "[",
    "]",
    "{",
    "}",
    "&a ",
    "&b ",
    "*a",
    "*b",
    "<<: *a",
    "<<: [*a, *b]",
    "!secret ",
    "!!python/name:os.system ",
    "!!python/object/apply:os.system ['true'] ",
    "!!binary aGk= ",
    "!!set ",
    "!!omap ",
    "!!int ",
    "!!float ",
    "!!timestamp ",
    "!!str ",
    "!!map ",
    "!!seq ",
    "!<tag:example.com,2000:x> ",
    "%YAML 1.1\n---\n",
    "---\n",
    "...\n",
    "=",
    "~",
    "null",
    "yes",
    "0x1F",
    "0o17",
    "1_000",
    "1e400",
    ".nan",
    "-.inf",
    "2024-13-45",
    "2024-01-01T25:61:61Z",
    "1:20:30",
    "9" * 5000,
    "'quoted'",
    '"\\x00\\uffff"',
    "|\n  block\n",
    ">-\n  folded\n",
    "# comment",
    "${VAR}",
    "${VAR:-default}",
    "${",
    "\t",
    "\x00",
    "\x85",
    "\ufeff",
    "é",
    "\U0001f600",
    "devices:",
    "- {id: a, type: serial, port: /dev/ttyX}",
    "- {id: b, type: modbus, port: /dev/ttyY, unit_id: 1, registers: [{name: t, address: 0}]}",
    "mqtt: {port: 1883}",
    "sensors: {availability: {}}",
    "outbox: {file: ../x}",
]

texts = st.one_of(
    st.lists(st.sampled_from(PIECES), max_size=60).map("".join),
    st.builds(
        lambda n, close: "gateway: {id: gw1}\nx: " + "[" * n + ("]" * n if close else ""),
        st.integers(0, 3000),
        st.booleans(),
    ),
    st.builds(
        lambda n, close: "gateway: {id: gw1}\nx:" + "".join(f"\n{'  ' * i}k:" for i in range(n)),
        st.integers(0, 500),
        st.booleans(),
    ),
    st.builds(  # aliases of aliases: fanout ** levels values once followed
        lambda levels, fanout: (
            "gateway: {id: gw1}\na0: &a0 [x]\n"
            + "".join(
                f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * fanout)}]\n" for i in range(1, levels)
            )
        ),
        st.integers(1, 12),
        st.integers(1, 12),
    ),
    st.text(max_size=300),
)
raw = st.binary(max_size=300)


def load_bounded(path: Path) -> None:
    """Load `path`; only a Config or a ConfigError may come out, within the memory bound."""
    tracemalloc.start()
    problems: list[str] = []
    try:
        load_config(path, env={"VAR": "1"})
    except ConfigError as exc:
        problems = exc.problems or ["(a ConfigError without problems)"]
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert all(p.startswith(f"{path}:") for p in problems), problems
    assert peak < MEMORY_BOUND


@FUZZ_HEAVY
@given(text=texts)
def test_any_yaml_text_is_a_config_or_a_located_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    load_bounded(path)


@FUZZ
@given(data=raw)
def test_any_bytes_are_a_config_or_a_located_config_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(data)
    load_bounded(path)


# Random data through the config models: known keys (so that validation goes deep), any values.
KEYS = [
    "gateway", "id", "state_dir", "mqtt", "host", "port", "topic_prefix", "command_verb",
    "outbox", "file", "max_bytes", "devices", "type", "sensors", "unit", "filters", "decoder",
    "columns", "fields", "registers", "name", "address", "values", "batch", "metrics", "auth",
    "token_file", "password_file", "homeassistant", "discovery", "availability", "log", "level",
    "serial", "modbus", "ble_advert", "ble_gatt", "synthetic", "multiply", "or", "throttle",
]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(KEYS),
)
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=5),
    ),
    max_leaves=40,
)


@FUZZ
@given(
    data=st.fixed_dictionaries(
        {"gateway": st.one_of(values, st.just({"id": "gw1"}))},
        optional={k: values for k in ("mqtt", "outbox", "devices", "metrics", "homeassistant")},
    )
)
def test_any_data_through_the_models_is_a_config_or_a_located_config_error(
    tmp_path: Path, data: dict[str, Any]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    load_bounded(path)


def test_a_config_still_loads(tmp_path: Path) -> None:
    """(The fuzz tests above would pass if everything were refused.)"""
    path = tmp_path / "config.yaml"
    path.write_text("gateway: {id: gw1}\ndevices: [{id: a, type: serial, port: /dev/ttyX}]\n")
    assert isinstance(load_config(path, env={}), Config)
