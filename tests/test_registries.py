"""Filters and device families are registries: a new one is registered once, by the module that
writes it, and the config takes it (the `filters:` and `devices:` unions, the errors that list
the known names, the chain, the reload plan, Home Assistant's checks).

The toys here are what a new filter and a new family need, and nothing more: a filter is its
config model with `build()` and its running class; a family is its device model and its
`Family`. Each is removed again after its test (the config models are rebuilt both ways).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from pydantic import Field

from gateway.app_config import load_config
from gateway.cli import main
from gateway.config import DEVICE_MODELS, DeviceBase, device_model
from gateway.config.filters import FILTERS, Spec, register_filter
from gateway.errors import ConfigError
from gateway.families import FAMILIES, Family, family_of
from gateway.reload import plan_start
from gateway.streams.chain import build_chain
from gateway.streams.filters import Filter, Sample

HEAD = "gateway:\n  id: gw1\n  state_dir: state\n"


def write(directory: Path, body: str) -> Path:
    path = directory / "config.yaml"
    path.write_text(HEAD + textwrap.dedent(body), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    return info.value.problems


# -- a toy filter: its running class and its config model, registered once -------------------
class Tenfold:
    """Multiplies numbers by ten, passes anything else (the toy's running filter)."""

    name = "tenfold"
    timed = False

    def __init__(self, times: int) -> None:
        self.times = times

    def feed(self, sample: Sample, now: float) -> list[Sample]:
        value = sample.value
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = value * 10**self.times
        return [Sample(value, sample.ts)]

    def deadline(self) -> float | None:
        return None

    def tick(self, now: float, wall: float) -> list[Sample]:
        return []


class TenfoldSpec(Spec):
    """Multiply each number by ten, `times` times."""

    key: ClassVar[str] = "tenfold"
    root: int = Field(ge=1, le=3, strict=True, description="How many times.")

    def build(self) -> Filter:
        return Tenfold(self.root)


@pytest.fixture
def toy_filter() -> Iterator[None]:
    register_filter(TenfoldSpec)
    try:
        yield
    finally:
        FILTERS.remove("tenfold")


SENSOR_WITH = """\
devices:
  - id: dev
    type: serial
    port: /dev/ttyUSB0
    sensors:
      t:
        filters:
          - {item}
          - round: 1
"""


@pytest.mark.timeout(30)
def test_a_filter_registered_once_is_a_filter_of_the_config(
    tmp_path: Path, toy_filter: None
) -> None:
    cfg = load_config(write(tmp_path, SENSOR_WITH.format(item="tenfold: 2")), env={})
    chain = build_chain(cfg.devices[0].sensors["t"].filters)
    assert [f.name for f in chain.filters] == ["tenfold", "round"]
    assert chain.feed(Sample(0.215, 1.0), 0.0).samples == [Sample(21.5, 1.0)]
    # In an `or` too, and located like any filter's error.
    cfg = load_config(write(tmp_path, SENSOR_WITH.format(item="or: [{tenfold: 1}]")), env={})
    assert build_chain(cfg.devices[0].sensors["t"].filters).filters[0].name == "or"
    [problem] = problems_of(write(tmp_path, SENSOR_WITH.format(item="tenfold: 4")))
    assert problem.endswith(
        "config.yaml:11:13: devices[0].sensors.t.filters[0].tenfold: "
        "Input should be less than or equal to 3"
    )
    [problem] = problems_of(write(tmp_path, SENSOR_WITH.format(item="tenfld: 1")))
    assert "unknown filter 'tenfld' (did you mean 'tenfold'?)" in problem


@pytest.mark.timeout(30)
def test_an_unregistered_filter_is_unknown_again(tmp_path: Path) -> None:
    register_filter(TenfoldSpec)
    FILTERS.remove("tenfold")
    [problem] = problems_of(write(tmp_path, SENSOR_WITH.format(item="tenfold: 1")))
    assert "unknown filter 'tenfold'" in problem
    assert "tenfold" not in FILTERS


# -- a toy family: its device model and its Family ----------------------------------------------
class ToyDevice(DeviceBase):
    """A made-up device that knows its sensor `temp` is in °C."""

    type: Literal["toy"]
    rate: float = Field(1.0, gt=0, description="Readings per second.")


class ToyFamily(Family):
    name = "toy"
    models = (ToyDevice,)

    def known_sensors(self, device: Any) -> dict[str, str | None]:
        return {"temp": "°C"}


TOY_DEVICE = """\
devices:
  - id: box
    type: toy
    rate: 2
    sensors:
      temp: {device_class: temperature, state_class: measurement}
"""


@pytest.fixture
def toy_family() -> Iterator[ToyFamily]:
    family = ToyFamily()
    device_model(ToyDevice)
    FAMILIES.add(family.name, family)
    try:
        yield family
    finally:
        FAMILIES.remove(family.name)
        DEVICE_MODELS.remove("toy")


@pytest.mark.timeout(30)
def test_a_family_registered_once_is_a_device_type_of_the_config(
    tmp_path: Path, toy_family: ToyFamily, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, TOY_DEVICE)
    cfg = load_config(path, env={})
    [box] = cfg.devices
    assert isinstance(box, ToyDevice)
    assert box.rate == 2
    assert family_of(box) is toy_family
    assert "toy:box" in plan_start(cfg).start  # the lifecycle would start its link
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out.strip().endswith("ok (1 device(s))")
    [problem] = problems_of(write(tmp_path, TOY_DEVICE.replace("rate: 2", "rate: 0")))
    assert problem.endswith("config.yaml:7:5: devices[0].rate: Input should be greater than 0")
    # Home Assistant's check asks the family for a unit the config does not give: `temp` has
    # one (°C), a sensor the family does not know has none, and a temperature needs one.
    other = TOY_DEVICE + "      other: {device_class: temperature}\n"
    [problem] = problems_of(write(tmp_path, other))
    assert problem.endswith(
        "config.yaml:10:15: devices[0].sensors.other.device_class: device_class temperature "
        "needs a unit: use one of °C, °F, K"
    )


@pytest.mark.timeout(30)
def test_an_unregistered_device_type_is_unknown_again(tmp_path: Path) -> None:
    device_model(ToyDevice)
    DEVICE_MODELS.remove("toy")
    [problem] = problems_of(write(tmp_path, TOY_DEVICE))
    assert problem.endswith("config.yaml:6:5: devices[0].type: Input tag 'toy' found using "
                            "'type' does not match any of the expected tags: 'serial', 'modbus', "
                            "'ble_advert', 'ble_gatt', 'synthetic'")  # fmt: skip


def test_every_device_model_belongs_to_one_family() -> None:
    for model in DEVICE_MODELS.values():
        owners = [f.name for f in FAMILIES if model in f.models]
        assert len(owners) == 1, f"{model.__name__} belongs to {owners}"
    assert {m for f in FAMILIES for m in f.models} == set(DEVICE_MODELS.values())


def test_a_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="filter 'median' is registered twice"):
        register_filter(FILTERS.values()[5])
    with pytest.raises(ValueError, match="device type 'serial' is registered twice"):
        device_model(DEVICE_MODELS.values()[0])
