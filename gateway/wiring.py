"""The composition root: the running gateway's graph, built in one place.

`build(cfg, ...)` makes every long-lived part with what it needs, in the order a reading flows:

    metrics -> availability, seen -> outbox -> encoder -> (Home Assistant announcer) -> intake
    -> families (what their links hand readings to) -> supervisor -> watchdog -> HTTP endpoint

Each part gets its collaborators in its constructor: nothing is attached later, nothing is
half-built, nobody asserts that it is not. Only the parts that own a handle are *entered*, by
the lifecycle, on its exit stack (the outbox, HTTP, the supervisor, the watchdog); building opens
nothing but the Home Assistant announcer's small state file. The links of a plan (the MQTT
session, stream timers, the families' links) are made here too (`Graph.links_for`); the
lifecycle starts them.

The graph is also the health view (`health.GatewayView`): `report()` asks each component for
its own status and composes them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.commands import CommandRouter, CommandTarget
from gateway.config import BatchConfig, Config
from gateway.encoding import Encoder
from gateway.families import FAMILIES, Family, FamilyContext
from gateway.health import (
    OutboxStatus,
    Report,
    Seen,
    liveness,
    readiness,
    refresh_metrics,
    status_document,
    status_line,
)
from gateway.homeassistant.announcer import Announcer
from gateway.intake import Intake, Observer
from gateway.linknames import SESSION, link_name, stream_link_name
from gateway.metrics import Metrics
from gateway.models import SensorClasses
from gateway.mqtt.availability import Availability
from gateway.mqtt.session import MqttSession
from gateway.outbox import Outbox
from gateway.reload import Discovery
from gateway.supervisor import Link, LinkStatus, Supervisor
from gateway.systemd import watchdog_timeout
from gateway.watchdog import Watchdog

if TYPE_CHECKING:
    from gateway.http import HttpServer

log = logging.getLogger(__name__)

#: Where a part asks for the process to exit with a status (systemd restarts it).
RequestExit = Callable[[str, int], None]


@dataclass(eq=False, slots=True)
class Graph:
    """Every long-lived part of the running gateway; `cfg` is the config running now (a reload
    replaces it)."""

    cfg: Config
    metrics: Metrics
    availability: Availability
    seen: Seen
    outbox: Outbox
    encoder: Encoder
    intake: Intake
    families: FamilyContext
    supervisor: Supervisor
    watchdog: Watchdog
    http: HttpServer | None
    # Home Assistant discovery while it is on (a reload that switches it on makes it).
    announcer: Announcer | None = None
    # Devices with `batch`: the session's publisher gets them (again on reload).
    batches: dict[str, BatchConfig] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    # -- the links a plan starts ---------------------------------------------------------------
    def links_for(self, names: list[str]) -> list[Link]:
        """The links named (of `cfg`), made afresh: the session, stream timers, family links."""
        cfg = self.cfg
        timers = {stream_link_name(i): link for i, link in self.intake.stream_links.items()}
        links: list[Link] = []
        for name in names:
            if name == SESSION:
                links.append(self._session())
            elif name in timers:
                links.append(timers[name])
        for family in FAMILIES:
            specs = family.link_specs(cfg)
            if mine := [n for n in names if n in specs]:
                links += family.links(cfg, mine, self.families)
        return links

    def _session(self) -> MqttSession:
        cfg = self.cfg
        return MqttSession(
            cfg.mqtt,
            cfg.gateway.id,
            self.outbox,
            self.metrics,
            router=CommandRouter(self._command_target, cfg.mqtt.command_ttl),
            availability=self.availability,
            batches=self.batches,
            parts=() if self.announcer is None else (self.announcer,),
        )

    def _command_target(self, device_id: str) -> CommandTarget | None:
        device = self.cfg.device(device_id)
        if device is None:
            return None
        link = self.supervisor.link(link_name(device))
        return link if isinstance(link, CommandTarget) else None

    # -- what a config changes in the parts ----------------------------------------------------
    def configure(self, cfg: Config, discovery: Discovery) -> None:
        """Take a (reloaded) config: the parts that read it at run time follow."""
        self.cfg = cfg
        self.seen.keep_values = cfg.metrics.sensor_values
        if not cfg.metrics.sensor_values:
            self.seen.values.clear()
            self.metrics.sensor_value.clear()
        self.sync_discovery(discovery)
        self.batches = _batches(cfg)
        session = self.supervisor.link(SESSION)
        if isinstance(session, MqttSession):  # (a restarted one is made with them)
            session.configure_batches(self.batches)
        self.encoder.configure(cfg)

    def sync_discovery(self, discovery: Discovery) -> None:
        """Home Assistant discovery after a reload. Switched on, the announcer is made here and
        made an observer of the intake; the plan restarts the session, whose new instance gets
        it too."""
        announcer = self.announcer
        if discovery is Discovery.SWITCHED_ON and announcer is None:
            announcer = _announcer(self.cfg, self.metrics, self.families.sensor_classes)
            self.announcer = announcer
            self.intake.observers.append(announcer.seen)
        elif discovery in (Discovery.SWITCHED_ON, Discovery.CONFIGURE):
            if announcer is not None:
                announcer.configure(self.cfg)
        elif discovery is Discovery.SWITCHED_OFF and announcer is not None:
            announcer.clear_all()  # stays a part of the session: it sends the clears

    def links_changed(self) -> None:
        """A link changed state: a device is online while its link is up."""
        links = self.supervisor.status
        for device in self.cfg.devices:
            status = links.get(link_name(device))
            if status is not None and status.state != "stopped":
                self.availability.set(device.id, online=status.state == "up")

    # -- the health view (health.GatewayView) --------------------------------------------------
    def report(self) -> Report:
        session = self.supervisor.link(SESSION)
        return Report(
            links=self.supervisor.status,
            stall=self.supervisor.stalled(),
            session=session.status() if isinstance(session, MqttSession) else None,
            outbox=outbox_status(self.outbox),
            loop_lag=self.watchdog.status(),
        )

    def family_document(self, family: Family, now: float) -> object:
        return family.status_document(self.families, self, now)

    # What the BLE family's section reads (`ble.status.LinkView`).
    @property
    def links(self) -> Mapping[str, LinkStatus]:
        return self.supervisor.status

    def link(self, name: str) -> object | None:
        return self.supervisor.link(name)


def outbox_status(outbox: Outbox) -> OutboxStatus:
    """The outbox's report of itself (`Outbox.stats`)."""
    stats = outbox.stats()
    return OutboxStatus(
        records=stats.records,
        bytes=stats.bytes,
        inflight=stats.inflight,
        oldest_age=stats.oldest_age,
        mode=stats.mode.value,
        degraded=stats.degraded,
        mode_reason=stats.mode_reason or "",
        unreadable=stats.unreadable,
    )


def build(
    cfg: Config,
    *,
    metrics: Metrics | None = None,
    request_exit: RequestExit,
    on_links_changed: Callable[[], None] = lambda: None,
) -> Graph:
    """The running gateway's parts for `cfg`, each made with its collaborators."""
    metrics = metrics or Metrics()
    availability = Availability()
    seen = Seen(keep_values=cfg.metrics.sensor_values)
    outbox = Outbox(cfg.gateway.state_dir / cfg.outbox.file, cfg.outbox, metrics)
    encoder = Encoder(outbox, cfg, metrics)
    sensor_classes: SensorClasses = {}  # what decoders say (BLE), for Home Assistant
    announcer = None
    observers: list[Observer] = [seen.observe]  # the recent values (status page, gauges)
    if cfg.homeassistant.discovery:
        announcer = _announcer(cfg, metrics, sensor_classes)
        observers.append(announcer.seen)
    intake = Intake(metrics, availability, encoder, observers)
    families = FamilyContext(
        intake.submit,
        metrics,
        submit_unknown=intake.submit_unknown,
        sensor_classes=sensor_classes,
        request_exit=request_exit,
    )

    # The supervisor, the watchdog and the endpoint report through the graph they are part
    # of: their callbacks are called only once the gateway runs, after `graph` is made below.
    def links_changed() -> None:
        graph.links_changed()
        on_links_changed()

    supervisor = Supervisor(
        metrics,
        on_change=links_changed,
        stall_timeout=cfg.gateway.stall_timeout,
        stop_timeout=cfg.gateway.shutdown_timeout,
    )
    watchdog = Watchdog(
        supervisor.stalled, metrics, timeout=watchdog_timeout(), status=lambda: status_line(graph)
    )
    graph = Graph(
        cfg,
        metrics,
        availability,
        seen,
        outbox,
        encoder,
        intake,
        families,
        supervisor,
        watchdog,
        http=_http_server(cfg, metrics, lambda: graph),
        announcer=announcer,
        batches=_batches(cfg),
    )
    return graph


def _batches(cfg: Config) -> dict[str, BatchConfig]:
    return {d.id: d.batch for d in cfg.devices if d.batch is not None}


def _announcer(cfg: Config, metrics: Metrics, sensor_classes: SensorClasses) -> Announcer:
    return Announcer(cfg, metrics, sensor_classes)


def _http_server(cfg: Config, metrics: Metrics, view: Callable[[], Graph]) -> HttpServer | None:
    """The HTTP endpoint, or nothing when `metrics.enabled` is false (then h11 and the
    endpoint's modules are never imported)."""
    section = cfg.metrics
    if not section.enabled:
        return None
    from gateway.http import Endpoints, HttpLimits, HttpServer, is_loopback  # noqa: PLC0415

    endpoints = Endpoints(
        metrics.registry,
        refresh=lambda: refresh_metrics(view()),
        liveness=lambda: liveness(view()),
        readiness=lambda: readiness(view()),
        status=lambda: status_document(view()),
        auth=section.auth,
    )
    if section.auth is None and not is_loopback(section.host):  # allow_unauthenticated: true
        log.warning(
            "http: metrics.host %s is reachable from other hosts and metrics.auth is not "
            "set: anyone there can read the status page, /status and /metrics",
            section.host,
        )
    return HttpServer(
        section.host,
        section.port,
        endpoints.application(),
        limits=HttpLimits.from_config(section),
        refused=metrics.refused,
    )
