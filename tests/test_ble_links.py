"""BLE links in process: real bleak and bleak-retry-connector against the fake BlueZ on a private
D-Bus bus (tests/fakebluez.py), run under the real Supervisor."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from bleak.exc import BleakCharacteristicNotFoundError, BleakDBusError, BleakError
from bleak_retry_connector import BleakNotFoundError, BleakOutOfConnectionSlotsError
from dbus_fast import DBusError
from fakebluez import FakeBlueZ, Recovery, close_bleak_manager

from gateway.ble.errors import translate
from gateway.ble.gatt import GattLink
from gateway.ble.hub import BleHub
from gateway.config import Config
from gateway.decoders.ble import uuid16
from gateway.decoders.ble.bthome import encode_bthome
from gateway.errors import FatalLinkError, LinkDownError, TransientLinkError
from gateway.families import FamilyContext
from gateway.families.ble import BLE
from gateway.health import Seen
from gateway.intake import Intake
from gateway.metrics import Metrics
from gateway.models import Reading
from gateway.mqtt.availability import Availability
from gateway.supervisor import Supervisor

pytestmark = pytest.mark.timeout(20)

FAST = {"initial": 0.02, "max": 0.1, "multiplier": 2.0, "reset_after": 1.0}
PVVX_ADDR, ATC_ADDR, BTHOME_ADDR, RUUVI_ADDR = (
    "A4:C1:38:12:34:56",
    "A4:C1:38:65:43:21",
    "54:48:E6:8F:80:A5",
    "CB:B8:33:4C:88:4F",
)
HEART_ADDR, THERMO_ADDR = "AA:BB:CC:DD:EE:01", "AA:BB:CC:DD:EE:02"
ENV = uuid16(0x181A)
BTHOME = uuid16(0xFCD2)
BINDKEY = "231d39c1d7cc1ab1aee224cd096db932"
HR_SVC, HR_MEAS = uuid16(0x180D), uuid16(0x2A37)
BATT_SVC, BATT_LEVEL = uuid16(0x180F), uuid16(0x2A19)
CMD_CHAR = "6e400002-b5a3-f393-e0a9-e50e24dcca9e"
HEART_GATT = {
    HR_SVC: {HR_MEAS: (["notify"], b"\x00\x48"), CMD_CHAR: (["write"], b"")},
    BATT_SVC: {BATT_LEVEL: (["read"], b"\x5a")},
}


def pvvx(temp: float, hum: float, batt: int = 95, mv: int = 2950) -> bytes:
    mac = bytes.fromhex(PVVX_ADDR.replace(":", ""))[::-1]
    return (
        mac
        + round(temp * 100).to_bytes(2, "little", signed=True)
        + round(hum * 100).to_bytes(2, "little")
        + mv.to_bytes(2, "little")
        + bytes([batt, 1, 4])
    )


RUUVI = bytes.fromhex("0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F")
ATC = bytes.fromhex("A4C13865432100D72E5F0B8612")


@pytest_asyncio.fixture
async def bluez(dbus_address: str) -> AsyncIterator[FakeBlueZ]:
    fake = await FakeBlueZ(adv_interval=0.02).start(dbus_address)
    try:
        yield fake
    finally:
        await fake.stop()
        await close_bleak_manager()


MakeBlueZ = Callable[..., Awaitable[FakeBlueZ]]


@pytest_asyncio.fixture
async def make_bluez(dbus_address: str) -> AsyncIterator[MakeBlueZ]:
    """A fake BlueZ with options: `await make_bluez(adapters=("hci0", "hci1"))` (one a test)."""
    fakes: list[FakeBlueZ] = []

    async def make(**options: Any) -> FakeBlueZ:
        fake = await FakeBlueZ(adv_interval=0.02, **options).start(dbus_address)
        fakes.append(fake)
        return fake

    try:
        yield make
    finally:
        for fake in fakes:
            await fake.stop()
        await close_bleak_manager()


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`state_dir: state` (encrypted devices' counters) in the test's own directory."""
    monkeypatch.chdir(tmp_path)


def config(devices: list[dict[str, Any]], **ble: Any) -> Config:
    for d in devices:
        d.setdefault("backoff", FAST)
    return Config.model_validate(
        {
            "gateway": {"id": "gw", "state_dir": "state"},
            "devices": devices,
            "ble": {"backoff": FAST, **ble},
        }
    )


class Readings:
    """What the links submit, with a way to wait for a value."""

    def __init__(self) -> None:
        self.items: list[Reading] = []
        self._changed = asyncio.Event()

    def __call__(self, readings: Sequence[Reading]) -> None:
        self.items.extend(readings)
        self._changed.set()

    def of(self, device: str, sensor: str) -> list[Reading]:
        return [r for r in self.items if r.device == device and r.sensor == sensor]

    async def wait(self, check: Callable[[], bool], within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while not check():
                self._changed.clear()
                await self._changed.wait()

    async def wait_value(self, device: str, sensor: str, value: object) -> Reading:
        await self.wait(lambda: any(r.value == value for r in self.of(device, sensor)))
        return next(r for r in self.of(device, sensor) if r.value == value)


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    """Poll state that has no event to wait on (the fake's, the supervisor's)."""
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


class Running:
    """The gateway's BLE part as the gateway wires it: the BLE family's links (a hub, scanner
    links, device links) under a Supervisor, their readings through the real intake (each
    device's sensor streams: republish_after holds back unchanged values)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.readings = Readings()
        self.fatal: list[str] = []
        self.sup = Supervisor(self.metrics)
        # The next stage is this object: it collects instead of encoding.
        self.intake = Intake(self.metrics, Availability(), Seen(), self)
        self.families = FamilyContext(
            self.intake.submit,
            self.metrics,
            submit_unknown=self.intake.submit_unknown,
            request_exit=lambda why, code: self.fatal.append(why),
        )

    @property
    def hub(self) -> BleHub:
        return BLE.hub(self.cfg, self.families)

    async def __aenter__(self) -> Running:
        await self.sup.__aenter__()
        for device in self.cfg.devices:
            self.intake.add_device(device)
        for link in BLE.links(self.cfg, list(BLE.link_specs(self.cfg)), self.families):
            self.sup.start(link)
        return self

    def publish(self, readings: Sequence[Reading]) -> None:
        self.readings(readings)

    def publish_unknown(self, readings: Sequence[Reading]) -> int:
        self.readings(readings)
        return 0

    def forget(self, device: str) -> None:
        pass

    async def __aexit__(self, *exc: object) -> None:
        await self.sup.__aexit__(None, None, None)

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def state(self, link: str) -> str | None:
        status = self.sup.status.get(link)
        return None if status is None else status.state


async def test_adverts_of_several_formats_become_readings(bluez: FakeBlueZ) -> None:
    key = bytes.fromhex(BINDKEY)
    bluez.add_device(PVVX_ADDR, "ATC_123456", service_data={ENV: pvvx(21.55, 46.2)})
    bluez.add_device(ATC_ADDR, "ATC_654321", service_data={ENV: ATC})
    sealed = encode_bthome(b"\x02\xca\x09\x03\xbf\x13", mac=BTHOME_ADDR, bindkey=key, counter=7)
    bluez.add_device(BTHOME_ADDR, "BTHome", service_data={BTHOME: sealed})
    bluez.add_device(RUUVI_ADDR, "Ruuvi 884F", manufacturer_data={0x0499: RUUVI})
    bluez.add_device("11:22:33:44:55:66", "passer-by", service_data={ENV: pvvx(30, 30)})
    cfg = config(
        [
            {"id": "kitchen", "type": "ble_advert", "address": PVVX_ADDR, "decoder": "pvvx"},
            {"id": "hall", "type": "ble_advert", "name": "ATC_6543*", "decoder": "atc"},
            {
                "id": "bath",
                "type": "ble_advert",
                "address": BTHOME_ADDR,
                "decoder": "bthome",
                "bindkey": BINDKEY,
            },
            {
                "id": "garden",
                "type": "ble_advert",
                "address": RUUVI_ADDR,
                "decoder": "ruuvi",
                "rssi": True,
            },
        ]
    )
    async with Running(cfg) as gw:
        r = gw.readings
        temp = await r.wait_value("kitchen", "temperature", 21.55)
        assert temp.unit == "°C"
        await r.wait_value("kitchen", "humidity", 46.2)
        await r.wait_value("hall", "temperature", 21.5)
        await r.wait_value("bath", "temperature", 25.06)
        await r.wait_value("bath", "humidity", 50.55)
        await r.wait_value("garden", "pressure", 1000.44)
        await r.wait(lambda: bool(r.of("garden", "signal_strength")))
        assert gw.state("ble_scanner:hci0") == "up"
        assert gw.state("ble_advert:kitchen") == "up"
        # Unchanged values are not republished within republish_after (60 s by default).
        await until(
            lambda: gw.metric("gateway_ble_readings_suppressed_total", device="kitchen") > 10
        )
        assert len(r.of("kitchen", "temperature")) == 1
        # A change is published at once; only the changed sensor.
        bluez.devices[0].advertise(service_data={ENV: pvvx(21.9, 46.2)})
        await r.wait_value("kitchen", "temperature", 21.9)
        assert len(r.of("kitchen", "humidity")) == 1
        # The passer-by is not configured: ignored.
        assert {x.device for x in r.items} == {"kitchen", "hall", "bath", "garden"}


def heart_device(**extra: Any) -> dict[str, Any]:
    return {
        "id": "heart",
        "type": "ble_gatt",
        "address": HEART_ADDR,
        "notify": [{"characteristic": "2a37", "format": "heart_rate"}],
        "poll": [{"characteristic": "2a19", "format": "battery", "interval": 0.1}],
        "commands": {
            "led": {"characteristic": CMD_CHAR, "payload": "text"},
            "reset": {"characteristic": CMD_CHAR, "value": "ff00", "response": False},
        },
        **extra,
    }


async def test_gatt_notify_poll_command_and_reconnect_after_a_drop(bluez: FakeBlueZ) -> None:
    heart = bluez.add_device(HEART_ADDR, "HRM", HEART_GATT)
    async with Running(config([heart_device()])) as gw:
        link = gw.sup.link("ble_gatt:heart")
        assert isinstance(link, GattLink)
        await asyncio.wait_for(link.wait_up(), 5)
        assert link.is_up
        await gw.readings.wait_value("heart", "battery", 90)  # poll-read
        heart.chars[HR_MEAS].notify(b"\x16\x4b\x00\x04")  # contact, 75 bpm, RR 1.0 s
        bpm = await gw.readings.wait_value("heart", "heart_rate", 75)
        assert bpm.unit == "bpm"
        assert gw.readings.of("heart", "sensor_contact")[-1].value is True
        assert gw.readings.of("heart", "rr_interval")[-1].value == 1.0

        await link.execute("led", b"on")
        await link.execute("reset", b"ignored")
        assert heart.chars[CMD_CHAR].writes == [(b"on", "request"), (b"\xff\x00", "command")]
        with pytest.raises(ValueError, match="unknown command"):
            await link.execute("nope", b"")

        heart.drop()  # link loss: the link goes down and the supervisor reconnects
        await until(
            lambda: (
                gw.metric("gateway_link_failures_total", link="ble_gatt:heart", kind="disconnected")
                == 1
            )
        )
        with pytest.raises(LinkDownError):
            await link.execute("led", b"off")
        await until(lambda: heart.connect_count == 2 and link.is_up)
        heart.chars[HR_MEAS].notify(b"\x00\x50")
        await gw.readings.wait_value("heart", "heart_rate", 80)
    # Stopping disconnects (Disconnect called, not just dropped) and frees the slot.
    assert heart.disconnect_calls == 1
    assert not heart.p["Connected"]
    assert gw.metric("gateway_ble_connection_slots_in_use", adapter="hci0") == 0


async def test_transient_connect_errors_are_retried_and_counted(bluez: FakeBlueZ) -> None:
    heart = bluez.add_device(HEART_ADDR, "HRM", HEART_GATT)
    heart.connect_errors = [
        ("org.bluez.Error.Failed", "le-connection-abort-by-local"),
        ("org.bluez.Error.InProgress", "Operation already in progress"),
    ] + 3 * [("org.bluez.Error.Failed", "le-connection-abort-by-local")]
    async with Running(config([heart_device(connect_attempts=2)])) as gw:
        await until(lambda: gw.state("ble_gatt:heart") == "up", within=10)
        attempts = gw.metric("gateway_ble_connect_attempts_total", device="heart")
        retries = gw.metric("gateway_ble_connect_retries_total", device="heart")
        failures = gw.sup.status["ble_gatt:heart"].failures
    # bleak retries le-connection-abort-by-local itself within one attempt; whatever the split,
    # every error was consumed, the device is connected once, and each attempt after the first
    # of a connect is counted as a retry.
    assert not heart.connect_errors
    assert heart.connect_count == 1
    assert attempts >= 2
    assert retries == attempts - (failures + 1)
    assert gw.metric("gateway_link_retries_total", link="ble_gatt:heart") == failures


async def test_a_device_never_heard_is_not_found_with_advice(bluez: FakeBlueZ) -> None:
    cfg = config([heart_device(find_timeout=0.2)])
    async with Running(cfg) as gw:
        await until(lambda: gw.sup.status["ble_gatt:heart"].failures >= 2)
        error = gw.sup.status["ble_gatt:heart"].last_error or ""
    assert "not heard by the scanner" in error
    assert "gateway scan" in error


async def test_connection_slots_limit_simultaneous_connections(bluez: FakeBlueZ) -> None:
    bluez.add_device(HEART_ADDR, "HRM", HEART_GATT)
    bluez.add_device(THERMO_ADDR, "HRM2", HEART_GATT)
    second = heart_device(id="heart2", address=THERMO_ADDR)
    async with Running(config([heart_device(), second], max_connections=1)) as gw:
        await until(lambda: "up" in (gw.state("ble_gatt:heart"), gw.state("ble_gatt:heart2")))
        await until(lambda: gw.metric("gateway_ble_connection_slot_waiters", adapter="hci0") == 1)
        first = "ble_gatt:heart" if gw.state("ble_gatt:heart") == "up" else "ble_gatt:heart2"
        waiting = "ble_gatt:heart2" if first == "ble_gatt:heart" else "ble_gatt:heart"
        assert gw.state(waiting) == "starting"  # waiting, not failing
        assert gw.sup.status[waiting].failures == 0
        await gw.sup.stop(first)
        await until(lambda: gw.state(waiting) == "up")
    assert bluez.max_connected == 1


async def test_unknown_devices_are_published_when_asked(bluez: FakeBlueZ) -> None:
    bluez.add_device(RUUVI_ADDR, "Ruuvi", manufacturer_data={0x0499: RUUVI})
    bluez.add_device(PVVX_ADDR, "ATC", service_data={ENV: pvvx(20.0, 50.0)})
    cfg = config([], unknown_devices="publish", allow=["cb:b8:*"])
    async with Running(cfg) as gw:
        await gw.readings.wait_value("ble_cbb8334c884f", "temperature", 24.3)
        await asyncio.sleep(0.2)
    assert {r.device for r in gw.readings.items} == {"ble_cbb8334c884f"}  # allow-list


@pytest.mark.parametrize(
    ("recovers_on", "steps"),
    [
        ("restart", {"restart": 1}),
        ("power_cycle", {"restart": 1, "power_cycle": 1}),
        ("never", {"restart": 1, "power_cycle": 1, "exit": 1}),
    ],
)
async def test_silent_scanner_ladder(
    bluez: FakeBlueZ, recovers_on: Recovery, steps: dict[str, int]
) -> None:
    bluez.add_device(PVVX_ADDR, "ATC", service_data={ENV: pvvx(20.0, 50.0)})
    device = {
        "id": "kitchen",
        "type": "ble_advert",
        "address": PVVX_ADDR,
        "decoder": "pvvx",
        "republish_after": 0,
    }
    cfg = config([device], silence_timeout=0.3, restarts=1, power_cycles=1)
    async with Running(cfg) as gw:
        await gw.readings.wait_value("kitchen", "temperature", 20.0)
        bluez.hci0.go_silent(recovers_on)
        heard = len(gw.readings.items)
        if recovers_on == "never":
            await until(lambda: gw.fatal != [], within=10)
            assert gw.state("ble_scanner:hci0") == "failed"
        else:
            await until(lambda: len(gw.readings.items) > heard + 4, within=10)
            assert gw.state("ble_scanner:hci0") == "up"
    for step in ("restart", "power_cycle", "exit"):
        expected = steps.get(step, 0)
        assert gw.metric("gateway_ble_scanner_recoveries_total", adapter="hci0", step=step) == (
            expected
        ), step
    assert bluez.hci0.power_log == ([False, True] if "power_cycle" in steps else [])
    assert gw.metric("gateway_link_failures_total", link="ble_scanner:hci0", kind="silent") == (
        sum(steps.values())
    )


@pytest.mark.parametrize(
    ("exc", "kind", "fatal"),
    [
        (BleakDBusError("org.bluez.Error.InProgress", ["Operation already in progress"]),
         "in_progress", False),
        (BleakDBusError("org.bluez.Error.Failed", ["le-connection-abort-by-local"]),
         "aborted", False),
        (BleakDBusError("org.bluez.Error.NotReady", ["Resource Not Ready"]), "adapter_off", False),
        (DBusError("org.freedesktop.DBus.Error.ServiceUnknown", "no org.bluez"), "dbus", False),
        (BleakOutOfConnectionSlotsError("out of slots"), "no_slots", False),
        (BleakNotFoundError("gone"), "not_found", False),
        (BleakCharacteristicNotFoundError("2a37"), "config", True),
        (EOFError(), "dbus", False),
        (TimeoutError(), "timeout", False),
        (BleakError("something else"), "ble", False),
    ],
)  # fmt: skip
def test_foreign_errors_are_translated_with_kind_and_advice(
    exc: BaseException, kind: str, fatal: bool
) -> None:
    error = translate(exc, "ble_gatt:heart: connecting")
    assert error.kind == kind
    assert isinstance(error, FatalLinkError if fatal else TransientLinkError)
    assert str(error).startswith("ble_gatt:heart: connecting: ")


def socket_fds() -> set[str]:
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # closed meanwhile (listdir's own fd, for one)
            continue
        if target.startswith("socket:"):
            found.add(target)
    return found


async def test_links_leave_no_d_bus_connection_behind(bluez: FakeBlueZ) -> None:
    bluez.add_device(HEART_ADDR, "HRM", HEART_GATT)
    bluez.add_device(PVVX_ADDR, "ATC", service_data={ENV: pvvx(20.0, 50.0)})
    before = socket_fds()
    device = {"id": "kitchen", "type": "ble_advert", "address": PVVX_ADDR, "decoder": "pvvx"}
    async with Running(config([heart_device(), device])) as gw:
        await gw.readings.wait_value("kitchen", "temperature", 20.0)
        await until(lambda: gw.state("ble_gatt:heart") == "up")
    await close_bleak_manager()
    assert socket_fds() <= before


# -- passive scanning ------------------------------------------------------------------------


def advert_device(device_id: str, address: str, decoder: str, **extra: Any) -> dict[str, Any]:
    return {"id": device_id, "type": "ble_advert", "address": address, "decoder": decoder,
            **extra}  # fmt: skip


async def test_passive_scanning_hears_only_devices_that_match_the_patterns(
    make_bluez: MakeBlueZ,
) -> None:
    bluez = await make_bluez()
    kitchen = bluez.add_device(PVVX_ADDR, "ATC_123456", service_data={ENV: pvvx(21.55, 46.2)})
    garden = bluez.add_device(RUUVI_ADDR, "Ruuvi 884F", manufacturer_data={0x0499: RUUVI})
    beacon = bluez.add_device("C0:FF:EE:00:00:01", "nRF", manufacturer_data={0x0059: b"\x01"})
    # A BTHome sensor nobody configured: no pattern matches it, so BlueZ never reports it.
    bath = bluez.add_device(BTHOME_ADDR, "BTHome", service_data={BTHOME: b"\x40\x02\xca\x09"})
    devices = [advert_device("kitchen", PVVX_ADDR, "pvvx"), advert_device("garden", RUUVI_ADDR,
               "ruuvi")]  # fmt: skip
    extra = [{"ad_type": 0xFF, "data": "5900"}]  # Nordic's company id, as sent
    async with Running(config(devices, scanning_mode="passive", passive_patterns=extra)) as gw:
        await gw.readings.wait_value("kitchen", "temperature", 21.55)
        await gw.readings.wait_value("garden", "pressure", 1000.44)
        [monitor] = bluez.monitors()
        await until(lambda: f"DeviceFound {beacon.path}" in monitor.calls)
        await asyncio.sleep(0.2)  # ten more advertising rounds
        assert monitor.patterns == [(0, 0x16, b"\x1a\x18"), (0, 0xFF, b"\x99\x04"),
                                    (0, 0xFF, b"\x59\x00")]  # fmt: skip
        assert monitor.calls[0] == "Activate"
        found = {call.split()[1] for call in monitor.calls if call.startswith("DeviceFound")}
        assert found == {kitchen.path, garden.path, beacon.path}
        assert not bath.exported  # never heard
        assert not bluez.hci0.sessions  # no active discovery
        assert not bluez.hci0.p["Discovering"]
        assert gw.metric("gateway_ble_scanner_passive", adapter="hci0") == 1
        assert gw.state("ble_scanner:hci0") == "up"
    assert bluez.monitors() == []  # unregistered on stop
    assert gw.metric("gateway_ble_scanner_passive", adapter="hci0") == 0


@pytest.mark.parametrize(
    ("support", "reason", "why"),
    [
        ("absent", "no_monitor_api", "offers no advertisement monitor"),  # experimental off
        ("not_supported", "not_supported", "org.bluez.Error.NotSupported"),
    ],
)
async def test_passive_scanning_falls_back_to_active_where_bluez_cannot(
    make_bluez: MakeBlueZ,
    caplog: pytest.LogCaptureFixture,
    support: str,
    reason: str,
    why: str,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.ble.scanner")
    bluez = await make_bluez(monitors=support)
    bluez.add_device(PVVX_ADDR, "ATC", service_data={ENV: pvvx(20.0, 50.0)})
    device = advert_device("kitchen", PVVX_ADDR, "pvvx", republish_after=0)
    cfg = config([device], scanning_mode="passive", silence_timeout=0.3, restarts=5)
    async with Running(cfg) as gw:
        await gw.readings.wait_value("kitchen", "temperature", 20.0)
        assert gw.state("ble_scanner:hci0") == "up"
        assert gw.sup.status["ble_scanner:hci0"].failures == 0  # no crash loop
        assert bluez.hci0.sessions  # scanning actively instead
        assert gw.metric("gateway_ble_scanner_passive", adapter="hci0") == 0
        # A restart of the scanner (here: the silent-scanner ladder) tries passive again.
        bluez.hci0.go_silent("restart")
        await until(lambda: gw.metric("gateway_ble_scanner_recoveries_total", adapter="hci0",
                                      step="restart") == 1)  # fmt: skip
        heard = len(gw.readings.items)
        await gw.readings.wait(lambda: len(gw.readings.items) > heard)
    fallbacks = gw.metric("gateway_ble_passive_fallbacks_total", adapter="hci0", reason=reason)
    assert fallbacks == 2
    assert bluez.monitors() == []
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if "passive" in r.getMessage()]
    assert [level for level, _ in messages] == [logging.WARNING, logging.INFO]  # warned once
    warning = messages[0][1]
    assert why in warning
    assert "scanning actively instead" in warning
    assert "bluetoothd --experimental" in warning


async def test_passive_scanning_with_nothing_to_match_scans_actively(
    make_bluez: MakeBlueZ,
) -> None:
    bluez = await make_bluez()
    heart = bluez.add_device(HEART_ADDR, "HRM", HEART_GATT)
    async with Running(config([heart_device()], scanning_mode="passive")) as gw:
        await until(lambda: gw.state("ble_gatt:heart") == "up")
        heart.chars[HR_MEAS].notify(b"\x00\x4b")
        await gw.readings.wait_value("heart", "heart_rate", 75)
    assert (
        gw.metric("gateway_ble_passive_fallbacks_total", adapter="hci0", reason="no_patterns") == 1
    )


# -- more than one adapter -------------------------------------------------------------------


async def test_devices_on_a_second_adapter_are_heard_and_connected_through_it(
    make_bluez: MakeBlueZ,
) -> None:
    bluez = await make_bluez(adapters=("hci0", "hci1"))
    bluez.add_device(PVVX_ADDR, "ATC_123456", service_data={ENV: pvvx(20.0, 50.0)})
    bluez.add_device(ATC_ADDR, "ATC_654321", service_data={ENV: ATC}, adapter="hci1")
    heart = bluez.add_device(HEART_ADDR, "HRM", HEART_GATT, adapter="hci1")
    devices = [
        advert_device("kitchen", PVVX_ADDR, "pvvx"),  # ble.adapter: hci0
        advert_device("hall", ATC_ADDR, "atc", adapter="hci1"),
        heart_device(adapter="hci1"),
    ]
    async with Running(config(devices)) as gw:
        await gw.readings.wait_value("hall", "temperature", 21.5)
        await gw.readings.wait_value("kitchen", "temperature", 20.0)
        await until(lambda: gw.state("ble_gatt:heart") == "up")
        heart.chars[HR_MEAS].notify(b"\x00\x4b")
        await gw.readings.wait_value("heart", "heart_rate", 75)
        assert gw.state("ble_scanner:hci0") == gw.state("ble_scanner:hci1") == "up"
        assert bluez.hci0.sessions
        assert bluez.adapters["hci1"].sessions  # a discovery session on each adapter
        assert gw.metric("gateway_ble_adverts_total", adapter="hci1") > 0
        assert gw.metric("gateway_ble_connection_slots_in_use", adapter="hci1") == 1
        assert gw.metric("gateway_ble_connection_slots_in_use", adapter="hci0") == 0
        assert heart.connect_count == 1


async def test_one_adapter_can_scan_passively_beside_an_active_one(
    make_bluez: MakeBlueZ,
) -> None:
    bluez = await make_bluez(adapters=("hci0", "hci1"))
    bluez.add_device(PVVX_ADDR, "ATC_123456", service_data={ENV: pvvx(20.0, 50.0)})
    heart = bluez.add_device(HEART_ADDR, "HRM", HEART_GATT, adapter="hci1")
    # A GATT device has no decoder to derive a pattern from: match the Heart Rate service
    # (0x180D) in its list of advertised 16-bit service UUIDs (AD type 0x03).
    hci1 = {"scanning_mode": "passive", "passive_patterns": [{"ad_type": 3, "data": "0d18"}]}
    devices = [advert_device("kitchen", PVVX_ADDR, "pvvx"), heart_device(adapter="hci1")]
    async with Running(config(devices, adapters={"hci1": hci1})) as gw:
        await gw.readings.wait_value("kitchen", "temperature", 20.0)
        await until(lambda: gw.state("ble_gatt:heart") == "up")
        [monitor] = bluez.monitors("hci1")
        assert monitor.patterns == [(0, 3, b"\x0d\x18")]
        assert f"DeviceFound {heart.path}" in monitor.calls
        assert bluez.monitors("hci0") == []
        assert bluez.hci0.sessions
        assert not bluez.adapters["hci1"].sessions
        assert gw.metric("gateway_ble_scanner_passive", adapter="hci1") == 1
        assert gw.metric("gateway_ble_scanner_passive", adapter="hci0") == 0


# -- BTHome events, repeats and replays ------------------------------------------------------


async def test_button_events_are_published_once_per_packet(bluez: FakeBlueZ) -> None:
    def packet(packet_id: int, event: int) -> dict[str, bytes]:
        objects = bytes([0x00, packet_id, 0x01, 100, 0x3A, event])  # id, battery, button
        return {BTHOME: encode_bthome(objects, trigger_based=True)}

    remote = bluez.add_device(BTHOME_ADDR, "SBBT-002C", service_data=packet(1, 0x01))
    async with Running(config([advert_device("remote", BTHOME_ADDR, "bthome")])) as gw:
        r = gw.readings
        await r.wait_value("remote", "button", "press")
        # The fake sends the same packet every 20 ms, as a button repeats its advertisement.
        await until(lambda: gw.metric("gateway_ble_adverts_dropped_total", device="remote",
                                      reason="repeat") >= 10)  # fmt: skip
        assert len(r.of("remote", "button")) == 1
        remote.advertise(service_data=packet(2, 0x01))  # pressed again: the same event
        await r.wait(lambda: len(r.of("remote", "button")) == 2)
        remote.advertise(service_data=packet(3, 0x02))
        await r.wait_value("remote", "button", "double_press")
        await asyncio.sleep(0.2)
    assert [x.value for x in r.of("remote", "button")] == ["press", "press", "double_press"]
    assert len(r.of("remote", "battery")) == 1  # values are still throttled


async def test_encrypted_adverts_with_an_old_counter_are_dropped_as_replays(
    bluez: FakeBlueZ, caplog: pytest.LogCaptureFixture
) -> None:
    key = bytes.fromhex(BINDKEY)

    def sealed(temperature: float, counter: int) -> dict[str, bytes]:
        objects = b"\x02" + round(temperature * 100).to_bytes(2, "little", signed=True)
        return {BTHOME: encode_bthome(objects, mac=BTHOME_ADDR, bindkey=key, counter=counter)}

    bath = bluez.add_device(BTHOME_ADDR, "BTHome", service_data=sealed(20.0, 100))
    device = advert_device("bath", BTHOME_ADDR, "bthome", bindkey=BINDKEY)
    async with Running(config([device])) as gw:
        r = gw.readings
        await r.wait_value("bath", "temperature", 20.0)
        bath.advertise(service_data=sealed(21.0, 101))
        await r.wait_value("bath", "temperature", 21.0)

        def dropped(reason: str) -> float:
            return gw.metric("gateway_ble_adverts_dropped_total", device="bath", reason=reason)

        bath.advertise(service_data=sealed(20.0, 100))  # someone replays a recorded advert
        await until(lambda: dropped("replay") >= 5)
        # ... or forges a plaintext one in the name of the device
        bath.advertise(service_data={BTHOME: encode_bthome(b"\x02\xd0\x07")})
        await until(lambda: dropped("unencrypted") >= 5)
        bath.advertise(service_data=sealed(22.0, 102))  # the device itself again
        await r.wait_value("bath", "temperature", 22.0)
    assert [x.value for x in r.of("bath", "temperature")] == [20.0, 21.0, 22.0]
    warnings = [x.getMessage() for x in caplog.records if x.levelno == logging.WARNING]
    assert len([w for w in warnings if "counter 100, below the last accepted 101" in w]) == 1
    assert len([w for w in warnings if "dropped an unencrypted BTHome" in w]) == 1
