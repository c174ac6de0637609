"""Every Prometheus metric of the gateway, defined in one place.

A `Metrics` object owns its own registry so that tests (and a reload) never fight over the
process-global default registry. Names follow Prometheus conventions: `_total` counters, base
units (seconds, bytes), labels with bounded cardinality (link, device, kind, reason).
"""

from __future__ import annotations

import bisect
import contextlib
import platform
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    ProcessCollector,
)
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from gateway import __version__

LINK_STATES = ("starting", "up", "backing_off", "stopped", "failed")

#: Per device, a count by kind (reason, filter): {device: {kind: n}}.
ByDevice = dict[str, dict[str, int]]


@dataclass(frozen=True, slots=True)
class DeviceCounts:
    """What the counters say of each device, for `/status`: decode errors by reason (framing,
    decoding and Modbus registers together), values filters did not pass on, by filter."""

    decode_errors: ByDevice
    filter_dropped: ByDevice


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
        # -- serial polling (issue 4) --
        self.polls = Counter(
            "gateway_polls_total", "Queries written to polled devices.", ["device"], registry=r
        )
        self.polls_missed = Counter(
            "gateway_polls_missed_total",
            "Queries that got no response within the poll timeout.",
            ["device"],
            registry=r,
        )
        # -- Modbus RTU (issue 13) --
        self.modbus_requests = Counter(
            "gateway_modbus_requests_total",
            "Modbus requests sent (each retry counts), by device and function.",
            ["device", "function"],
            registry=r,
        )
        self.modbus_errors = Counter(
            "gateway_modbus_errors_total",
            "Modbus registers not read: timeout, an exception answer (illegal_address, ...), "
            "decode.",
            ["device", "register", "reason"],
            registry=r,
        )
        self._modbus_connections(r)
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
        self.publish_latency = LoopHistogram(
            "gateway_publish_latency_seconds",
            "From reading the frame to the broker's acknowledgement.",
            (
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
            r,
        )
        self.commands = Counter(
            "gateway_commands_total",
            "MQTT commands handled, by result.",
            ["device", "result"],
            registry=r,
        )
        self.refused = Counter(
            "gateway_input_refused_total",
            "Input from outside refused at an edge (an MQTT command, an HTTP client, a config "
            "file, a device's bytes, an advertiser), by edge and reason. Reasons are fixed "
            "words of the gateway's, never text from the input.",
            ["edge", "reason"],
            registry=r,
        )
        self.filter_dropped = Counter(
            "gateway_filter_dropped_total",
            "Values a sensor stream's filter did not pass on (dropped, or held by a window), "
            "by device, sensor and filter.",
            ["device", "sensor", "filter"],
            registry=r,
        )
        self.discovery = Counter(
            "gateway_discovery_messages_total",
            "Home Assistant discovery messages published: config, clear (a removed config), "
            "state (the last values again: after Home Assistant restarted, or after a new or "
            "changed config).",
            ["kind"],
            registry=r,
        )
        # -- Bluetooth LE (issue 5) --
        self.ble_adverts = Counter(
            "gateway_ble_adverts_total",
            "Advertisements heard, by adapter.",
            ["adapter"],
            registry=r,
        )
        self.ble_suppressed = Counter(
            "gateway_ble_readings_suppressed_total",
            "Unchanged advertised values not republished (within republish_after).",
            ["device"],
            registry=r,
        )
        self.ble_recoveries = Counter(
            "gateway_ble_scanner_recoveries_total",
            "Silent-scanner ladder steps taken: restart, power_cycle, exit.",
            ["adapter", "step"],
            registry=r,
        )
        self.ble_connect_attempts = Counter(
            "gateway_ble_connect_attempts_total",
            "GATT connection attempts (bleak-retry-connector's retries included).",
            ["device"],
            registry=r,
        )
        self.ble_connect_retries = Counter(
            "gateway_ble_connect_retries_total",
            "GATT connection attempts after the first one of a connect.",
            ["device"],
            registry=r,
        )
        self.ble_slots_in_use = Gauge(
            "gateway_ble_connection_slots_in_use",
            "GATT connections holding a slot, by adapter.",
            ["adapter"],
            registry=r,
        )
        self.ble_slot_waiters = Gauge(
            "gateway_ble_connection_slot_waiters",
            "GATT links waiting for a free connection slot, by adapter.",
            ["adapter"],
            registry=r,
        )
        self.ble_adverts_dropped = Counter(
            "gateway_ble_adverts_dropped_total",
            "Advertisements dropped before they became readings: repeat (a packet already "
            "handled), replay (an encrypted counter below the last accepted), unencrypted "
            "(plain BTHome from a device with a bindkey).",
            ["device", "reason"],
            registry=r,
        )
        self.ble_scanner_passive = Gauge(
            "gateway_ble_scanner_passive",
            "1 while the adapter's scanner scans passively, 0 while it scans actively.",
            ["adapter"],
            registry=r,
        )
        self.ble_passive_fallbacks = Counter(
            "gateway_ble_passive_fallbacks_total",
            "Scanner starts that fell back from passive to active scanning, by reason.",
            ["adapter", "reason"],
            registry=r,
        )
        self.ble_parser_errors = Counter(
            "gateway_ble_parser_errors_total",
            "Calls into a BLE parser library (the ble-parsers extra) that raised on an "
            "advertisement, by parser: contained, the advertisement is not read by it.",
            ["parser"],
            registry=r,
        )
        # -- end of Bluetooth LE --
        self.mqtt_connected = Gauge(
            "gateway_mqtt_connected",
            "1 for the broker of mqtt.servers the gateway is connected to, 0 for the others.",
            ["server"],
            registry=r,
        )
        self.mqtt_takeovers = Counter(
            "gateway_mqtt_takeovers_total",
            "Connection losses judged to be another client taking over our client id (MQTT 5 "
            "reason 0x8E, or repeated losses soon after connecting).",
            registry=r,
        )
        self.reloads = Counter(
            "gateway_config_reloads_total", "Config reloads, by result.", ["result"], registry=r
        )
        self.last_reading = Gauge(
            "gateway_last_reading_timestamp_seconds",
            "When the latest reading of each device was read (epoch seconds).",
            ["device"],
            registry=r,
        )
        self.sensor_value = Gauge(
            "gateway_sensor_value",
            "Latest value of each numeric sensor (only with metrics.sensor_values: true).",
            ["device", "sensor", "unit"],
            registry=r,
        )
        self.loop_lag = Gauge(
            "gateway_event_loop_lag_seconds",
            "How late the event loop ran the latest periodic check (a busy or blocked loop).",
            registry=r,
        )
        self.watchdog_pings = Counter(
            "gateway_watchdog_pings_total",
            "WATCHDOG=1 keep-alives sent to systemd.",
            registry=r,
        )
        self.watchdog_withheld = Counter(
            "gateway_watchdog_withheld_total",
            "Keep-alives withheld because the supervisor made no progress, by reason.",
            ["reason"],
            registry=r,
        )
        # process_* (CPU, memory, open fds, start time) from /proc, as Prometheus expects them.
        ProcessCollector(registry=r)

    def set_link_state(self, link: str, state: str) -> None:
        for s in LINK_STATES:
            self.link_state.labels(link, s).set(1 if s == state else 0)
        self.link_up.labels(link).set(1 if state == "up" else 0)

    def _modbus_connections(self, r: CollectorRegistry) -> None:
        """Modbus ports and network connections (issue 24), by connection: the port, or
        transport://host:port."""
        self.modbus_connection_up = Gauge(
            "gateway_modbus_connection_up",
            "1 while a Modbus port or network connection is open, by connection (the port, or "
            "transport://host:port).",
            ["connection"],
            registry=r,
        )
        self.modbus_connection_devices = Gauge(
            "gateway_modbus_connection_devices",
            "Modbus devices attached to a port or network connection.",
            ["connection"],
            registry=r,
        )
        self.modbus_connects = Counter(
            "gateway_modbus_connects_total",
            "Opens of a Modbus port or network connection.",
            ["connection"],
            registry=r,
        )
        self.modbus_connection_drops = Counter(
            "gateway_modbus_connection_drops_total",
            "Network connections dropped by the gateway because nothing answered on them any "
            "more (a half-open socket).",
            ["connection"],
            registry=r,
        )

    def forget_device(self, device: str) -> None:
        """Remove a device's latest-value series (it left the config): no stale values."""
        with contextlib.suppress(KeyError):
            self.last_reading.remove(device)
        sensor_value = _label_sets(self.sensor_value, ("device", "sensor", "unit"))
        for labels in [k for k in sensor_value if k[0] == device]:
            self.sensor_value.remove(*labels)
        filter_dropped = _label_sets(self.filter_dropped, ("device", "sensor", "filter"))
        for labels in [k for k in filter_dropped if k[0] == device]:
            self.filter_dropped.remove(*labels)

    def device_counts(self) -> DeviceCounts:
        """This object's own report of its per-device counters (one pass over each): the
        counters are the one tally, read back through their public `collect()`."""
        decode = _by_device(self.frame_errors, "reason")
        for device, by in _by_device(self.modbus_errors, "reason").items():
            mine = decode.setdefault(device, {})
            for reason, n in by.items():
                mine[reason] = mine.get(reason, 0) + n
        return DeviceCounts(decode, _by_device(self.filter_dropped, "filter"))


class LoopHistogram(Collector):
    """A histogram written only from the event loop's thread, for values observed thousands of
    times a second (publish latency): one bisect per value, no lock, no object per sample.
    prometheus_client's Histogram takes a lock and walks its buckets for every value. Scrapes
    run on the same loop (the HTTP endpoint), so reads never race the writes."""

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation = name, documentation
        self._bounds = sorted(float(b) for b in buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        registry.register(self)

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value

    def collect(self) -> Iterator[HistogramMetricFamily]:
        cumulative, total = [], 0
        for bound, count in zip([*self._bounds, float("inf")], self._counts, strict=True):
            total += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), total))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=cumulative, sum_value=self._sum
        )


def _label_sets(gauge: Gauge | Counter, names: Sequence[str]) -> list[tuple[str, ...]]:
    """The label values (in the order of `names`, the metric's label names as defined above)
    of every series of a labelled gauge or counter (a counter has two samples per series:
    _total and _created)."""
    sets = (
        tuple(sample.labels[name] for name in names)
        for metric in gauge.collect()
        for sample in metric.samples
    )
    return list(dict.fromkeys(sets))


def _by_device(counter: Counter, kind: str) -> ByDevice:
    out: ByDevice = {}
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.value:
                by = out.setdefault(sample.labels["device"], {})
                key = sample.labels[kind]
                by[key] = by.get(key, 0) + int(sample.value)
    return out
