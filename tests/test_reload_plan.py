"""`plan_reload(old, new)`: what a reload stops, starts, restarts and keeps, without a process.

Reload is the set difference of the links' names, a link restarted when what it is made of (its
spec) changed; the properties below hold for any pair of configs hypothesis makes up.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.config import Config
from gateway.reload import Discovery, link_specs, plan_reload, plan_start


def config(*devices: dict[str, Any], **sections: Any) -> Config:
    return Config.model_validate({"gateway": {"id": "gw"}, "devices": list(devices), **sections})


def serial(device_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": device_id, "type": "serial", "port": f"/dev/tty{device_id}", **extra}


def advert(device_id: str, address: str, decoder: str = "pvvx") -> dict[str, Any]:
    return {"id": device_id, "type": "ble_advert", "address": address, "decoder": decoder}


KITCHEN = advert("kitchen", "A4:C1:38:12:34:56")
HEARTBEAT = {"sensors": {"temp": {"filters": [{"heartbeat": 30}]}}}


def test_the_same_config_changes_nothing() -> None:
    cfg = config(serial("a"), serial("b"))
    plan = plan_reload(cfg, cfg)
    assert plan.stopping == plan.starting == ()
    assert plan.keep == ("mqtt", "serial:a", "serial:b")
    assert plan.discovery is Discovery.OFF
    assert not plan.log_changed
    assert plan.after_restart == ()


def test_added_removed_and_changed_devices() -> None:
    old = config(serial("a"), serial("b"), serial("c"))
    new = config(serial("a"), serial("b", baudrate=19200), serial("d"))
    plan = plan_reload(old, new)
    assert plan.stop == ("serial:c",)
    assert plan.start == ("serial:d",)
    assert plan.restart == ("serial:b",)
    assert plan.keep == ("mqtt", "serial:a")
    assert plan.starting == ("serial:b", "serial:d")  # the new config's order
    assert plan.changed_devices == ("b", "c")
    assert plan.removed_devices == ("c",)
    assert plan.fresh_devices == ("b", "d")


def test_a_device_that_changes_family_is_a_new_link() -> None:
    old = config(serial("x"))
    new = config({"id": "x", "type": "synthetic", "values": {"t": "sine"}})
    plan = plan_reload(old, new)
    assert plan.stop == ("serial:x",)
    assert plan.start == ("synthetic:x",)
    assert plan.changed_devices == plan.fresh_devices == ("x",)


def test_a_device_whose_filters_need_time_has_a_timer_restarted_with_it() -> None:
    old = config(serial("a", **HEARTBEAT))
    assert list(link_specs(old)) == ["mqtt", "stream:a", "serial:a"]
    changed = plan_reload(old, config(serial("a", baudrate=19200, **HEARTBEAT)))
    assert changed.restart == ("stream:a", "serial:a")
    untimed = plan_reload(old, config(serial("a")))
    assert untimed.stop == ("stream:a",)
    assert untimed.restart == ("serial:a",)


def test_session_restarts_for_mqtt_the_gateway_id_and_home_assistant_topics() -> None:
    base = config(serial("a"))
    for sections in (
        {"mqtt": {"host": "broker.example"}},
        {"gateway": {"id": "other"}},
        {"homeassistant": {"prefix": "ha"}},
    ):
        cfg = Config.model_validate({"gateway": {"id": "gw"}, "devices": [serial("a")], **sections})
        assert plan_reload(base, cfg).restart == ("mqtt",), sections


def test_discovery_switched_on_restarts_the_session_and_off_does_not() -> None:
    off, on = config(), config(homeassistant={"discovery": True})
    switched_on = plan_reload(off, on)
    assert switched_on.discovery is Discovery.SWITCHED_ON
    assert switched_on.restart == ("mqtt",)
    switched_off = plan_reload(on, off)
    assert switched_off.discovery is Discovery.SWITCHED_OFF
    assert switched_off.restart == ()  # the announcer stays, to send the clears
    assert plan_reload(on, on).discovery is Discovery.CONFIGURE


def test_settings_read_once_are_reported_not_applied() -> None:
    old = config()
    new = config(metrics={"port": 9200}, gateway={"id": "gw", "stall_timeout": 99})
    plan = plan_reload(old, new)
    assert plan.after_restart == ("metrics.enabled, .host and .port", "gateway.stall_timeout")
    assert plan.stopping == ()
    assert plan_reload(old, config(log={"level": "DEBUG"})).log_changed


def test_the_http_endpoint_s_limits_and_auth_are_read_once() -> None:
    """The server is built at start: new limits or credentials would silently not apply."""
    old = config()
    for metrics in (
        {"max_connections": 8},
        {"header_timeout": 2.0},
        {"idle_timeout": 5.0},
        {"send_timeout": 3.0},
        {"auth": {"token": "a-token"}},
    ):
        plan = plan_reload(old, config(metrics=metrics))
        assert plan.after_restart == ("metrics' connection limits and auth",), metrics


def test_bluetooth_scanners_restart_only_when_the_ble_section_or_a_scan_plan_changes() -> None:
    hall = advert("hall", "A4:C1:38:65:43:21", "atc")
    old = config(KITCHEN)
    assert list(link_specs(old)) == [
        "mqtt",
        "stream:kitchen",
        "ble_advert:kitchen",
        "ble_scanner:hci0",
    ]
    added = plan_reload(old, config(KITCHEN, hall))  # active scanning: the same plan
    assert added.start == ("stream:hall", "ble_advert:hall")  # republish_after: a timer
    assert added.restart == ()
    section = plan_reload(old, config(KITCHEN, ble={"max_connections": 2}))
    assert section.restart == ("ble_scanner:hci0",)
    gone = plan_reload(old, config(serial("a")))
    assert gone.stop == ("stream:kitchen", "ble_advert:kitchen", "ble_scanner:hci0")


def test_no_bluetooth_no_scanner() -> None:
    assert list(link_specs(config(serial("a")))) == ["mqtt", "serial:a"]
    publish = config(ble={"unknown_devices": "publish"})  # unconfigured advertisers: scan
    assert list(link_specs(publish)) == ["mqtt", "ble_scanner:hci0"]


def test_the_first_start_is_a_plan_too() -> None:
    plan = plan_start(config(serial("a", **HEARTBEAT), KITCHEN))
    assert plan.starting == (
        "mqtt",
        "stream:a",
        "serial:a",
        "stream:kitchen",
        "ble_advert:kitchen",
        "ble_scanner:hci0",
    )
    assert plan.fresh_devices == ("a", "kitchen")


DEVICES = [
    serial("a"),
    serial("a", baudrate=19200),
    serial("b"),
    serial("b", **HEARTBEAT),
    {"id": "c", "type": "synthetic", "values": {"t": "sine"}},
    KITCHEN,
    advert("hall", "A4:C1:38:65:43:21", "atc"),
]


@st.composite
def configs(draw: st.DrawFn) -> Config:
    chosen = draw(st.lists(st.sampled_from(DEVICES), max_size=5))
    unique = list({d["id"]: d for d in chosen}.values())
    discovery = draw(st.booleans())
    return config(*unique, homeassistant={"discovery": discovery})


@given(configs(), configs())
def test_a_plan_is_the_set_difference_of_the_links(old: Config, new: Config) -> None:
    plan = plan_reload(old, new)
    before, after = set(link_specs(old)), set(link_specs(new))
    assert set(plan.stop) == before - after
    assert set(plan.start) == after - before
    assert set(plan.restart) | set(plan.keep) == before & after
    assert not set(plan.restart) & set(plan.keep)
    # Everything of the new config runs after the plan, nothing of the old config only.
    assert (before - set(plan.stopping)) | set(plan.starting) == after
    # Applying the same config again is a no-op.
    again = plan_reload(new, new)
    assert again.stopping == again.starting == ()
