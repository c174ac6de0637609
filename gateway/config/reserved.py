"""Names the gateway's own topics use: a device or sensor named so would collide with them.

Under `<prefix>/<device>/` the gateway publishes each sensor's readings at `<sensor>`, and also
`availability` and `batch`, and reads commands at `<command_verb>/<command>` (an MQTT `#`
subscription to the latter matches a sensor of that name too). Under `<prefix>/<gateway id>/`
it publishes `status`. A sensor named like one of those levels, or a device with the gateway's
id, would mix readings with the gateway's own messages: config errors at FILE:LINE. (Sensors a
decoder names at run time, `kv` and `json` keys, are not known here.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.yamlsource import Located, Path_, dotted

if TYPE_CHECKING:
    from collections.abc import Sequence

    from gateway.config.devices import DeviceBase


def check_reserved(
    devices: Sequence[DeviceBase], gateway_id: str, prefix: str, verb: str, located: Located
) -> list[str]:
    """Names the config gives that land on the gateway's own topics (`loading.py` passes the
    parts of the loaded config it needs: this module must not import the whole config's)."""
    reserved = {
        "availability": "the device's availability topic",
        "batch": "where the device's batches go",
        verb: f"where its commands go ({prefix}/<device>/{verb}/<command>)",
    }
    problems = []
    for i, device in enumerate(devices):
        if device.id == gateway_id:
            loc: Path_ = ("devices", i, "id")
            problems.append(
                f"{located.where(loc)}: {dotted(loc)}: {device.id} is the gateway's own id: "
                f"{prefix}/{device.id}/status is the gateway's status topic; give the device "
                "another id"
            )
        named: dict[str, Path_] = {}  # the first place each name is written (a register's
        for name, at in device.named_sensors():  # sensor also has a `sensors` entry)
            named.setdefault(name, ("devices", i, *at))
        for name, loc in named.items():
            if (what := reserved.get(name)) is not None:
                topic = f"{prefix}/{device.id}/{name}"
                what = what.replace("<device>", device.id)
                problems.append(
                    f"{located.where(loc)}: {dotted(loc)}: sensor `{name}`: {topic} is {what}; "
                    "name the sensor differently"
                )
    return problems
