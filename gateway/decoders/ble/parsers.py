"""Home Assistant's BLE parser libraries (the `ble-parsers` extra) as advert parsers.

The only module that imports them or knows their API (they change it from release to release;
pyproject.toml pins the ranges tested). Each library has a `...BluetoothDeviceData` class whose
`supported(service_info)` says whether an advertisement is for it and whose
`update(service_info)` returns a `SensorUpdate`: values keyed by `DeviceKey(key, device_id)`
with descriptions (Home Assistant's device class and native unit). Here an `Advert` becomes a
`BluetoothServiceInfoBleak` (the subclass with `.time`: bthome-ble reads it, and the plain
`BluetoothServiceInfo` lacks it), and a `SensorUpdate` becomes a `Decoded`: values named as the
libraries name them (`temperature`, `humidity`, `battery`, ...), with a `SensorClass` each.

Every call into a library is contained here: a library that raises on an advertisement (16
distinct exceptions found by fuzzing, such as ruuvitag-ble's IndexError on Ruuvi's company id
with an empty payload) does not read that advertisement, and the caller's `on_fault(parser)`
counts it (gateway_ble_parser_errors_total); a warning per parser is logged at most once a
minute. No foreign exception leaves this module.

The parser objects keep state per device (BTHome's packet ids, Xiaomi's bindkey check), so a
`LibraryParser` belongs to one device. The libraries are imported only when a device uses one:
a gateway without such a device does not pay their start-up and memory (see docs/ble.md).
"""

from __future__ import annotations

import datetime
import decimal
import enum
import functools
import importlib
import importlib.util
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from gateway.config.ble import LIBRARIES, installed_libraries, missing_extra
from gateway.decoders.ble.advert import Advert, AdvertParser, Decoded
from gateway.errors import DecodeError
from gateway.logs import printable
from gateway.models import SensorClass, Value
from gateway.throttle import LogThrottle

log = logging.getLogger(__name__)

#: Libraries whose formats can be encrypted: their class takes the device's bindkey.
WITH_BINDKEY = frozenset({"bthome", "xiaomi"})
#: The libraries add the RSSI as a sensor; the device's `rssi` option does that here.
RSSI_KEY = "signal_strength"
SOURCE = "local"  # BluetoothServiceInfo.source: the adapter it came from (one, here)

#: Told the parser's name each time a library raised on an advertisement (a metric's count).
OnFault = Callable[[str], None]
# One per process: the libraries are too (a warning per parser and minute, whoever called).
_warn = LogThrottle(log)


def _fault(name: str, exc: Exception, on_fault: OnFault | None) -> None:
    # The exception's type only: its text may quote the advertisement's bytes or name.
    _warn.warning(
        name,
        "ble parser %s raised %s on an advertisement: not decoded by it (a bug of the "
        "library; counted in gateway_ble_parser_errors_total)",
        name,
        type(exc).__name__,
    )
    if on_fault is not None:
        on_fault(name)


class _DeviceData(Protocol):
    """What this module uses of a library's `...BluetoothDeviceData`."""

    def supported(self, data: Any) -> bool: ...
    def update(self, data: Any) -> Any: ...


#: The libraries' shared packages, which log about advertisements too.
SHARED_PACKAGES = ("sensor_state_data", "bluetooth_sensor_state_data")


class _Quieted(logging.Filter):
    """A library's own warnings and errors about an advertisement (bthome-ble logs an ERROR
    for every odd payload, with the advertised name and bytes) go out through our logger: at
    most once a minute per library logger and level, with the text made printable. DEBUG
    lines pass as they are: whoever turns DEBUG on asked for every line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        text = printable(record.getMessage())
        _warn.log((record.name, record.levelno), record.levelno, "%s: %s", record.name, text)
        return False


_QUIETED = _Quieted()


@functools.cache
def _quiet_library_loggers(module: str) -> None:
    """Put the filter on every logger the libraries made, once a library is imported (a
    filter on a package's logger does not see its modules' records, so on each one)."""
    packages = {*(module for module, _ in LIBRARIES.values()), *SHARED_PACKAGES}
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger) or name.partition(".")[0] not in packages:
            continue
        if _QUIETED not in logger.filters:
            logger.addFilter(_QUIETED)


def _new_device_data(name: str, bindkey: bytes | None) -> _DeviceData:
    module_name, class_name = LIBRARIES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RuntimeError(missing_extra(name)) from exc
    _quiet_library_loggers(module_name)
    cls = getattr(module, class_name)
    data: _DeviceData = cls(bindkey=bindkey) if name in WITH_BINDKEY else cls()
    return data


def service_info(advert: Advert, now: float | None = None) -> Any:
    """The libraries' view of an advertisement. `now`: monotonic seconds, as in HA."""
    from bleak.backends.device import BLEDevice  # noqa: PLC0415 - loaded with bleak already
    from habluetooth import BluetoothServiceInfoBleak  # noqa: PLC0415 - the extra's

    return BluetoothServiceInfoBleak(
        name=advert.name or "",
        address=advert.address,
        rssi=advert.rssi if advert.rssi is not None else -127,
        manufacturer_data=dict(advert.manufacturer_data),
        service_data=dict(advert.service_data),
        service_uuids=list(advert.service_uuids),
        source=SOURCE,
        device=BLEDevice(advert.address, advert.name, None),
        advertisement=None,
        connectable=False,
        time=time.monotonic() if now is None else now,
        tx_power=advert.tx_power,
    )


class LibraryParser:
    """One device's parser object of one library, as an `AdvertParser`."""

    def __init__(
        self, name: str, bindkey: bytes | None = None, on_fault: OnFault | None = None
    ) -> None:
        self.name = name
        self._data = _new_device_data(name, bindkey)
        self._on_fault = on_fault

    def supported(self, info: Any) -> bool:
        """Whether the library reads this `service_info(advert)` (not if it raises)."""
        try:
            return bool(self._data.supported(info))
        except Exception as exc:  # a library's bug on odd bytes must not escape a decoder
            _fault(self.name, exc, self._on_fault)
            return False

    def __call__(self, advert: Advert) -> Decoded:
        return self.decode(service_info(advert))

    def decode(self, info: Any) -> Decoded:
        try:
            decoded = to_decoded(self._data.update(info))
        except Exception as exc:  # a library's bug on odd bytes must not escape a decoder
            _fault(self.name, exc, self._on_fault)
            raise DecodeError(f"{self.name}: {type(exc).__name__}") from exc
        if not decoded.values and not decoded.events:
            raise DecodeError(f"not a {self.name} advertisement (or nothing decoded)")
        return decoded


class AutoParser:
    """`decoder: auto`: the built-in parsers in `first` (exact, and cheaper: see docs/ble.md),
    then every installed library whose `supported()` accepts the advert, then `last`. One
    parser object per library and device, made when first needed (they keep state)."""

    def __init__(
        self,
        first: Iterable[tuple[str, AdvertParser]] = (),
        last: Iterable[tuple[str, AdvertParser]] = (),
        bindkey: bytes | None = None,
        on_fault: OnFault | None = None,
    ) -> None:
        self._first, self._last = list(first), list(last)
        self._bindkey = bindkey
        self._on_fault = on_fault
        self._parsers: dict[str, LibraryParser] = {}
        self.last: str | None = None  # which parser read the last advertisement

    def __call__(self, advert: Advert) -> Decoded:
        if (found := _first_of(self._first, advert)) is not None:
            self.last = found[0]
            return found[1]
        names = installed_libraries()
        info = service_info(advert) if names else None
        for name in names:
            parser = self._parsers.get(name) or self._parsers.setdefault(
                name, LibraryParser(name, self._bindkey, self._on_fault)
            )
            if parser.supported(info):
                self.last = name
                return parser.decode(info)
        if (found := _first_of(self._last, advert)) is not None:
            self.last = found[0]
            return found[1]
        raise DecodeError("no installed parser reads this advertisement")


def _first_of(
    parsers: Iterable[tuple[str, AdvertParser]], advert: Advert
) -> tuple[str, Decoded] | None:
    for name, parse in parsers:
        try:
            return name, parse(advert)
        except DecodeError:
            continue
    return None


# -- SensorUpdate -> Decoded ------------------------------------------------------------------
def _key(device_key: Any) -> str:
    """`DeviceKey(temperature, None)` -> temperature; a sub-device's gets its id appended
    (`temperature_probe_2`), as a topic level."""
    key = str(_text(device_key.key))  # ruuvitag-ble keys by SensorDeviceClass members
    return key if device_key.device_id is None else f"{key}_{device_key.device_id}"


def _value(native: object) -> Value | None:
    match native:
        case bool() | int() | float() | str():
            return native
        case decimal.Decimal():
            return float(native)
        case datetime.date():  # also datetime.datetime
            return native.isoformat()
        case enum.Enum():
            return str(native.value)
        case None:
            return None
    return str(native)


def _text(item: object) -> str | None:
    if item is None:
        return None
    return str(item.value) if isinstance(item, enum.Enum) else str(item)


def to_decoded(update: Any) -> Decoded:
    """A SensorUpdate as values, events and each value's SensorClass."""
    values: dict[str, Value] = {}
    classes: dict[str, SensorClass] = {}
    descriptions = update.entity_descriptions
    for device_key, sensor in update.entity_values.items():
        name, value = _key(device_key), _value(sensor.native_value)
        if device_key.key == RSSI_KEY or value is None:
            continue
        values[name] = value
        description = descriptions.get(device_key)
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        classes[name] = SensorClass(
            unit=_text(getattr(description, "native_unit_of_measurement", None)),
            device_class=_text(getattr(description, "device_class", None)),
            state_class="measurement" if numeric else None,
        )
    binary_descriptions = update.binary_entity_descriptions
    for device_key, sensor in update.binary_entity_values.items():
        if sensor.native_value is None:
            continue
        name = _key(device_key)
        values[name] = bool(sensor.native_value)
        description = binary_descriptions.get(device_key)
        classes[name] = SensorClass(None, _text(getattr(description, "device_class", None)), None)
    events: dict[str, Value] = {_key(k): str(e.event_type) for k, e in update.events.items()}
    return Decoded(values, events, classes=classes)
