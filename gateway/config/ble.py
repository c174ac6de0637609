"""Bluetooth LE: advert and GATT devices, passive-scanning patterns, the `ble` section."""

from __future__ import annotations

import functools
import importlib.util
import re
import struct
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from gateway.config.base import BackoffConfig, Model, TopicLevel
from gateway.config.controls import ControlSpec
from gateway.config.devices import DeviceBase, device_model

_BASE_UUID = "-0000-1000-8000-00805f9b34fb"
GATT_FORMATS = ("temperature", "humidity", "battery", "heart_rate", "text", "raw")


def _mac(value: str) -> str:
    return value.upper()


def _uuid(value: Any) -> Any:
    """`2a37`, `0x2A37` or a full UUID -> the full lower-case form bleak reports."""
    if isinstance(value, int):
        value = f"{value:04x}"
    if not isinstance(value, str):
        return value
    text = value.lower().removeprefix("0x")
    if re.fullmatch(r"[0-9a-f]{4}", text):
        return f"0000{text}{_BASE_UUID}"
    if re.fullmatch(r"[0-9a-f]{8}", text):
        return f"{text}{_BASE_UUID}"
    if not re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text):
        raise ValueError(f"{value!r} is not a UUID (e.g. 2a37 or 00002a37-0000-1000-8000-...)")
    return text


MacAddress = Annotated[
    str, Field(pattern=r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$"), AfterValidator(_mac)
]
AdapterName = Annotated[str, Field(pattern=r"^hci[0-9]{1,3}$")]
Uuid = Annotated[str, BeforeValidator(_uuid)]


class StructSpec(Model):
    """A Python `struct` layout: `format: "<hhB"`, `fields: [temperature, humidity, battery]`."""

    format: str = Field(description="struct format with explicit byte order (< > !), e.g. <hH.")
    fields: list[str] = Field(description="One name per value; `_` skips a value.")
    scale: dict[str, float] = Field(default_factory=dict, description="Per field: multiply by.")
    offset: int = Field(0, ge=0, le=255, description="Bytes to skip before the layout.")

    @model_validator(mode="after")
    def _layout(self) -> StructSpec:
        check_struct(self.format, self.fields, self.scale)
        return self


def check_struct(fmt: str, fields: list[str], scale: Mapping[str, float]) -> None:
    if not fmt or fmt[0] not in "<>!":
        raise ValueError("struct format must start with a byte order: < (little) > or ! (big)")
    try:
        count = len(struct.unpack(fmt, bytes(struct.calcsize(fmt))))
    except struct.error as exc:
        raise ValueError(f"invalid struct format {fmt!r}: {exc}") from exc
    if len(fields) != count:
        raise ValueError(f"struct format {fmt!r} has {count} value(s), fields names {len(fields)}")
    names = [f for f in fields if f != "_"]
    bad = [f for f in names if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", f)]
    if bad or len(set(names)) != len(names):
        raise ValueError(f"field names must be unique topic levels: {fields}")
    if unknown := set(scale) - set(names):
        raise ValueError(f"scale names unknown fields: {sorted(unknown)}")


class AdvertStructSpec(StructSpec):
    """Where the struct decoder finds its bytes: one company's manufacturer data or one
    service's data."""

    manufacturer_id: int | None = Field(None, ge=0, le=0xFFFF, description="Company id.")
    service_uuid: Uuid | None = Field(None, description="Service data UUID, e.g. 181a.")

    @model_validator(mode="after")
    def _one_source(self) -> AdvertStructSpec:
        if (self.manufacturer_id is None) == (self.service_uuid is None):
            raise ValueError("give exactly one of manufacturer_id and service_uuid")
        return self


# Home Assistant's BLE parser libraries (the `ble-parsers` extra): which module each decoder
# needs, known here so that a config naming one that is not installed is a config error
# (gateway/decoders/ble/parsers.py is the one module that imports them).
INSTALL_HINT = "pip install 'iot-gateway[ble-parsers]'"

#: Decoder name -> (module, class) of its library. Also the order in which `auto` tries them.
LIBRARIES: dict[str, tuple[str, str]] = {
    "bthome": ("bthome_ble", "BTHomeBluetoothDeviceData"),
    "xiaomi": ("xiaomi_ble", "XiaomiBluetoothDeviceData"),
    "govee": ("govee_ble", "GoveeBluetoothDeviceData"),
    "inkbird": ("inkbird_ble", "INKBIRDBluetoothDeviceData"),
    "qingping": ("qingping_ble", "QingpingBluetoothDeviceData"),
    "sensorpush": ("sensorpush_ble", "SensorPushBluetoothDeviceData"),
    "thermopro": ("thermopro_ble", "ThermoProBluetoothDeviceData"),
    "ruuvi": ("ruuvitag_ble", "RuuvitagBluetoothDeviceData"),
}


@functools.cache
def installed(name: str) -> bool:
    """Whether the library of decoder `name` can be imported (without importing it)."""
    module = LIBRARIES[name][0]
    return importlib.util.find_spec(module) is not None


def installed_libraries() -> list[str]:
    return [name for name in LIBRARIES if installed(name)]


def missing_extra(name: str) -> str:
    return f"decoder {name!r} needs the BLE parser libraries: {INSTALL_HINT}"


#: Decoders of Home Assistant's parser libraries (the `ble-parsers` extra).
LIBRARY_DECODERS = ("govee", "xiaomi", "inkbird", "qingping", "sensorpush", "thermopro")
BINDKEY_DECODERS = ("bthome", "xiaomi", "auto")
AdvertDecoderName = Literal[
    "bthome", "pvvx", "atc", "ruuvi", "ibeacon", "struct", "auto",
    "govee", "xiaomi", "inkbird", "qingping", "sensorpush", "thermopro",
]  # fmt: skip


@device_model
class BleAdvertDevice(DeviceBase):
    """A passive sensor: its advertisements, heard by the adapter's scanner, are decoded."""

    type: Literal["ble_advert"]
    address: MacAddress | None = Field(None, description="The device's address.")
    name: str | None = Field(
        None,
        description="Or: a pattern (fnmatch, e.g. `ATC_*`) on the advertised name. Given with "
        "`address`, it is the friendly name, as on other devices.",
    )
    friendly_name: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="Friendly name (Home Assistant's device name) of a device matched by "
        "`name`; default: the id.",
    )
    decoder: AdvertDecoderName = Field(
        description="Built in: bthome, pvvx, atc, ruuvi, ibeacon, struct. With the "
        "`ble-parsers` extra: govee, xiaomi, inkbird, qingping, sensorpush, thermopro "
        "(Home Assistant's parser libraries), and auto (the first parser that reads it)."
    )
    bindkey: SecretStr | None = Field(
        None,
        description="Encryption key of BTHome or Xiaomi (MiBeacon) adverts: 32 hex digits "
        "(24 for a MiBeacon v2/v3 key; keep it out of logs).",
    )
    struct: AdvertStructSpec | None = Field(None, description="Layout for `decoder: struct`.")
    adapter: AdapterName | None = Field(None, description="Default: ble.adapter.")
    republish_after: float = Field(
        60.0,
        ge=0,
        description="Unchanged values are published again every this many seconds while the "
        "device is online: shorthand for `or: [{delta: 0}, {heartbeat: N}]` after each "
        "sensor's own filters; 0 publishes every advert.",
    )
    rssi: bool = Field(
        False, description="Also publish signal_strength (RSSI, dBm), every republish_after."
    )
    stale_after: float = Field(
        900.0, gt=0, description="Not heard this long (s): the device's link goes down."
    )
    repeat_window: float = Field(
        4.0,
        ge=0,
        description="BTHome: an advert with the last packet id within this many seconds of "
        "the previous copy is a repeat and dropped; after a longer silence, a new packet (s).",
    )

    @model_validator(mode="before")
    @classmethod
    def _name_with_address_is_friendly(cls, data: Any) -> Any:
        # Every device's `name` is its friendly name; an advert device found by `address` has
        # no use for a name pattern, so there `name` means the same as elsewhere.
        if isinstance(data, Mapping) and data.get("address") is not None and "name" in data:
            if "friendly_name" in data:
                raise ValueError(
                    "with `address`, `name` is the friendly name: give `name` or "
                    "`friendly_name`, not both"
                )
            data = dict(data)
            data["friendly_name"] = data.pop("name")
        return data

    @property
    def display_name(self) -> str:
        return self.friendly_name or self.id

    @property
    def availability_timeout(self) -> float | None:
        """An advert device is offline once not heard for stale_after (its link goes down)
        unless `availability.timeout` says otherwise."""
        return self.availability.timeout or self.stale_after

    @field_validator("bindkey")
    @classmethod
    def _hex_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(
            r"[0-9A-Fa-f]{24}|[0-9A-Fa-f]{32}", value.get_secret_value()
        ):
            raise ValueError("bindkey must be 32 hex digits (16 bytes; 24 for MiBeacon v2/v3)")
        return value

    @field_validator("decoder")
    @classmethod
    def _library_installed(cls, value: str) -> str:
        if value in LIBRARY_DECODERS and not installed(value):
            raise ValueError(missing_extra(value))
        return value

    def republish_period(self) -> float:
        return self.republish_after

    @model_validator(mode="after")
    def _consistent(self) -> BleAdvertDevice:
        if (self.address is None) == (self.name is None):
            raise ValueError("give exactly one of address and name")
        if (self.decoder == "struct") != (self.struct is not None):
            raise ValueError("`struct:` goes with `decoder: struct`, and only with it")
        if self.bindkey is not None and self.decoder not in BINDKEY_DECODERS:
            raise ValueError("bindkey is only used by `decoder: bthome`, `xiaomi` or `auto`")
        key = self.bindkey.get_secret_value() if self.bindkey is not None else ""
        if len(key) == 24 and self.decoder != "xiaomi":
            raise ValueError("a 24-digit bindkey is a MiBeacon v2/v3 key: `decoder: xiaomi`")
        return self


class GattValueSpec(Model):
    """A characteristic whose value becomes readings."""

    characteristic: Uuid = Field(description="UUID, e.g. 2a37 or the full form.")
    format: str = Field(
        description="temperature (0x2A6E), humidity (0x2A6F), battery (0x2A19), heart_rate "
        "(0x2A37), text (UTF-8), raw (hex string), or a struct format such as <hH."
    )
    sensor: TopicLevel | None = Field(None, description="Sensor name; default: the format's.")
    fields: list[str] = Field(default_factory=list, description="For a struct format.")
    scale: dict[str, float] = Field(default_factory=dict, description="For a struct format.")

    @model_validator(mode="after")
    def _format(self) -> GattValueSpec:
        if self.format in GATT_FORMATS:
            if self.fields or self.scale:
                raise ValueError(f"fields/scale go with a struct format, not {self.format!r}")
        else:
            check_struct(self.format, self.fields, self.scale)
        return self


class GattPollSpec(GattValueSpec):
    interval: float = Field(60.0, gt=0, description="Read every this many seconds.")


class GattWriteSpec(Model):
    """An MQTT command written to a characteristic."""

    characteristic: Uuid = Field(description="UUID of the characteristic written to.")
    response: bool = Field(True, description="Write with response (acknowledged).")
    payload: Literal["raw", "hex", "text"] = Field(
        "raw", description="How the MQTT payload becomes bytes: as is, hex digits, UTF-8."
    )
    value: str | None = Field(
        None,
        pattern=r"^([0-9A-Fa-f]{2})+$",
        description="Fixed bytes (hex); the payload is ignored.",
    )


@device_model
class BleGattDevice(DeviceBase):
    """A connected device: notifications, periodic reads and command writes over GATT."""

    type: Literal["ble_gatt"]
    address: MacAddress = Field(description="The device's address.")
    adapter: AdapterName | None = Field(None, description="Default: ble.adapter.")
    notify: list[GattValueSpec] = Field(
        default_factory=list, description="Characteristics subscribed to (notifications)."
    )
    poll: list[GattPollSpec] = Field(
        default_factory=list, description="Characteristics read every `interval` seconds."
    )
    commands: dict[TopicLevel, GattWriteSpec] = Field(
        default_factory=dict,
        description="MQTT command name -> the characteristic write it makes.",
    )
    controls: dict[TopicLevel, ControlSpec] = Field(
        default_factory=dict,
        description="Command name -> its Home Assistant control (switch, button, select with "
        "options {payload: label}, number), as a serial device's.",
    )
    find_timeout: float = Field(
        30.0, gt=0, description="Wait this long for the scanner to hear the device (s)."
    )
    connect_timeout: float = Field(
        60.0, gt=0, description="Whole connect, all attempts (outer safety timeout, s)."
    )
    connect_attempts: int = Field(3, ge=1, le=10, description="Attempts per connect.")
    io_timeout: float = Field(10.0, gt=0, description="Per read, write or subscribe (s).")
    disconnect_timeout: float = Field(5.0, gt=0, description="Disconnect on stop (s).")


ScanningMode = Literal["active", "passive"]
# AD types a passive-scanning pattern may name: those of bleak's AdvertisementDataType.
AD_TYPES = frozenset({*range(0x01, 0x0B), 0x0D, 0x16, 0x20, 0x21, 0xFF})
AD_DATA_MAX = 31  # bytes of data in a legacy advertisement, the most a pattern can match


class PassivePattern(Model):
    """A BlueZ advertisement monitor pattern: an advertisement matches when one of its AD
    structures of type `ad_type` holds `data` at byte `start` of its data."""

    ad_type: int = Field(
        description="AD type: 0x16 service data (16-bit UUID), 0xFF manufacturer data, "
        "0x09 complete local name, 0x03 16-bit service UUIDs, ..."
    )
    data: str = Field(
        pattern=r"^([0-9A-Fa-f]{2})+$",
        description="The bytes to find, hex, as sent (little endian): `9904` is Ruuvi's "
        "company id 0x0499, `d2fc` BTHome's service UUID 0xFCD2.",
    )
    start: int = Field(0, ge=0, le=30, description="Where in the AD structure's data.")

    @field_validator("ad_type")
    @classmethod
    def _known_type(cls, value: int) -> int:
        if value not in AD_TYPES:
            known = ", ".join(f"0x{t:02X}" for t in sorted(AD_TYPES))
            raise ValueError(f"ad_type 0x{value:02X} is not one of {known}")
        return value

    @model_validator(mode="after")
    def _fits(self) -> PassivePattern:
        if self.start + len(self.data) // 2 > AD_DATA_MAX:
            raise ValueError(f"start + length of data exceeds {AD_DATA_MAX} bytes")
        return self


class BleAdapterSpec(Model):
    """Per-adapter settings, overriding the `ble` section's for one adapter."""

    scanning_mode: ScanningMode | None = Field(None, description="Default: ble.scanning_mode.")
    passive_patterns: list[PassivePattern] = Field(
        default_factory=list, description="Added to ble.passive_patterns on this adapter."
    )


class BleSection(Model):
    """Bluetooth LE: the adapters' scanners and connection limits."""

    adapter: AdapterName = Field("hci0", description="Default adapter of BLE devices.")
    scanning_mode: ScanningMode = Field(
        "active",
        description="active (scan requests: names and scan responses too) or passive (listen "
        "only, through BlueZ's advertisement monitor with patterns from the devices' decoders; "
        "needs BlueZ's experimental features, falls back to active where unsupported).",
    )
    passive_patterns: list[PassivePattern] = Field(
        default_factory=list,
        description="Passive scanning: patterns added to those derived from the decoders "
        "(e.g. for ble_gatt devices, which have none).",
    )
    adapters: dict[AdapterName, BleAdapterSpec] = Field(
        default_factory=dict, description="Per-adapter overrides: scanning_mode, patterns."
    )
    unknown_devices: Literal["ignore", "publish"] = Field(
        "ignore",
        description="Adverts of unconfigured devices: ignore, or publish what a built-in "
        "decoder reads, as device `ble_<address>` (limited by `allow`).",
    )
    allow: list[str] = Field(
        default_factory=list,
        description="With unknown_devices: publish: address patterns (fnmatch) to publish; "
        "empty: any.",
    )
    unknown_devices_rate: float = Field(
        10.0,
        gt=0,
        le=10_000,
        description="With unknown_devices: publish: readings per second of all unknown devices "
        "together, at most (bursts of one second's worth); more are refused and counted "
        "(gateway_input_refused_total{edge=ble, reason=unknown_rate}). Addresses are free to "
        "spoof: this bounds what passers-by cost, however many they claim to be.",
    )
    max_connections: int = Field(
        3, ge=1, le=32, description="GATT connections at once per adapter; more links wait."
    )
    silence_timeout: float = Field(
        60.0,
        gt=0,
        description="No advert this long while advert devices are configured: "
        "the scanner is silent and is restarted (s).",
    )
    restarts: int = Field(
        2, ge=0, description="Silent-scanner restarts before the adapter is power-cycled."
    )
    power_cycles: int = Field(
        1, ge=0, description="Power cycles before the daemon exits (status 3) for systemd."
    )
    start_timeout: float = Field(10.0, gt=0, description="Start/stop of a scan (s).")
    power_timeout: float = Field(10.0, gt=0, description="Each step of a power cycle (s).")
    backoff: BackoffConfig = BackoffConfig()

    def scanning_mode_of(self, adapter: str) -> ScanningMode:
        spec = self.adapters.get(adapter)
        if spec is None or spec.scanning_mode is None:
            return self.scanning_mode
        return spec.scanning_mode

    def passive_patterns_of(self, adapter: str) -> list[PassivePattern]:
        spec = self.adapters.get(adapter)
        return [*self.passive_patterns, *(spec.passive_patterns if spec else ())]
