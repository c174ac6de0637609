# ruff: noqa: N802 - D-Bus method and property names are CamelCase by specification
"""A fake BlueZ (`org.bluez` on a private D-Bus bus) that drives the real bleak and
bleak-retry-connector, extended from shared/reference/fake-bluez.

What it plays: adapters (`hci0`, ...) with a writable `Powered`, discovery sessions (one per
D-Bus client, like BlueZ), several devices whose advertisements carry manufacturer and service
data (BTHome, pvvx, ATC, Ruuvi, ...), connections with a GATT database, notifications, reads and
writes, connect failures, devices that drop, and an adapter that goes silent: it keeps
"discovering" but nothing is heard until the scan is restarted, or until the adapter is
powered off and on, or never.

Passive scanning: each adapter has `org.bluez.AdvertisementMonitorManager1` (unless built with
`monitors="absent"`, as BlueZ without its experimental features; `"not_supported"` answers
RegisterMonitor with NotSupported). As in BlueZ, RegisterMonitor(app) watches the caller's
ObjectManager at `app` (GetManagedObjects, then InterfacesAdded: bleak exports its monitor
after registering), reads each AdvertisementMonitor1's Type and Patterns, calls Activate, and
calls DeviceFound the first time a device whose advertised data matches a pattern is heard;
only those devices then advertise (Device1 property changes), unless an active discovery runs.

`FakeBlueZ` runs in the caller's event loop (async tests); `ThreadedFakeBlueZ` runs one in a
thread of its own for synchronous end-to-end tests, where the daemon is a subprocess.

No `from __future__ import annotations` here: dbus-fast reads the D-Bus signatures from the
methods' annotations, and takes a postponed `-> None` for a signature.
"""

import asyncio
import concurrent.futures
import contextlib
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from dbus_fast import DBusError, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusSignature
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

T = TypeVar("T")

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>session</type><listen>unix:path={sock}</listen><auth>EXTERNAL</auth>
<policy context="default"><allow send_destination="*" eavesdrop="true"/>
<allow eavesdrop="true"/><allow own="*"/></policy></busconfig>
"""

Dict = Annotated[dict[str, Variant], DBusSignature("a{sv}")]
Bytes = Annotated[bytes, DBusSignature("ay")]
ObjPath = Annotated[str, DBusSignature("o")]
Bool = Annotated[bool, DBusSignature("b")]

# A characteristic: uuid -> (flags, initial value); a GATT database: service uuid -> those.
Gatt = Mapping[str, Mapping[str, tuple[list[str], bytes]]]
Recovery = Literal["restart", "power_cycle", "never"]
MonitorSupport = Literal["supported", "absent", "not_supported"]

MONITOR_IFACE = "org.bluez.AdvertisementMonitor1"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
BASE_UUID = "-0000-1000-8000-00805f9b34fb"
AD_MAX = 31  # bytes of data in an AD structure of a legacy advertisement
ADVERTS_PER_TURN = 20  # devices advertising per event-loop turn of the fake
SEND_BUFFER = 8 << 20  # bytes of the fake's D-Bus socket's send buffer
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)  # root may exceed wmem_max


def start_private_bus(tmpdir: Path) -> tuple[subprocess.Popen[str], str]:
    """dbus-daemon on a unix socket in tmpdir; returns (process, address)."""
    conf, sock = tmpdir / "bus.conf", tmpdir / "bus.sock"
    conf.write_text(BUS_CONF.format(sock=sock))
    proc = subprocess.Popen(
        ["dbus-daemon", f"--config-file={conf}", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # "Failed to set fd limit" when not privileged enough
        text=True,
    )
    assert proc.stdout is not None
    with proc.stdout:  # it prints the address once, then nothing
        address = proc.stdout.readline().strip()
    return proc, address


def prop(sig: str, name: str) -> Any:
    """A read-only D-Bus property backed by self.p[name]."""

    def get(self: "Obj") -> Any:
        return self.p[name]

    get.__name__, get.__annotations__ = name, {"return": sig}
    return dbus_property(access=PropertyAccess.READ)(get)


class Obj(ServiceInterface):
    def __init__(self, iface: str, **props: Any) -> None:
        super().__init__(iface)
        self.p: dict[str, Any] = props

    def set(self, **changed: Any) -> None:
        self.p.update(changed)
        self.emit_properties_changed(changed)


class FakeAdapter(Obj):
    Address, Name, Alias = prop("s", "Address"), prop("s", "Name"), prop("s", "Alias")
    Discovering = prop("b", "Discovering")
    Roles, UUIDs = prop("as", "Roles"), prop("as", "UUIDs")

    def __init__(self, bluez: "FakeBlueZ", name: str, index: int) -> None:
        super().__init__(
            "org.bluez.Adapter1",
            Address=f"00:00:5E:00:53:{index:02X}",
            Name=name,
            Alias=name,
            Powered=True,
            Discovering=False,
            Roles=["central", "peripheral"],
            UUIDs=[],
        )
        # (not `self.name`: ServiceInterface keeps the interface name there)
        self.bluez, self.hci, self.path = bluez, name, f"/org/bluez/{name}"
        self.sessions: set[str] = set()
        self.filters: list[dict[str, Variant]] = []
        self.silent = False  # discovering, but nothing is heard
        self.recovers_on: Recovery = "restart"
        self.power_log: list[bool] = []
        self.starts = 0
        self.monitor_manager: MonitorManager | None = None

    @dbus_property()
    def Powered(self) -> Bool:
        return bool(self.p["Powered"])

    @Powered.setter  # type: ignore[no-redef]
    def Powered(self, value: Bool) -> None:
        self.power_log.append(value)
        if not value:
            self.sessions.clear()
            if self.p["Discovering"]:
                self.set(Discovering=False)
            for dev in self.bluez.devices:
                if dev.adapter is self:
                    dev.drop()
        elif self.recovers_on == "power_cycle":
            self.silent = False
        self.set(Powered=value)

    @dbus_method()
    def SetDiscoveryFilter(self, flt: Dict) -> None:
        self.filters.append(flt)

    @dbus_method()
    def StartDiscovery(self) -> None:
        caller = self.bluez.caller
        if not self.p["Powered"]:
            raise DBusError("org.bluez.Error.NotReady", "Resource Not Ready")
        if caller in self.sessions:  # BlueZ: one discovery session per D-Bus client
            raise DBusError("org.bluez.Error.InProgress", "Operation already in progress")
        self.started()
        self.sessions.add(caller)
        if not self.p["Discovering"]:
            self.set(Discovering=True)

    @dbus_method()
    def StopDiscovery(self) -> None:
        if self.bluez.caller not in self.sessions:
            raise DBusError("org.bluez.Error.Failed", "No discovery started")
        self.sessions.discard(self.bluez.caller)
        if not self.sessions:
            self.set(Discovering=False)

    @dbus_method()
    def RemoveDevice(self, device: ObjPath) -> None:
        dev = next((d for d in self.bluez.devices if d.path == device), None)
        if dev is None:
            raise DBusError("org.bluez.Error.DoesNotExist", "Does Not Exist")
        self.bluez.remove_device(dev)

    def started(self) -> None:
        """A scan (discovery or monitor) started: a silent adapter may recover on it."""
        self.starts += 1
        if self.silent and self.recovers_on == "restart" and self.starts > 1:
            self.silent = False

    def go_silent(self, recovers_on: Recovery) -> None:
        self.silent, self.recovers_on, self.starts = True, recovers_on, 1

    def monitors_for(self, dev: "Device") -> list["Monitor"]:
        """The active monitors whose patterns match what the device advertises."""
        if self.monitor_manager is None:
            return []
        structures = dev.ad_structures()
        return [m for m in self.monitor_manager.monitors() if m.matches(structures)]


@dataclass
class Monitor:
    """An application's AdvertisementMonitor1, as BlueZ keeps it."""

    owner: str
    path: str
    patterns: list[tuple[int, int, bytes]]
    calls: list[str] = field(default_factory=list)  # Activate, DeviceFound <path>, ...
    found: set[str] = field(default_factory=set)

    def matches(self, structures: list[tuple[int, bytes]]) -> bool:
        return any(
            ad_type == pattern_type and data[start : start + len(content)] == content
            for start, pattern_type, content in self.patterns
            for ad_type, data in structures
        )


@dataclass
class MonitorApp:
    owner: str
    root: str
    monitors: dict[str, Monitor] = field(default_factory=dict)
    released: list[str] = field(default_factory=list)  # monitors BlueZ refused (Release)


class MonitorManager(Obj):
    """org.bluez.AdvertisementMonitorManager1 of one adapter."""

    SupportedMonitorTypes = prop("as", "SupportedMonitorTypes")
    SupportedFeatures = prop("as", "SupportedFeatures")

    def __init__(self, adapter: FakeAdapter, support: MonitorSupport) -> None:
        super().__init__(
            "org.bluez.AdvertisementMonitorManager1",
            SupportedMonitorTypes=["or_patterns"],
            SupportedFeatures=[],
        )
        self.adapter, self.bluez, self.support = adapter, adapter.bluez, support
        self.apps: dict[tuple[str, str], MonitorApp] = {}

    def monitors(self) -> list[Monitor]:
        return [m for app in self.apps.values() for m in app.monitors.values()]

    @dbus_method()
    async def RegisterMonitor(self, application: ObjPath) -> None:
        owner = self.bluez.caller  # before any await: it is the caller only while dispatching
        if self.support == "not_supported":
            raise DBusError("org.bluez.Error.NotSupported", "Operation is not supported")
        if (owner, application) in self.apps:
            raise DBusError("org.bluez.Error.AlreadyExists", "Already Exists")
        app = MonitorApp(owner, application)
        self.apps[owner, application] = app
        await self.bluez.watch(owner, application)  # before the reply: the app exports next
        self.adapter.started()
        self.bluez.spawn(self._fetch(app))

    @dbus_method()
    def UnregisterMonitor(self, application: ObjPath) -> None:
        if self.apps.pop((self.bluez.caller, application), None) is None:
            raise DBusError("org.bluez.Error.DoesNotExist", "Does Not Exist")

    async def _fetch(self, app: MonitorApp) -> None:
        reply = await self.bluez.bus.call(
            Message(destination=app.owner, path=app.root, interface=OBJECT_MANAGER,
                    member="GetManagedObjects")
        )  # fmt: skip
        if reply is not None and reply.message_type == MessageType.METHOD_RETURN:
            for path, interfaces in reply.body[0].items():
                self.interfaces_added(app.owner, path, interfaces)

    def interfaces_added(self, owner: str, path: str, interfaces: dict[str, Any]) -> None:
        props = interfaces.get(MONITOR_IFACE)
        if props is None:
            return
        for app in self.apps.values():
            inside = path == app.root or path.startswith(app.root + "/")
            if app.owner == owner and inside and path not in app.monitors:
                self._add(app, path, props)

    def _add(self, app: MonitorApp, path: str, props: dict[str, Variant]) -> None:
        kind = props.get("Type", Variant("s", "")).value
        raw = props.get("Patterns", Variant("a(yyay)", [])).value
        patterns = [(int(start), int(ad_type), bytes(data)) for start, ad_type, data in raw]
        valid = patterns and all(0 < len(data) <= AD_MAX - start for start, _, data in patterns)
        if kind != "or_patterns" or not valid:  # BlueZ refuses the monitor: Release
            app.released.append(path)
            self.bluez.spawn(self.bluez.call_app(app.owner, path, "Release"))
            return
        monitor = Monitor(app.owner, path, patterns)
        app.monitors[path] = monitor
        self.bluez.spawn(self.bluez.call_monitor(monitor, "Activate"))

    def owner_gone(self, owner: str) -> None:
        for key in [k for k in self.apps if k[0] == owner]:
            del self.apps[key]


class Characteristic(Obj):
    UUID, Service, Value = prop("s", "UUID"), prop("o", "Service"), prop("ay", "Value")
    Notifying, Flags, MTU = prop("b", "Notifying"), prop("as", "Flags"), prop("q", "MTU")

    def __init__(self, path: str, service: str, uuid: str, flags: list[str], value: bytes) -> None:
        super().__init__(
            "org.bluez.GattCharacteristic1",
            UUID=uuid,
            Service=service,
            Value=value,
            Notifying=False,
            Flags=flags,
            MTU=247,
        )
        self.path = path
        self.writes: list[tuple[bytes, str]] = []

    @dbus_method()
    def ReadValue(self, options: Dict) -> Bytes:
        return bytes(self.p["Value"])

    @dbus_method()
    def WriteValue(self, value: Bytes, options: Dict) -> None:
        self.writes.append((bytes(value), options.get("type", Variant("s", "")).value))
        self.p["Value"] = value  # BlueZ does not signal Value on write

    @dbus_method()
    def StartNotify(self) -> None:
        if not {"notify", "indicate"} & set(self.p["Flags"]):
            raise DBusError("org.bluez.Error.NotSupported", "Operation is not supported")
        self.set(Notifying=True)

    @dbus_method()
    def StopNotify(self) -> None:
        self.set(Notifying=False)

    def notify(self, value: bytes) -> None:  # the peripheral sends a notification
        if self.p["Notifying"]:
            self.set(Value=value)


class Service(Obj):
    UUID, Primary, Device = prop("s", "UUID"), prop("b", "Primary"), prop("o", "Device")


class Device(Obj):
    Address, AddressType = prop("s", "Address"), prop("s", "AddressType")
    Name, Alias, Adapter = prop("s", "Name"), prop("s", "Alias"), prop("o", "Adapter")
    Connected, ServicesResolved = prop("b", "Connected"), prop("b", "ServicesResolved")
    Paired, Bonded, Trusted = prop("b", "Paired"), prop("b", "Bonded"), prop("b", "Trusted")
    RSSI, TxPower, UUIDs = prop("n", "RSSI"), prop("n", "TxPower"), prop("as", "UUIDs")
    ManufacturerData = prop("a{qv}", "ManufacturerData")
    ServiceData = prop("a{sv}", "ServiceData")

    def __init__(
        self,
        bluez: "FakeBlueZ",
        adapter: FakeAdapter,
        address: str,
        name: str,
        gatt: Gatt,
        manufacturer_data: Mapping[int, bytes] | None = None,
        service_data: Mapping[str, bytes] | None = None,
        rssi: int = -60,
        service_uuids: Sequence[str] = (),
    ) -> None:
        super().__init__(
            "org.bluez.Device1",
            Address=address,
            AddressType="public",
            Name=name,
            Alias=name,
            Adapter=adapter.path,
            Connected=False,
            ServicesResolved=False,
            Paired=False,
            Bonded=False,
            Trusted=False,
            RSSI=rssi,
            TxPower=0,
            UUIDs=list(gatt) + list(service_data or {}) + list(service_uuids),
            ManufacturerData=_variants(manufacturer_data),
            ServiceData=_variants(service_data),
        )
        self.bluez, self.adapter, self.gatt = bluez, adapter, gatt
        self.path = f"{adapter.path}/dev_{address.replace(':', '_')}"
        self.exported = False
        self.chars: dict[str, Characteristic] = {}
        self.gatt_paths: list[str] = []
        self.connect_count = self.disconnect_calls = 0
        # e.g. [("org.bluez.Error.Failed", "le-connection-abort-by-local")]
        self.connect_errors: list[tuple[str, str]] = []
        self.connect_delay = 0.01

    def advertise(
        self,
        manufacturer_data: Mapping[int, bytes] | None = None,
        service_data: Mapping[str, bytes] | None = None,
    ) -> None:
        """New advertisement content (heard on the next advertising round)."""
        if manufacturer_data is not None:
            self.p["ManufacturerData"] = _variants(manufacturer_data)
        if service_data is not None:
            self.p["ServiceData"] = _variants(service_data)
        self.p["fresh"] = True

    def ad_structures(self) -> list[tuple[int, bytes]]:
        """(AD type, data) of what the device advertises, as the radio would carry it."""
        out: list[tuple[int, bytes]] = []
        if self.p["Name"]:
            out.append((0x09, self.p["Name"].encode()))
        for company, value in self.p["ManufacturerData"].items():
            out.append((0xFF, company.to_bytes(2, "little") + bytes(value.value)))
        for uuid, value in self.p["ServiceData"].items():
            out.append(_service_data_structure(uuid, bytes(value.value)))
        short = [u for u in self.p["UUIDs"] if u.startswith("0000") and u.endswith(BASE_UUID)]
        if short:
            out.append((0x03, b"".join(int(u[4:8], 16).to_bytes(2, "little") for u in short)))
        return out

    @dbus_method()
    async def Connect(self) -> None:
        if self.p["Connected"]:
            return
        await asyncio.sleep(self.connect_delay)
        if self.connect_errors:
            name, text = self.connect_errors.pop(0)
            self.set(Connected=True)  # BlueZ toggles Connected before a connection error
            self.set(Connected=False)
            raise DBusError(name, text)
        self.connect_count += 1
        self.set(Connected=True)
        self._export_gatt()
        self.bluez.connected_now += 1
        self.bluez.max_connected = max(self.bluez.max_connected, self.bluez.connected_now)
        asyncio.get_running_loop().call_later(0.01, lambda: self.set(ServicesResolved=True))

    def _export_gatt(self) -> None:
        bus, handle = self.bluez.bus, 0x0A
        for s_uuid, chars in self.gatt.items():
            s_path = f"{self.path}/service{handle:04x}"
            service = Service("org.bluez.GattService1", UUID=s_uuid, Primary=True, Device=self.path)
            bus.export(s_path, service)
            self.gatt_paths.append(s_path)
            for c_uuid, (flags, value) in chars.items():
                handle += 2
                c = Characteristic(f"{s_path}/char{handle:04x}", s_path, c_uuid, flags, value)
                bus.export(c.path, c)
                self.chars[c_uuid] = c
                self.gatt_paths.append(c.path)
            handle += 2

    @dbus_method()
    async def Disconnect(self) -> None:
        self.disconnect_calls += 1
        await asyncio.sleep(0.01)
        self.drop()

    def drop(self) -> None:
        """Link loss, the peripheral went away, or a local disconnect."""
        if not self.p["Connected"]:
            return
        for path in reversed(self.gatt_paths):  # GATT objects vanish (InterfacesRemoved)
            self.bluez.bus.unexport(path)
        self.chars, self.gatt_paths = {}, []
        self.bluez.connected_now -= 1
        self.set(ServicesResolved=False)
        self.set(Connected=False)


def _variants(data: Mapping[Any, bytes] | None) -> dict[Any, Variant]:
    return {k: Variant("ay", bytes(v)) for k, v in (data or {}).items()}


def _service_data_structure(uuid: str, data: bytes) -> tuple[int, bytes]:
    """Service data AD structure: 0x16 (16-bit UUID), 0x20 (32-bit) or 0x21 (128-bit),
    the UUID first, little endian."""
    if uuid.endswith(BASE_UUID) and uuid.startswith("0000"):
        return 0x16, int(uuid[4:8], 16).to_bytes(2, "little") + data
    if uuid.endswith(BASE_UUID):
        return 0x20, int(uuid[:8], 16).to_bytes(4, "little") + data
    return 0x21, bytes.fromhex(uuid.replace("-", ""))[::-1] + data


class FakeBlueZ:
    def __init__(
        self,
        adapters: tuple[str, ...] = ("hci0",),
        adv_interval: float = 0.05,
        monitors: MonitorSupport = "supported",
    ) -> None:
        self.adapter_names = adapters
        self.adv_interval = adv_interval
        self.monitor_support = monitors
        self.devices: list[Device] = []
        self.adapters: dict[str, FakeAdapter] = {}
        self.caller = ""
        self.connected_now = self.max_connected = 0
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[object]] = set()

    async def start(self, address: str) -> "FakeBlueZ":
        self.bus = await MessageBus(bus_address=address).connect()
        # Room for bursts (hundreds of devices advertising at once) while dbus-daemon is slow
        # to read on a busy machine: dbus-fast's writer does not survive a full buffer.
        sock = getattr(self.bus, "_sock", None)
        with contextlib.suppress(OSError):
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SEND_BUFFER)
        self.bus.add_message_handler(self._remember_caller)
        self.bus.add_message_handler(self._on_signal)
        for i, name in enumerate(self.adapter_names):
            adapter = FakeAdapter(self, name, i)
            self.adapters[name] = adapter
            self.bus.export(adapter.path, adapter)
            if self.monitor_support != "absent":
                adapter.monitor_manager = MonitorManager(adapter, self.monitor_support)
                self.bus.export(adapter.path, adapter.monitor_manager)
        await self.bus.request_name("org.bluez")
        self._task = asyncio.create_task(self._advertise_loop(), name="fake-bluez-adverts")
        return self

    def _remember_caller(self, message: Message) -> None:
        # Dispatch of a method call is synchronous: this is its sender while it runs.
        self.caller = message.sender or ""

    # -- talking to monitor applications ------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.get_running_loop().create_task(coro, name="fake-bluez-monitor-call")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def watch(self, owner: str, root: str) -> None:
        """Signals BlueZ needs from a monitor application: its InterfacesAdded, its exit."""
        for rule in (
            f"type='signal',sender='{owner}',interface='{OBJECT_MANAGER}',"
            f"member='InterfacesAdded',path_namespace='{root}'",
            f"type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',arg0='{owner}'",
        ):
            await self.bus.call(
                Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                        interface="org.freedesktop.DBus", member="AddMatch", signature="s",
                        body=[rule])
            )  # fmt: skip

    def _on_signal(self, message: Message) -> None:
        if message.message_type != MessageType.SIGNAL:
            return
        managers = [a.monitor_manager for a in self.adapters.values() if a.monitor_manager]
        if message.member == "InterfacesAdded" and message.interface == OBJECT_MANAGER:
            path, interfaces = message.body
            for manager in managers:
                manager.interfaces_added(message.sender or "", path, interfaces)
        elif message.member == "NameOwnerChanged" and not message.body[2]:
            for manager in managers:
                manager.owner_gone(message.body[0])

    async def call_app(self, owner: str, path: str, member: str, *device: str) -> bool:
        reply = await self.bus.call(
            Message(destination=owner, path=path, interface=MONITOR_IFACE, member=member,
                    signature="o" if device else "", body=list(device))
        )  # fmt: skip
        return reply is not None and reply.message_type == MessageType.METHOD_RETURN

    async def call_monitor(self, monitor: Monitor, member: str, *device: str) -> None:
        if await self.call_app(monitor.owner, monitor.path, member, *device):
            monitor.calls.append(" ".join((member, *device)))

    def monitors(self, adapter: str = "hci0") -> list[Monitor]:
        manager = self.adapters[adapter].monitor_manager
        return [] if manager is None else manager.monitors()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Say goodbye like bluetoothd would (InterfacesRemoved), so that bleak's process-wide
        # BlueZ manager does not keep this fake's objects for the next test.
        for dev in list(self.devices):
            self.remove_device(dev)
        for adapter in self.adapters.values():
            self.bus.unexport(adapter.path)
        self.bus.disconnect()
        await self.bus.wait_for_disconnect()  # type: ignore[no-untyped-call]

    @property
    def hci0(self) -> FakeAdapter:
        return self.adapters["hci0"]

    def add_device(
        self, address: str, name: str, gatt: Gatt | None = None, adapter: str = "hci0", **kw: Any
    ) -> Device:
        dev = Device(self, self.adapters[adapter], address, name, gatt or {}, **kw)
        self.devices.append(dev)
        return dev

    def remove_device(self, dev: Device) -> None:
        """The device disappears (InterfacesRemoved)."""
        for monitor in self.monitors(dev.adapter.hci):
            if dev.path in monitor.found:
                monitor.found.discard(dev.path)
                self.spawn(self.call_monitor(monitor, "DeviceLost", dev.path))
        dev.drop()
        self.devices.remove(dev)
        if dev.exported:
            self.bus.unexport(dev.path)
            dev.exported = False

    async def _advertise_loop(self) -> None:
        """Every interval each device that is not connected advertises once on its adapter,
        if that adapter is powered, not silent, and discovers or monitors a pattern the
        device's advertisement matches."""
        while True:
            for n, dev in enumerate(list(self.devices), 1):
                if n % ADVERTS_PER_TURN == 0:
                    await self._drained()
                adapter = dev.adapter
                if not adapter.p["Powered"] or adapter.silent or dev.p["Connected"]:
                    continue
                monitors = adapter.monitors_for(dev)
                if not adapter.p["Discovering"] and not monitors:
                    continue
                self._advertise(dev)
                for monitor in monitors:
                    if dev.path not in monitor.found:
                        monitor.found.add(dev.path)
                        self.spawn(self.call_monitor(monitor, "DeviceFound", dev.path))
            await asyncio.sleep(self.adv_interval)

    async def _drained(self) -> None:
        """Wait until the bus has written what is queued: hundreds of signals at once overflow
        the socket's buffer when dbus-daemon is slow to read (a busy machine), and dbus-fast's
        writer does not survive EAGAIN (it closes the bus). dbus-fast's internals, tests only."""
        writer = getattr(self.bus, "_writer", None)
        for _ in range(1000):  # at most about a second
            if writer is None or (not writer.messages and writer.buf is None):
                return
            await asyncio.sleep(0.001)

    def _advertise(self, dev: Device) -> None:
        if not dev.exported:
            dev.exported = True
            self.bus.export(dev.path, dev)  # InterfacesAdded -> advertisement callback
            return
        changed: dict[str, Any] = {"RSSI": dev.p["RSSI"] + (1 if dev.p["RSSI"] % 2 else -1)}
        if dev.p.pop("fresh", False):
            changed["ManufacturerData"] = dev.p["ManufacturerData"]
            changed["ServiceData"] = dev.p["ServiceData"]
        dev.set(**changed)  # PropertiesChanged -> advertisement callback


class ThreadedFakeBlueZ:
    """A FakeBlueZ in its own thread and event loop; `call` runs a function there."""

    def __init__(self, address: str, **kw: Any) -> None:
        self.fake = FakeBlueZ(**kw)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-bluez")
        self._thread.start()
        self._run(self.fake.start(address))

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def call(self, fn: Callable[[], T]) -> T:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except Exception as exc:  # handed to the caller's thread
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return future.result(10)

    def close(self) -> None:
        try:
            self._run(self.fake.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()


def dbus_env(address: str) -> dict[str, str]:
    """The environment for a daemon subprocess that must use the private bus."""
    return {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": address}


async def close_bleak_manager() -> None:
    """Close the D-Bus connection bleak keeps per event loop (its BlueZ manager).

    bleak keeps it open after the loop ends until it creates a manager for another loop or the
    garbage collector runs; in a test process that means sockets closing at random times, which
    upsets other tests' checks for leaked fds. Call it before the test's loop ends."""
    from bleak.backends.bluezdbus import manager  # noqa: PLC0415 - bleak's internals, tests only

    instance = manager._global_instances.pop(asyncio.get_running_loop(), None)
    bus = None if instance is None else instance._bus
    if bus is not None:
        bus.disconnect()
        await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
