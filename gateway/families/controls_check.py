"""The controls' checks across entries (`controls:` in the config): a control's command exists,
and so does its state sensor where the decoder names its sensors up front. Which sensors a
device has is its family's knowledge, so the check lives here, not in `gateway.config`; the
application runs it after the config's own checks (`gateway.app_config`), FILE:LINE each.
"""

from __future__ import annotations

from gateway.config import Config
from gateway.config.controls import ControlSpec
from gateway.families import family_of
from gateway.yamlsource import Located, Path_, dotted


def check_controls(cfg: Config, located: Located) -> list[str]:
    problems = []
    for i, device in enumerate(cfg.devices):
        # Only the models that take commands have `controls` (serial, ble_gatt).
        controls: dict[str, ControlSpec] = getattr(device, "controls", {})
        commands: dict[str, object] = getattr(device, "commands", {})
        family = family_of(device)
        for name, control in controls.items():
            loc: Path_ = ("devices", i, "controls", name)
            problem = None
            if name not in commands:
                known = ", ".join(sorted(commands)) or "none"
                problem = f"no command {name!r} to control (commands: {known})"
            elif control.state is not None and not family.has_sensor(device, control.state):
                loc = (*loc, "state")
                known = (
                    ", ".join(sorted({*family.known_sensors(device), *device.sensors})) or "none"
                )
                problem = f"no sensor {control.state!r} to take the state from (sensors: {known})"
            if problem is not None:
                problems.append(f"{located.where(loc)}: {dotted(loc)}: {problem}")
    return problems
