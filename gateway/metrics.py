"""Every Prometheus metric of the gateway, defined in one place.

A `Metrics` object owns its own registry so that tests (and a reload) never fight over the
process-global default registry. Names follow Prometheus conventions: `_total` counters, base
units (seconds, bytes), labels with bounded cardinality (link, device, kind, reason).
"""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from gateway import __version__

LINK_STATES = ("starting", "up", "backing_off", "stopped", "failed")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.build_info = Info("gateway_build", "Version of the running gateway.", registry=r)
        self.build_info.info({"version": __version__, "python": platform.python_version()})
        self.link_state = Gauge(
            "gateway_link_state",
            "1 for the current state of each link.",
            ["link", "state"],
            registry=r,
        )
        self.link_up = Gauge("gateway_link_up", "1 while the link is up.", ["link"], registry=r)
        self.link_failures = Counter(
            "gateway_link_failures_total",
            "Link failures, by error kind.",
            ["link", "kind"],
            registry=r,
        )
        self.link_retries = Counter(
            "gateway_link_retries_total",
            "Backoffs before re-entering a link.",
            ["link"],
            registry=r,
        )
        self.readings_received = Counter(
            "gateway_readings_received_total",
            "Readings decoded from devices.",
            ["device"],
            registry=r,
        )
        self.readings_published = Counter(
            "gateway_readings_published_total",
            "Readings acknowledged by the broker.",
            ["device"],
            registry=r,
        )
        self.readings_dropped = Counter(
            "gateway_readings_dropped_total",
            "Readings dropped, by reason.",
            ["device", "reason"],
            registry=r,
        )
        self.frame_errors = Counter(
            "gateway_frame_errors_total",
            "Frames skipped because they could not be framed or decoded, by reason.",
            ["device", "reason"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "gateway_queue_depth", "Readings waiting to be published.", registry=r
        )
        self.inflight = Gauge(
            "gateway_mqtt_inflight", "Publishes awaiting a broker acknowledgement.", registry=r
        )
        self.outbox_records = Gauge(
            "gateway_outbox_records",
            "Readings stored in the outbox, not yet acknowledged.",
            registry=r,
        )
        self.outbox_bytes = Gauge(
            "gateway_outbox_bytes", "Size of the readings in the outbox.", registry=r
        )
        self.outbox_oldest_age = Gauge(
            "gateway_outbox_oldest_age_seconds",
            "Age of the oldest reading in the outbox.",
            registry=r,
        )
        self.outbox_degraded = Gauge(
            "gateway_outbox_degraded",
            "1 while the outbox cannot write to disk (memory only).",
            registry=r,
        )
        self.outbox_errors = Counter(
            "gateway_outbox_errors_total",
            "Outbox storage failures, by kind.",
            ["kind"],
            registry=r,
        )
        self.outbox_commits = Counter(
            "gateway_outbox_commits_total", "Outbox transactions committed.", registry=r
        )
        self.publish_latency = Histogram(
            "gateway_publish_latency_seconds",
            "From reading the frame to the broker's acknowledgement.",
            buckets=(
                0.0005,
                0.001,
                0.002,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
                60,
                300,
                3600,
            ),
            registry=r,
        )
        self.commands = Counter(
            "gateway_commands_total",
            "MQTT commands handled, by result.",
            ["device", "result"],
            registry=r,
        )
        self.reloads = Counter(
            "gateway_config_reloads_total", "Config reloads, by result.", ["result"], registry=r
        )

    def set_link_state(self, link: str, state: str) -> None:
        for s in LINK_STATES:
            self.link_state.labels(link, s).set(1 if s == state else 0)
        self.link_up.labels(link).set(1 if state == "up" else 0)
