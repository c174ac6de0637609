"""Foreign BLE exceptions (bleak, bleak-retry-connector, dbus-fast, D-Bus socket errors) ->
the gateway's LinkErrors, with a stable `kind` for metrics and advice for the user.

Stale BlueZ state (`InProgress`, `le-connection-abort-by-local`) is transient: BlueZ clears it
by itself, a retry after a backoff works.
"""

from __future__ import annotations

from bleak.exc import (
    BleakCharacteristicNotFoundError,
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
)
from bleak_retry_connector import (
    BleakAbortedError,
    BleakConnectionError,
    BleakNotFoundError,
    BleakOutOfConnectionSlotsError,
)
from dbus_fast import DBusError

from gateway.errors import FatalLinkError, LinkError, TransientLinkError

NOT_FOUND_ADVICE = "is the device powered and in range? `gateway scan` lists what is heard"
DBUS_ADVICE = "is bluetoothd running (systemctl status bluetooth) and may we use D-Bus?"

# D-Bus error name (or a text fragment of it) -> (kind, advice)
_BLUEZ_ERRORS: tuple[tuple[str, str, str | None], ...] = (
    ("InProgress", "in_progress", "stale BlueZ state (another operation runs); retrying"),
    ("le-connection-abort-by-local", "aborted", "stale BlueZ state; retrying"),
    ("NotReady", "adapter_off", "is the adapter powered? (bluetoothctl power on)"),
    ("NotPermitted", "permission", "the gateway's user needs access to BlueZ (group bluetooth)"),
    ("NotAuthorized", "permission", "the gateway's user needs access to BlueZ (group bluetooth)"),
    ("AccessDenied", "permission", "the gateway's user needs access to BlueZ (group bluetooth)"),
    ("DoesNotExist", "not_found", NOT_FOUND_ADVICE),
    ("UnknownObject", "not_found", "no such adapter or device object in BlueZ"),
    ("ServiceUnknown", "dbus", "org.bluez is not on the system bus: " + DBUS_ADVICE),
    ("NotSupported", "not_supported", None),
)


def _dbus_name(exc: BaseException) -> str:
    if isinstance(exc, BleakDBusError):
        return f"{exc.dbus_error} {exc.dbus_error_details or ''}"
    if isinstance(exc, DBusError):
        return f"{exc.type} {exc.text}"
    return str(exc)


_Rule = tuple[type[BaseException] | tuple[type[BaseException], ...], str, str | None]
# exception types -> (kind, advice); these first, then the D-Bus error names, then _BY_TYPE.
_BEFORE_NAMES: tuple[_Rule, ...] = (
    (
        BleakOutOfConnectionSlotsError,
        "no_slots",
        "the adapter has no free connection slot; lower ble.max_connections or disconnect "
        "other devices",
    ),
    ((BleakNotFoundError, BleakDeviceNotFoundError), "not_found", NOT_FOUND_ADVICE),
)
_BY_TYPE: tuple[
    tuple[type[BaseException] | tuple[type[BaseException], ...], str, str | None], ...
] = (
    (BleakAbortedError, "aborted", "retrying with backoff"),
    (TimeoutError, "timeout", None),
    (BleakConnectionError, "connect", None),
    ((EOFError, OSError, DBusError), "dbus", DBUS_ADVICE),  # the D-Bus socket went away, ...
    (BleakError, "ble", None),
)


def translate(exc: BaseException, what: str) -> LinkError:
    """`what` says what failed, with the device: `ble_gatt:heart: connecting`."""
    text = f"{what}: {exc or type(exc).__name__}"
    if isinstance(exc, LinkError):
        return exc
    if isinstance(exc, BleakCharacteristicNotFoundError):
        return FatalLinkError(
            text, kind="config", advice="check the characteristic UUID in the config"
        )
    for types, kind, advice in _BEFORE_NAMES:
        if isinstance(exc, types):
            return TransientLinkError(text, kind=kind, advice=advice)
    name = _dbus_name(exc)
    for fragment, kind, advice in _BLUEZ_ERRORS:
        if fragment in name:
            return TransientLinkError(text, kind=kind, advice=advice)
    for types, kind, advice in _BY_TYPE:
        if isinstance(exc, types):
            return TransientLinkError(text, kind=kind, advice=advice)
    return TransientLinkError(text, kind="unexpected")


#: What `translate` knows how to classify: catch these at the boundary, let bugs through.
FOREIGN_ERRORS = (BleakError, DBusError, EOFError, OSError, TimeoutError)


# D-Bus errors of a passive start that mean "BlueZ cannot do this here", not "try again".
_PASSIVE_UNSUPPORTED = {
    "org.freedesktop.DBus.Error.UnknownMethod": "no_monitor_api",
    "org.freedesktop.DBus.Error.UnknownInterface": "no_monitor_api",
    "org.bluez.Error.NotSupported": "not_supported",
    "org.bluez.Error.InvalidArguments": "rejected",
}


def passive_unsupported(exc: BaseException) -> str | None:
    """Why BlueZ cannot scan passively, if that is what a failed passive start says (a reason
    of gateway_ble_passive_fallbacks_total); None for an ordinary failure."""
    if isinstance(exc, BleakDBusError):
        return _PASSIVE_UNSUPPORTED.get(exc.dbus_error)
    # bleak turns UnknownMethod from RegisterMonitor into this BleakError ("passive scanning on
    # Linux requires BlueZ >= 5.56 with --experimental enabled and Linux kernel >= 5.10").
    if type(exc) is BleakError and "passive scanning" in str(exc):
        return "no_monitor_api"
    return None
