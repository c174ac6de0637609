"""Clearing what is no longer announced: the retained publishes that remove entities and devices
an earlier config announced (`removals`), and how to find and recognise this gateway's retained
configs on the broker (`owned_topic_filter`, `is_own_config`). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.homeassistant.discovery import encode
from gateway.homeassistant.identity import ORIGIN_NAME, GatewayInfo, gateway_identifier, node_id


def removals(
    gw: GatewayInfo, old: Mapping[str, dict[str, Any]], new: Mapping[str, dict[str, Any]]
) -> list[tuple[str, bytes]]:
    """The retained publishes that clear what `old` announced and `new` does not, in topic
    order; the caller publishes them before the configs of `new`.

    - A topic of `old` missing from `new` (an entity, or in device mode a whole device, gone;
      or every topic, after a switch of mode, prefix or gateway id): an empty payload, which
      makes Home Assistant remove the entity, or every entity of the device.
    - Device mode, a device in both whose `components` lost one (or changed its platform,
      sensor <-> binary_sensor): Home Assistant does not remove a component that is merely
      left out, so first the device's new config with each such component as
      `{"platform": <its old platform>}` alone, which removes it; the caller's config follows.

    `gw` is the gateway as it is now: a topic present in both is a device config when it is a
    device topic under its discovery prefix (a topic under an old prefix is in `old` only)."""
    published: list[tuple[str, bytes]] = []
    device_topics = f"{gw.discovery_prefix}/device/"
    for topic in sorted(old):
        if topic not in new:
            published.append((topic, b""))
        elif topic.startswith(device_topics) and (gone := _gone(old[topic], new[topic])):
            published.append((topic, encode(_removing(new[topic], gone))))
    return published


def _components(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    components = config.get("components", config.get("cmps", {}))
    return dict(components) if isinstance(components, Mapping) else {}


def _platform(component: Mapping[str, Any]) -> Any:
    return component.get("platform", component.get("p"))


def _gone(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Component id -> old platform, for the components `new` no longer has under that
    platform. An old removal marker (platform alone) has nothing left to remove."""
    kept = _components(new)
    return {
        cid: _platform(component)
        for cid, component in _components(old).items()
        if len(component) > 1 and (cid not in kept or _platform(kept[cid]) != _platform(component))
    }


def _removing(new: Mapping[str, Any], gone: Mapping[str, Any]) -> dict[str, Any]:
    config = {k: v for k, v in new.items() if k not in ("components", "cmps")}
    components = {cid: c for cid, c in _components(new).items() if cid not in gone}
    components |= {cid: {"platform": platform} for cid, platform in gone.items()}
    return config | {"components": components}


def owned_topic_filter(gw: GatewayInfo) -> str:
    """`<discovery_prefix>/+/<node_id>/+/config`: matches every config topic this gateway
    publishes in either mode (the gateway's own, every device's, every entity's), so the
    runtime can find retained configs of earlier runs. Another program could use the same
    node id: check a retained config with `is_own_config` before clearing it."""
    return f"{gw.discovery_prefix}/+/{node_id(gw.id)}/+/config"


def is_own_config(gw: GatewayInfo, config: Mapping[str, Any]) -> bool:
    """True when a (decoded) retained config was published by this gateway: its origin is
    `iot-gateway` and its device is the gateway or one of the gateway's devices. Reads
    abbreviated option names too."""
    origin = config.get("origin", config.get("o"))
    device = config.get("device", config.get("dev"))
    if not isinstance(origin, Mapping) or not isinstance(device, Mapping):
        return False
    identifiers = device.get("identifiers", device.get("ids"))
    if isinstance(identifiers, str):
        identifiers = [identifiers]
    if origin.get("name") != ORIGIN_NAME or not isinstance(identifiers, list):
        return False
    mine = gateway_identifier(gw)
    return any(i == mine or str(i).startswith(f"{mine}:") for i in identifiers)
