"""The configuration reference (generated from the models for the docs site) covers every model
and field, and `config/example.yaml` and the guide's key tables in docs/configuration.md agree
with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

import gateway.config
from gateway.app_config import load_config
from gateway.config import json_schema
from gateway.config.reference import Reference, Table
from gateway.yamlsource import load_yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "example.yaml"
GUIDE = ROOT / "docs" / "configuration.md"


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference()


def _rendered_rows(markdown: str) -> dict[str, set[str]]:
    """Each table's anchor -> the keys it shows, read back from the page."""
    rows: dict[str, set[str]] = {}
    for section in markdown.split("\n## ")[1:]:
        (anchor,) = re.findall(r"\{#([a-z0-9-]+)\}", section.split("\n", 1)[0])
        rows[anchor] = set(re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE))
    return rows


def test_every_model_and_field_is_on_the_page(reference: Reference) -> None:
    schema = json_schema()
    models = {name for name, d in schema["$defs"].items() if "properties" in d}
    assert models <= set(reference.tables), "models the walk from the file did not reach"
    rows = _rendered_rows(reference.markdown())
    for table in reference.tables.values():
        assert rows[table.anchor] == {k.name for k in table.keys}
    classes = {
        cls.__name__: cls
        for cls in vars(gateway.config).values()
        if isinstance(cls, type) and issubclass(cls, BaseModel) and cls.__name__ in models
    }
    assert {"Config", "MqttSection", "SerialDevice", "BleGattDevice"} <= {*classes, "Config"}
    for name, cls in classes.items():
        fields = {info.alias or field for field, info in cls.model_fields.items()}
        assert fields == {k.name for k in reference.tables[name].keys}, name


def test_every_key_has_a_type_a_default_and_a_description(reference: Reference) -> None:
    for table in reference.tables.values():
        for key in table.keys:
            assert key.type, (table.model, key.name)
            assert key.default, (table.model, key.name)
            assert key.description, f"{table.model}.{key.name}: no description in the model"


def test_the_example_config_loads() -> None:
    cfg = load_config(EXAMPLE, env={})
    assert cfg.devices


def test_every_key_of_the_example_is_in_the_reference(reference: Reference) -> None:
    data = load_yaml(EXAMPLE, env={}).data
    rows = _rendered_rows(reference.markdown())
    used = list(reference.keys_used(data))
    paths = {path for path, _, _ in used}
    # The walk went everywhere: sections, device types, nested parts, list items.
    assert {"mqtt.backoff.initial", "devices[0].port", "outbox.durability"} <= paths
    assert any(re.fullmatch(r"devices\[\d+\]\.notify\[0\]\.characteristic", p) for p in paths)
    for path, table, key in used:
        assert key.name in rows[table.anchor], path
    assert len(paths) > 150


@pytest.mark.parametrize("page", ["streams.md", "homeassistant.md", "modbus.md", "ble.md"])
def test_every_key_of_the_docs_examples_is_in_the_reference(
    reference: Reference, page: str, tmp_path: Path
) -> None:
    """The YAML examples of the device pages use keys the reference documents."""
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:]]
    checked = 0
    for block in blocks:
        data = yaml.safe_load(block)
        if isinstance(data, dict) and "devices" in data:
            used = list(reference.keys_used({"gateway": {"id": "gw1"}, **data}))
            checked += len(used)
    assert checked > 10


def test_a_key_the_reference_does_not_know_is_an_error(reference: Reference) -> None:
    with pytest.raises(KeyError, match=r"mqtt\.hots"):
        list(reference.keys_used({"gateway": {"id": "x"}, "mqtt": {"hots": "b"}}))


# -- the guide's tables (docs/configuration.md) -------------------------------------------------

_SECTION_TABLES = {
    "gateway": "GatewaySection",
    "mqtt": "MqttSection",
    "outbox": "OutboxConfig",
    "log": "LogSection",
    "metrics": "MetricsSection",
    "homeassistant": "HomeAssistantSection",
}


def _guide_rows() -> list[tuple[str, str, str]]:
    """(model, key cell, default cell) of every row of the guide's key tables."""
    rows: list[tuple[str, str, str]] = []
    page = GUIDE.read_text(encoding="utf-8").split("\n## Sections and keys\n", 1)[1]
    page = page.split("\n## ", 1)[0]
    model = ""
    for line in page.splitlines():
        if heading := re.match(r"^\*\*`(\w+)`\*\*", line):
            model = _SECTION_TABLES.get(heading.group(1), "")
        elif line.startswith("| key (`type: serial`)"):
            model = "SerialDevice"
        elif line.startswith("Every device type also has"):
            model = "DeviceBase"
        elif line.startswith("| `") and model:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows.append((model, cells[0], cells[1]))
    return rows


def _key_paths(cell: str) -> list[list[str]]:
    """`tls.ca_file`, `.cert_file` -> [["tls", "ca_file"], ["tls", "cert_file"]]."""
    paths: list[list[str]] = []
    for name in re.findall(r"`([^`]+)`", cell):
        if name.startswith(".") and paths:
            paths.append([*paths[-1][:-1], name[1:]])
        else:
            paths.append(name.split("."))
    return paths


def _table_at(reference: Reference, model: str, path: list[str]) -> tuple[Table, str]:
    if model == "DeviceBase":
        model = "SerialDevice"  # what every device has is in each device type's table
    table = reference.tables[model]
    for part in path[:-1]:
        (inner,) = table.key(part).models
        table = reference.tables[inner]
    return table, path[-1]


def test_every_key_in_the_guide_exists(reference: Reference) -> None:
    rows = _guide_rows()
    assert len(rows) > 60
    for model, keys, _ in rows:
        for written in _key_paths(keys):
            path = written[:-1] if written[-1] == "*" else written  # `backoff.*`
            table, name = _table_at(reference, model, path)
            assert any(k.name == name for k in table.keys), f"{model}: {'.'.join(path)}"


def test_the_defaults_in_the_guide_are_the_models(reference: Reference) -> None:
    """Where a row gives one key and one plain default, it is the model's."""
    checked = 0
    for model, keys, default in _guide_rows():
        paths = _key_paths(keys)
        values = re.findall(r"`([^`]+)`", default)
        plain = re.fullmatch(r"`[^`<]+`( \(.*\))?", default)  # not `gateway-<id>-<hash>`
        if len(paths) != 1 or len(values) != 1 or not plain:
            continue
        table, name = _table_at(reference, model, paths[0])
        expected = table.key(name).default
        assert expected.startswith("`"), f"{model}: {keys}: the model has no default"
        assert yaml.safe_load(values[0]) == yaml.safe_load(expected.strip("`")), (
            f"{model}: {keys}: the model says {expected}"
        )
        checked += 1
    assert checked > 40
