"""What a reload changes, as a pure function of the old and the new config: `plan_reload`.

Every link a config asks for has a name and a spec (what it is made of: the device's config, the
MQTT settings, the BLE section and scan plans). Reload is the set difference of the names: a
name only in the old config is stopped, one only in the new is started, one in both is restarted
if its spec changed and kept otherwise. Nothing here touches a running gateway; the lifecycle
applies the plan (`Gateway.apply`), and tests check plans without a process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from gateway.config import Config
from gateway.families import FAMILIES
from gateway.linknames import SESSION, link_name, stream_link_name
from gateway.streams.device import device_is_timed

# Settings read once at start: a reload that changes them says so and keeps the old value.
AFTER_RESTART: dict[str, Callable[[Config], object]] = {
    "outbox and gateway.state_dir": lambda c: (c.outbox, c.gateway.state_dir),
    "metrics.enabled, .host and .port": lambda c: (
        c.metrics.enabled,
        c.metrics.host,
        c.metrics.port,
    ),
    "metrics' connection limits and auth": lambda c: (
        c.metrics.max_connections,
        c.metrics.header_timeout,
        c.metrics.idle_timeout,
        c.metrics.send_timeout,
        c.metrics.auth,
    ),
    "gateway.stall_timeout": lambda c: c.gateway.stall_timeout,
}


class Discovery(Enum):
    """What Home Assistant discovery does on a reload."""

    OFF = "off"  # off before and now
    SWITCHED_ON = "switched_on"  # make the announcer; the session restarts to subscribe
    CONFIGURE = "configure"  # on before and now: announce what changed
    SWITCHED_OFF = "switched_off"  # clear every announced config


def session_spec(cfg: Config) -> object:
    """What the MQTT session is made of: its settings, the gateway's id (topics, client id) and
    the Home Assistant topics it subscribes to at connect."""
    ha = cfg.homeassistant
    return (cfg.mqtt, cfg.gateway.id, ha.prefix, ha.status_topic)


def link_specs(cfg: Config) -> dict[str, object]:
    """Every link the config asks for, in start order: the session; each device's stream timer
    (if its filters need time) and link, in config order; then the links a family shares among
    its devices (the BLE scanners)."""
    of_families: dict[str, object] = {}
    for family in FAMILIES:
        of_families.update(family.link_specs(cfg))
    specs: dict[str, object] = {SESSION: session_spec(cfg)}
    for device in cfg.devices:
        if device_is_timed(device):
            specs[stream_link_name(device.id)] = device
        name = link_name(device)
        specs[name] = of_families.pop(name)
    specs.update(of_families)
    return specs


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    stop: tuple[str, ...]  # links of the old config only
    start: tuple[str, ...]  # links of the new config only
    restart: tuple[str, ...]  # in both, their spec changed
    keep: tuple[str, ...]  # in both, unchanged
    changed_devices: tuple[str, ...]  # device ids removed or changed: their state goes
    removed_devices: tuple[str, ...]  # device ids no longer configured
    fresh_devices: tuple[str, ...]  # device ids added or changed: new streams
    discovery: Discovery
    log_changed: bool
    after_restart: tuple[str, ...]  # settings changed that only a restart applies

    @property
    def stopping(self) -> tuple[str, ...]:
        return self.stop + self.restart

    @property
    def starting(self) -> tuple[str, ...]:
        """In the new config's start order."""
        wanted = {*self.start, *self.restart}
        return tuple(n for n in self.start_order if n in wanted)

    start_order: tuple[str, ...] = ()  # every link of the new config, in start order


def _discovery(old: Config, new: Config) -> Discovery:
    match old.homeassistant.discovery, new.homeassistant.discovery:
        case False, True:
            return Discovery.SWITCHED_ON
        case True, True:
            return Discovery.CONFIGURE
        case True, False:
            return Discovery.SWITCHED_OFF
    return Discovery.OFF


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """What to stop, start, restart and keep to go from `old` to `new`."""
    before, after = link_specs(old), link_specs(new)
    restart = [n for n in after if n in before and before[n] != after[n]]
    discovery = _discovery(old, new)
    if discovery is Discovery.SWITCHED_ON and SESSION not in restart:
        restart.insert(0, SESSION)  # its subscriptions are made at connect
    old_devices = {d.id: d for d in old.devices}
    new_devices = {d.id: d for d in new.devices}
    return ReloadPlan(
        stop=tuple(n for n in before if n not in after),
        start=tuple(n for n in after if n not in before),
        restart=tuple(restart),
        keep=tuple(n for n in after if n in before and n not in restart),
        changed_devices=tuple(i for i, d in old_devices.items() if new_devices.get(i) != d),
        removed_devices=tuple(i for i in old_devices if i not in new_devices),
        fresh_devices=tuple(i for i, d in new_devices.items() if old_devices.get(i) != d),
        discovery=discovery,
        log_changed=new.log != old.log,
        after_restart=tuple(k for k, get in AFTER_RESTART.items() if get(old) != get(new)),
        start_order=tuple(after),
    )


def plan_start(cfg: Config) -> ReloadPlan:
    """The first start, as a plan: every link started, every device fresh."""
    after = link_specs(cfg)
    on = cfg.homeassistant.discovery
    return ReloadPlan(
        stop=(),
        start=tuple(after),
        restart=(),
        keep=(),
        changed_devices=(),
        removed_devices=(),
        fresh_devices=tuple(d.id for d in cfg.devices),
        discovery=Discovery.SWITCHED_ON if on else Discovery.OFF,
        log_changed=False,
        after_restart=(),
        start_order=tuple(after),
    )
