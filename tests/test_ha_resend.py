"""Which entities' last values go out again after their config was announced (`resend.py`):
pure bookkeeping, so plain calls with made-up times."""

from __future__ import annotations

from typing import Any

from gateway.homeassistant.resend import StateResends, entities

TOPIC = "homeassistant/device/gw1/gw1--boiler/config"


def device_config(**components: dict[str, Any]) -> dict[str, Any]:
    return {"device": {"identifiers": ["x"], "name": "Boiler"}, "components": components}


TEMP = {"platform": "sensor", "state_topic": "gw/boiler/temp"}
HUM = {"platform": "sensor", "state_topic": "gw/boiler/hum"}


def test_a_new_config_makes_its_state_topics_due_once_after_the_delay() -> None:
    resends = StateResends(1.0)
    assert resends.announced({TOPIC: device_config(temp=TEMP)}, now=10.0) == 1
    assert resends.deadline() == 11.0
    assert resends.next_in(10.5) == 0.5
    assert resends.take_due(10.9) == set()
    assert resends.take_due(11.0) == {"gw/boiler/temp"}
    assert resends.take_due(20.0) == set()  # once
    assert resends.next_in(20.0) is None


def test_only_new_or_changed_entities_are_due() -> None:
    resends = StateResends(1.0)
    resends.announced({TOPIC: device_config(temp=TEMP)}, now=0.0)
    resends.take_due(1.0)
    # The same config on a reconnect: Home Assistant is subscribed already.
    assert resends.announced({TOPIC: device_config(temp=TEMP)}, now=5.0) == 0
    assert resends.deadline() is None
    # A learned sensor: only its own entity is new.
    assert resends.announced({TOPIC: device_config(temp=TEMP, hum=HUM)}, now=6.0) == 1
    assert resends.take_due(7.0) == {"gw/boiler/hum"}
    # A changed entity (new unit) counts as new; so does a config the broker lost.
    changed = {**TEMP, "unit_of_measurement": "K"}
    assert resends.announced({TOPIC: device_config(temp=changed, hum=HUM)}, now=8.0) == 1
    resends.cleared([TOPIC])
    assert resends.announced({TOPIC: device_config(temp=changed, hum=HUM)}, now=8.5) == 2
    assert resends.take_due(9.5) == {"gw/boiler/temp", "gw/boiler/hum"}


def test_a_changed_device_block_changes_every_entity_and_component_mode_counts_whole() -> None:
    renamed = {**device_config(temp=TEMP, hum=HUM), "device": {"identifiers": ["x"], "name": "B"}}
    assert entities(renamed).keys() == {"temp", "hum"}
    assert entities(renamed)["temp"] != entities(device_config(temp=TEMP))["temp"]
    component = {**TEMP, "device": {"identifiers": ["x"]}}
    assert entities(component) == {"": (entities(component)[""][0], "gw/boiler/temp")}
    # No state topic (a button): nothing to send again.
    assert entities({"components": {"b": {"platform": "button"}}})["b"][1] is None


def test_delay_zero_sends_nothing_again() -> None:
    resends = StateResends(0.0)
    assert resends.announced({TOPIC: device_config(temp=TEMP)}, now=0.0) == 1
    assert resends.deadline() is None
