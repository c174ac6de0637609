"""Every timeout and bound that is not a config setting, in one place, each with its reason.

What an operator may want to tune is a config default (`gateway/config/`, documented in the
field descriptions and `gateway schema`). What is here is fixed by the protocol, the hardware or
a judgement about safety; moving a value between the two is a design decision, not a tweak.
Each module that uses one imports it under its local name; the outbox's internals keep theirs
with the outbox (`gateway/outbox/`).
"""

from __future__ import annotations

# -- lifecycle (lifecycle.py, watchdog.py) --------------------------------------------------
CLOSE_RESERVE = 2.0  # seconds of the shutdown budget kept for closing the MQTT session
FORCED_EXIT_GRACE = 3.0  # after a second signal, exit hard if unwinding takes longer
EXIT_ADAPTER_DEAD = 3  # the exit status when the silent-scanner ladder gives up: restart us
WATCHDOG_MAX_TICK = 1.0  # seconds between progress checks at most (the lag probe's resolution)

# -- links (streams/link.py, links/serial.py, links/hardware.py, modbus/client.py) ----------
STREAM_OPEN_TIMEOUT = 1.0  # a stream timer's entering does nothing that can hang
SERIAL_CLOSE_TIMEOUT = 2.0  # seconds to flush pending writes on close before aborting
HARDWARE_WORKERS = 4  # blocking hardware calls in progress at once (threads)
# pymodbus's own per-request timer, only a safety net: ours (the device's timeout) is shorter.
MODBUS_SAFETY_TIMEOUT = 60.0

# -- Bluetooth LE (ble/advert.py, ble/adapter.py, ble/scan.py) -------------------------------
ADVERT_SUBSCRIBE_TIMEOUT = 1.0  # entering an advert link only registers a callback
DBUS_DISCONNECT_TIMEOUT = 2.0  # seconds to close our D-Bus connection
SCAN_START_TIMEOUT = 10.0  # seconds to start or stop a scan (BlueZ can be slow, not this slow)

# -- MQTT (mqtt/session.py, mqtt/publisher.py, mqtt/command_runner.py, commands.py) ----------
ANNOUNCE_TIMEOUT = 2.0  # seconds for the `offline` announcement on a clean shutdown
CONNECT_MARGIN = 1.0  # seconds the supervisor's open deadline adds to mqtt.connect_timeout
ACK_WATCHDOG_TICK = 1.0  # seconds between looks at the oldest unacknowledged message, at most
COMMANDS_CONCURRENT = 8  # commands run at once; more wait in the queue (rare and short)
COMMANDS_QUEUED = 100  # beyond this a command is answered `error: busy` at once
COMMAND_MAX_PAYLOAD = 4096  # bytes; a command is a short instruction, not a data transfer

# -- HTTP (http.py) ----------------------------------------------------------------------------
HTTP_CLOSE_TIMEOUT = 2.0  # seconds for open connections to finish when the server closes
