"""Parts the benches share: a private mosquitto that can be killed and started again, a socat pty
pair, the two programs under test (`gateway run` and `mosquitto_pub -l` reading the pty), and
what /proc says about a process. Everything is on 127.0.0.1 and in a temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

PREFIX = "bench"  # the topic prefix of everything the programs publish
CLK_TCK = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parent.parent
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def missing_tools() -> list[str]:
    """The external programs the benches need that are not installed."""
    missing = [p for p in ("mosquitto_pub", "mosquitto_sub", "socat") if shutil.which(p) is None]
    if not Path(MOSQUITTO).exists():
        missing.append("mosquitto")
    return missing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def stop(proc: subprocess.Popen[bytes], grace: float = 15.0) -> int:
    """SIGCONT (in case it was stopped), SIGTERM, wait up to `grace`, then SIGKILL; returns the
    exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


class Broker:
    """A private mosquitto 2 on loopback that never drops a message for a slow subscriber. It can
    be killed (SIGKILL: no goodbye, in-memory state gone) and started again on the same port."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self._conf = tmp / "mosquitto.conf"
        self._conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 0\nmax_inflight_messages 0\n",
            encoding="utf-8",
        )
        self._log = tmp / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self._conf)], stdout=log, stderr=log
            )
        wait_until("mosquitto", lambda: port_open(self.port), 10, self._proc)

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
        wait_until("mosquitto to go away", lambda: not port_open(self.port), 5)

    def close(self) -> None:
        if self._proc is not None:
            stop(self._proc, 5)
            self._proc = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@contextlib.contextmanager
def pty_pair(
    tmp: Path, name: str = "tty", *, nonblocking: bool = False
) -> Iterator[tuple[Path, int]]:
    """socat pty pair: yields (the program's side, a write fd on the device side)."""
    program_side, device_side = tmp / f"{name}-program", tmp / f"{name}-device"
    proc = subprocess.Popen(
        [
            "socat",
            f"pty,raw,echo=0,link={program_side}",
            f"pty,raw,echo=0,link={device_side}",
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until("socat", lambda: program_side.exists() and device_side.exists(), 10, proc)
        flags = os.O_WRONLY | os.O_NOCTTY | (os.O_NONBLOCK if nonblocking else 0)
        fd = os.open(device_side, flags)
        try:
            yield program_side, fd
        finally:
            os.close(fd)
    finally:
        stop(proc, 5)


# -- the programs under test ---------------------------------------------------------------------
def write_gateway_config(
    path: Path,
    *,
    pty: Path,
    port: int,
    state_dir: Path,
    qos: int,
    inflight: int | None = None,
    backoff_max: float | None = None,
    batch: tuple[int, float] | None = None,
    overrides: Sequence[str] = (),
) -> None:
    """One serial device `dev` (decoder kv) on `pty`; readings go to `bench/dev/<sensor>`, or
    with `batch` = (max_items, max_delay s) as JSON arrays to `bench/dev/batch`. `overrides` are
    `dotted.key=value` settings (value in YAML), e.g. `outbox.commit_interval=0.01`."""
    mqtt: dict[str, Any] = {"port": port, "topic_prefix": PREFIX, "qos": qos}
    if inflight is not None:
        mqtt["inflight"] = inflight
    if backoff_max is not None:
        mqtt["backoff"] = {"initial": min(0.5, backoff_max), "max": backoff_max}
    device: dict[str, Any] = {
        "id": "dev",
        "type": "serial",
        "port": str(pty),
        "baudrate": 115200,
        "decoder": "kv",
    }
    if batch is not None:
        device["batch"] = {"max_items": batch[0], "max_delay": batch[1]}
    config: dict[str, Any] = {
        "gateway": {"id": "bench", "state_dir": str(state_dir)},
        "mqtt": mqtt,
        "log": {"level": "WARNING"},
        "devices": [device],
    }
    apply_overrides(config, overrides)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def apply_overrides(config: dict[str, Any], overrides: Sequence[str]) -> None:
    """`dotted.key=value` settings (value in YAML) into a gateway config, e.g.
    `outbox.commit_interval=0.01`."""
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            raise ValueError(f"{override!r} is not key=value")
        *parents, last = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(value)


def start_gateway(
    config: Path, log: Path, *, src: Path = REPO, profile: Path | None = None
) -> subprocess.Popen[bytes]:
    """`python -m gateway run` from the source tree `src` (optionally under cProfile, which
    writes `profile` when the gateway exits on SIGTERM)."""
    python = [sys.executable]
    if profile is not None:
        python += ["-m", "cProfile", "-o", str(profile)]
    env = {**os.environ, "PYTHONPATH": str(src)}
    with log.open("ab") as out:
        return subprocess.Popen(
            [*python, "-m", "gateway", "run", "-c", str(config)],
            stdout=out,
            stderr=out,
            cwd=src,
            env=env,
        )


def start_mosquitto_pub(pty: Path, port: int, qos: int, topic: str) -> subprocess.Popen[bytes]:
    """`mosquitto_pub -l` reading the pty: one message per line, no parsing (C)."""
    stdin = os.open(pty, os.O_RDONLY | os.O_NOCTTY)
    try:
        return subprocess.Popen(
            [
                *("mosquitto_pub", "-h", "127.0.0.1", "-p", str(port)),
                *("-q", str(qos), "-t", topic, "-l"),
            ],
            stdin=stdin,
            stderr=subprocess.DEVNULL,
        )
    finally:
        os.close(stdin)


# -- /proc ---------------------------------------------------------------------------------------
def start_mosquitto_sub(port: int, qos: int, topic: str = f"{PREFIX}/#") -> subprocess.Popen[bytes]:
    """`mosquitto_sub -v` on `topic` (everything under PREFIX), its output on a pipe."""
    return subprocess.Popen(
        [
            *("mosquitto_sub", "-h", "127.0.0.1", "-p", str(port)),
            *("-q", str(qos), "-t", topic, "-v"),
        ],
        stdout=subprocess.PIPE,
    )


class MosquittoSubReader:
    """`mosquitto_sub` (see start_mosquitto_sub) and a thread handing each chunk of its output
    to `on_chunk`. Returns once subscribed: it publishes `probe` (topic, message) until
    `on_chunk` sets `probed`."""

    def __init__(
        self,
        port: int,
        qos: int,
        on_chunk: Callable[[bytes], None],
        probe: tuple[str, str],
        probed: threading.Event,
        *,
        topic: str = f"{PREFIX}/#",
    ) -> None:
        self.proc = start_mosquitto_sub(port, qos, topic)
        self._on_chunk = on_chunk
        self._reader = threading.Thread(target=self._read, name="mosquitto_sub", daemon=True)
        self._reader.start()

        def subscribed() -> bool:
            publish_probe(port, *probe)
            return probed.wait(0.2)

        try:
            wait_until("mosquitto_sub", subscribed, 10, self.proc)
        except BaseException:
            self.close()
            raise

    def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        while chunk := os.read(stdout.fileno(), 1 << 16):
            self._on_chunk(chunk)

    def close(self) -> None:
        stop(self.proc, 5)
        self._reader.join(5)


def publish_probe(port: int, topic: str, message: str) -> None:
    """One message with mosquitto_pub: a subscriber that sees it is subscribed."""
    subprocess.run(
        [*("mosquitto_pub", "-h", "127.0.0.1", "-p", str(port)), *("-t", topic, "-m", message)],
        check=True,
    )


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), in seconds (resolution 1/CLK_TCK)."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the highest resident set size the process had so far."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mb(pid: int) -> float:
    """VmRSS: the resident set size now."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def scrape(port: int, timeout: float = 5.0) -> dict[str, float]:
    """A gateway's /metrics, each metric summed over its label sets (`name` -> total)."""
    import urllib.request  # noqa: PLC0415 - only the benches that scrape need it

    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            totals[name] = totals.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return totals


def synthetic_devices(
    count: int, *, interval: float, frames: int | None, values: Sequence[str] = ("n",)
) -> list[dict[str, Any]]:
    """`count` synthetic devices (`dev0`, `dev1`, ...), each a frame every `interval` seconds of
    one reading per value (the first a counter, the rest random walks), `frames` frames each."""
    shapes = {v: ("counter" if i == 0 else "walk") for i, v in enumerate(values)}
    devices: list[dict[str, Any]] = []
    for i in range(count):
        device: dict[str, Any] = {
            "id": f"dev{i}",
            "type": "synthetic",
            "interval": interval,
            "values": shapes,
        }
        if frames is not None:
            device["count"] = frames
        devices.append(device)
    return devices


class SeqTally:
    """Which seqs of each stream (a device, or a device of a gateway) a subscriber got: a bitmap
    per stream (an hour at 1000/s is 3.6 M seqs), duplicates, and seqs out of range. `lines()`
    turns `mosquitto_sub -v` chunks into whole lines (and notes the probe); the subclass finds
    the readings in them and calls `mark()` under `lock`."""

    def __init__(self, streams: int, per_stream: int) -> None:
        self.seen = [bytearray(per_stream + 1) for _ in range(streams)]  # seq 0 is never used
        self.delivered = self.duplicates = self.unexpected = 0
        self.probed = threading.Event()
        self.lock = threading.Lock()
        self._tail = b""

    def lines(self, data: bytes) -> bytes:
        if b"probe" in data:
            self.probed.set()
        whole, _, self._tail = (self._tail + data).rpartition(b"\n")
        return whole

    def mark(self, stream: int, seq: int) -> None:
        if stream >= len(self.seen) or seq >= len(self.seen[stream]):
            self.unexpected += 1
        elif self.seen[stream][seq]:
            self.duplicates += 1
        else:
            self.seen[stream][seq] = 1
            self.delivered += 1

    def lost(self) -> int:
        with self.lock:
            return sum(bits.count(0) - 1 for bits in self.seen)
