"""Every timeout and bound that is not a config setting, in one place, each with its reason.

What an operator may want to tune is a config default (`gateway/config/`, documented in the
field descriptions and `gateway schema`). What is here is fixed by the protocol, the hardware or
a judgement about safety; moving a value between the two is a design decision, not a tweak.
Each module that uses one imports it under its local name. Constants of a protocol or a
format (MQTT's packet size, BTHome's packet id, Modbus's registers per request) stay with the
code that speaks it.
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
# Bytes a serial transport holds for a device that reads slower than commands come: above it
# commands wait (the device's write_timeout), then are answered `error: busy`; at 9600 baud
# 8 KiB is about 8 s of writing, and the kernel's tty buffer holds a few KiB more.
SERIAL_WRITE_HIGH_WATER = 8 * 1024
SERIAL_WRITE_LOW_WATER = 2 * 1024  # waiting commands go on once the backlog is down to this
# Seconds between looks (stat) at a down port's device node while backing off: a replug is
# retried within this instead of after the backoff's delay (up to its max); no inotify needed.
SERIAL_REPLUG_POLL = 0.1
# pymodbus's own per-request timer, only a safety net: ours (the device's timeout) is shorter.
MODBUS_SAFETY_TIMEOUT = 60.0

# -- Bluetooth LE (ble/advert.py, ble/adapter.py, ble/scan.py) -------------------------------
ADVERT_SUBSCRIBE_TIMEOUT = 1.0  # entering an advert link only registers a callback
DBUS_DISCONNECT_TIMEOUT = 2.0  # seconds to close our D-Bus connection
SCAN_START_TIMEOUT = 10.0  # seconds to start or stop a scan (BlueZ can be slow, not this slow)
# Encrypted BTHome counters reserved on disk ahead of the accepted one (ble/counters.py): one
# write per this many packets of a device; after a crash, at most this many of its packets
# (about 5 minutes of a sensor sending every 10 s) are refused with the replays.
COUNTER_BLOCK = 32
# Unconfigured advertisers' readings (`unknown_devices: publish`) are refused once the outbox
# holds this share of max_bytes: the rest is kept for configured devices, so drop_oldest never
# drops one of theirs to make room for a passer-by's (spoofed addresses are free to make).
UNKNOWN_OUTBOX_SHARE = 0.5

# -- MQTT (mqtt/session.py, mqtt/publisher.py, mqtt/command_runner.py, commands.py) ----------
ANNOUNCE_TIMEOUT = 2.0  # seconds for the `offline` announcement on a clean shutdown
CONNECT_MARGIN = 1.0  # seconds the supervisor's open deadline adds to mqtt.connect_timeout
ACK_WATCHDOG_TICK = 1.0  # seconds between looks at the oldest unacknowledged message, at most
COMMANDS_CONCURRENT = 8  # commands carried out at once; more wait for a slot (rare and short)
COMMANDS_QUEUED = 100  # queued, and again in progress; beyond this `error: busy` at once
COMMAND_MAX_PAYLOAD = 4096  # bytes; a command is a short instruction, not a data transfer
COMMAND_MAX_REPLY = 512  # characters of a reply; longer ones (an echoed 4 KB payload) are cut
# Commands waiting (command_ttl) for their device to come back hold no slot; a down device
# may keep this many waiting (its queue is a few retries, not a backlog), all devices this
# many together (so waiters never fill COMMANDS_QUEUED: healthy devices keep some).
COMMANDS_WAITING_PER_DEVICE = 8
COMMANDS_WAITING = 64
# The largest packet the gateway takes from the broker (MQTT 5 CONNECT Maximum Packet Size;
# the broker drops larger ones for us). Commands are <= 4 KiB and Home Assistant's status a
# word, but the retained discovery configs of our own we subscribe to (to clear stale ones)
# reach ~400 KB in device mode for 256 learned sensors with 64-character names: 4 MiB is that
# with a margin for configured sensors and overrides, not the 256 MiB MQTT allows.
MQTT_MAX_INCOMING_PACKET = 4 * 1024 * 1024
# Bytes read from the broker's socket at once: paho reads a packet a byte or two at a time (a
# PUBACK cost three recv() calls and an EAGAIN); one read now takes every acknowledgement waiting.
MQTT_READ_CHUNK = 65536

# -- HTTP (http.py) ----------------------------------------------------------------------------
HTTP_CLOSE_TIMEOUT = 2.0  # seconds for open connections to finish when the server closes
# Bytes of a request line and headers: ours are short GETs. h11 refuses (431) a head still
# incomplete beyond it; one completed by the read that crosses it may be a read larger.
HTTP_MAX_HEAD = 8192
HTTP_READ_SIZE = 4096  # bytes read from a client at once: a request head fits
HTTP_BACKLOG = 128  # connections the kernel queues for us; we accept them as fast as they come
HTTP_ACCEPT_PAUSE = 0.5  # seconds without accepting after accept() failed for lack of fds

# -- outbox (outbox/: the write path, numbering, bounds, the unreadable backlog, the store) --------
# Deletes go apart from the commits of new records: at 200 readings/s (bench/footprint.py),
# deleting with every commit wrote 1,526-1,606 bytes per reading against 868-903 (each such
# commit also rewrites the pages at the table's front), and every 2 s instead of 0.5 s, 934.
ACK_FLUSH_DELAY = 0.5  # seconds an acknowledged record may stay on disk, waiting for a commit
MAX_LAZY_DELETES = 4096  # acknowledged records that make a commit of new ones delete them too
RECOVERY_BATCH = 2000  # records written back per loop turn after a disk failure
COMMIT_WAIT = 5.0  # seconds close() waits for a commit in the thread
CHECKPOINT_INTERVAL = 5.0  # seconds between WAL checkpoints (the WAL stays small)
SEQ_BLOCK = 1000  # seqs reserved at once per device while records go out from memory
# The highest seq: beyond 2^53 - 1 a JSON consumer in JavaScript cannot tell seqs apart, and
# counting there at 1,000 readings/s takes 285,000 years: a seq beyond it (in the seqs table
# or a row) comes from an edited or damaged file, and would stop every commit at 2^63.
SEQ_MAX = 2**53 - 1
AGE_CHECK_INTERVAL = 1.0  # seconds between max_age checks
DROP_BATCH = 1000  # backlog rows read at once to drop or expire
BACKLOG_BATCH = 1000  # records read back from disk at once (the backlog, a set-aside range)
UNREADABLE_FIRST_RETRY = 0.1  # the backoff's first bound, as a fraction of retry_interval
# Every commit writes whole pages to the WAL (a frame: page + 24 bytes), most of them one or two:
# the smallest page writes the least per commit (bench/footprint.py: 2,660 bytes per reading
# at 4096, 1,171 at 1024, 867 at 512). It applies to new files; an existing one keeps its own.
PAGE_SIZE = 512

# -- decoders (decoders/): what one value or frame may be ------------------------------------------
MAX_TEXT = 256  # characters of a string value: a sensor value, not a document
GATT_MAX_TEXT = 512  # characters of a GATT string value (the ATT maximum is 512 bytes)
JSON_MAX_DEPTH = 4  # nesting a JSON line may have: a reading, not a document
MAX_SENTENCE = 120  # characters; NMEA allows 82, some receivers send a little more

# -- the config file and its secret files (yamlsource.py, config/loading.py) ---------------------
CONFIG_MAX_BYTES = 1_048_576  # a config is text people write: 1 MiB is ~100x a 200-device one
CONFIG_MAX_DEPTH = 64  # nesting of the config, aliases followed: ~10 is the deepest real key
# Values once aliases are followed: a bound against "billion laughs" (9 aliases of 9 aliases...
# of 423 bytes expand to 10^9). 200 devices of 10 sensors are ~10,000; reading 50,000 takes
# ~1 s and ~45 MB (YAML nodes are heavy), a billion laughs refused 0.16 s and 22 MB.
CONFIG_MAX_NODES = 50_000
SECRET_MAX_BYTES = 65_536  # a password or token file: a line, not a document

# -- input from outside (throttle.py): refusals are counted always, logged seldom ---------------
LOG_THROTTLE_INTERVAL = 60.0  # seconds: a refusal is logged at most once a minute per source+reason
LOG_THROTTLE_KEYS = 1024  # (source, reason) pairs remembered; spoofed sources forget the oldest

# -- memory kept for status, discovery and logs; the synthetic devices' catch-up ----------
RING_POINTS = 120  # points kept per numeric sensor (the sparkline's resolution)
RING_SPACING = 2.5  # seconds between points at least: 120 points span >= 5 minutes
RECENT_MAX_SENSORS = 64  # sensors remembered per device; readings of further ones are not shown
RATE_WINDOW = 10.0  # seconds over which the status page's adverts per second are counted
RATE_SAMPLES = 64  # advert arrival times kept per adapter for that rate (bounded memory)
MAX_STRANGERS = 64  # advertisers remembered per adapter
UNKNOWN_TRACKED = 256  # unknown devices whose last values we remember (LRU)
MAX_LEARNED = 256  # sensors remembered per device: a bound against a decoder gone wild
MAX_REMEMBERED = 100_000  # state topics whose last payload is kept (a bound, not a goal)
TAKEOVER_LOSSES = 3  # short-lived losses in a row that make the pattern
REFRESH_WITHOUT_JS = 10  # seconds: a page without JavaScript reloads itself this often
MIN_SECRET_LENGTH = 4  # shorter "secrets" would mask ordinary text everywhere
SYNTHETIC_CATCH_UP = 1.0  # seconds of missed frames made at once after a stall; more: skipped
