"""A second real MQTT broker for the tests: RabbitMQ 3.10 (Debian's `rabbitmq-server`) with its
`rabbitmq_mqtt` plugin, as a throw-away node on free loopback ports.

`RabbitBroker` has the public interface of `helpers.Broker` (mosquitto), so a test can take
either (`MqttBroker` below is that interface as a Protocol). Each node gets its own directory:
HOME (with its own `.erlang.cookie`), config, data ("mnesia") and logs, and its own epmd on a
free port. The environment keeps /etc/rabbitmq out, and every listener (AMQP, MQTT, Erlang
distribution, epmd) is bound to the loopback interface. Nothing needs root.

Startup is slow next to mosquitto's milliseconds (measured here, 2 vCPUs shared with other test
runs): a node on an empty data dir takes 9-12 s until MQTT answers, ~4 s of that the MQTT plugin
waiting for Raft peers on its first boot. A node on a copy of a stopped node's data dir
(`make_template`) takes 3.5-6 s, a restart after `kill()` 3-4 s (either up to ~13 s when the
machine is busy). `start()` waits for a CONNACK, not for the port.

Processes: `/usr/lib/rabbitmq/bin/rabbitmq-server` (a sh wrapper, in a session of its own) runs
`beam.smp`; beam runs `erl_child_setup`, which runs `inet_gethost` and short-lived `sh`, each in
a new session, so neither a process group nor a session covers them all. `kill()` SIGKILLs
beam.smp (a crash), then what is left of that process tree; `close()` ends the tree and epmd.
Their orphans are reaped by the test process, so not even a zombie is left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Literal, NamedTuple

from helpers import HOST, port_open, process_state, wait_until

#: The real server script; /usr/sbin/rabbitmq-server is a wrapper that su's to user rabbitmq
#: (as root) or refuses to run (as anyone else).
SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
NODE_NAME = "gwtest@localhost"  # each node has its own epmd, so all may share the name
READY_TIMEOUT = 60.0


_HANDED_OUT: set[int] = set()


def late_bound_port() -> int:
    """A free loopback port for a listener that binds it seconds later (a booting node).

    `free_port()` draws from the kernel's ephemeral range, where, in the seconds a node takes to
    boot, an outgoing connection (Erlang's to epmd and its peers, anyone's) may take the port
    first, and a second draw may even return the same port: a cluster's n3 once failed to boot
    with eaddrinuse, and its CONNACK check had been answered by n1. So: below the ephemeral
    range, never handed out twice by this process, and free when chosen."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.SystemRandom()
    while True:
        port = rng.randrange(10_000, max(10_001, low))
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port


def server_program() -> str | None:
    """The rabbitmq-server script to run, or None when the package is not installed."""
    return str(SERVER) if SERVER.is_file() else None


def mqtt_connack(port: int, host: str = HOST, timeout: float = 2.0) -> int | None:
    """Send an MQTT 3.1.1 CONNECT (clean session) and return the CONNACK return code, or None
    when the broker refuses the connection, closes it or does not answer within `timeout`."""
    client_id = f"ping-{os.getpid()}-{secrets.token_hex(4)}".encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(client_id).to_bytes(2, "big") + client_id
    connect = bytes([0x10, len(variable)]) + variable
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(connect)
            answer = b""
            while len(answer) < 4:
                chunk = sock.recv(4 - len(answer))
                if not chunk:
                    return None
                answer += chunk
            if answer[:2] != b"\x20\x02":
                return None
            sock.sendall(b"\xe0\x00")  # DISCONNECT
            return answer[3]
    except OSError:
        return None


class _Stat(NamedTuple):
    """The fields of /proc/PID/stat we use."""

    comm: str
    state: str
    ppid: int
    session: int
    starttime: int  # clock ticks after boot: tells a process from a later one with its PID


def _stat(pid: int) -> _Stat | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            text = stat.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return _Stat(
        comm=text[text.index("(") + 1 : text.rindex(")")],
        state=fields[0],
        ppid=int(fields[1]),
        session=int(fields[3]),
        starttime=int(fields[19]),
    )


def _all_stats() -> dict[int, _Stat]:
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            stats[int(entry)] = stat
    return stats


def _descendants(root: int) -> dict[int, int]:
    """The live descendants of `root`, parents before children: PID -> starttime.
    erl_child_setup and inet_gethost run in sessions of their own, so a process group or session
    does not cover them; the tree does."""
    children: dict[int, list[int]] = {}
    stats = _all_stats()
    for pid, stat in stats.items():
        children.setdefault(stat.ppid, []).append(pid)
    found: dict[int, int] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop(0)  # breadth first
        if stats[pid].state != "Z":
            found[pid] = stats[pid].starttime
        todo.extend(children.get(pid, []))
    return found


def _gone(pid: int, starttime: int) -> bool:
    """True once the process that started at `starttime` is not even a zombie any more."""
    stat = _stat(pid)
    return stat is None or stat.starttime != starttime


def _alive(pid: int, starttime: int | None = None) -> bool:
    """True while `pid` runs (a zombie runs no more) and, if given, is still the process that
    started at `starttime`."""
    stat = _stat(pid)
    return (
        stat is not None
        and stat.state != "Z"
        and (starttime is None or stat.starttime == starttime)
    )


_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


@contextlib.contextmanager
def _orphans_to_us() -> Iterator[None]:
    """While inside, a process whose parent dies becomes a child of this (the test) process
    instead of PID 1's, so that we can reap it at once (prctl PR_SET_CHILD_SUBREAPER)."""
    libc = ctypes.CDLL(None, use_errno=True)
    before = ctypes.c_int(0)
    if libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(before), 0, 0, 0) != 0:
        yield  # not Linux >= 3.4: orphans go to PID 1, and close() waits for it to reap them
        return
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        yield
    finally:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, before.value, 0, 0, 0)


def _clean_env() -> dict[str, str]:
    """Our environment minus what would change how Erlang or RabbitMQ start."""
    drop = {"NOTIFY_SOCKET"}  # under systemd the wrapper would exec beam and sd_notify
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RABBITMQ_", "ERL_")) and k not in drop
    }


class _Shared(NamedTuple):
    """What the nodes of one cluster share: HOME (the Erlang cookie) and epmd's port."""

    home: Path
    epmd_port: int
    epmd_log: Path

    @classmethod
    def make(cls, base: Path) -> _Shared:
        home = base / "home"
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(0o700)
        cookie = home / ".erlang.cookie"  # Erlang refuses a cookie others can read
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        return cls(home, late_bound_port(), base / "epmd.log")

    def start_epmd(self) -> subprocess.Popen[bytes]:
        """epmd in the foreground (so that we own its PID), on our port, loopback only."""
        with self.epmd_log.open("ab") as log:
            epmd = subprocess.Popen(
                ["epmd", "-port", str(self.epmd_port), "-address", HOST],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_clean_env(),
            )
        wait_until(lambda: port_open(self.epmd_port), 10.0, f"epmd on port {self.epmd_port}")
        return epmd


class RabbitBroker:
    """A RabbitMQ node with the MQTT plugin on free loopback ports, killable and restartable on
    the same ports and data dir. Anonymous MQTT clients are allowed (they log in as guest).
    `proc_pid` is beam.smp's PID; `start_seconds` how long each start took until CONNACK.

    `template`: the data dir of a node that booted once and stopped (`make_template`); it is
    copied before the first start, which saves the slow first boot."""

    #: How RabbitMQ 3.10's MQTT differs from mosquitto 2.0, each seen with paho-mqtt 2.2 against
    #: both brokers (tests/test_rabbitmq_broker.py asserts RabbitMQ's side).
    MQTT_DIFFERENCES: ClassVar[tuple[str, ...]] = (
        "MQTT 3.1.1 and 3.1 only, no MQTT 5: a v5 CONNECT gets no CONNACK, the broker logs"
        " 'MQTT cannot parse a frame' and closes the connection; a paho MQTTv5 client only sees"
        " on_disconnect (Unspecified error), never on_connect.",
        "No QoS 2: SUBSCRIBE qos=2 is granted qos=1, and a PUBLISH qos=2 is answered with PUBACK"
        " instead of PUBREC and delivered as QoS 1. paho 2.2 takes that PUBACK as the end of its"
        " QoS 2 publish (is_published() is True); libmosquitto (mosquitto_pub) calls it a"
        " protocol error.",
        "Retained messages go only to subscriptions on the exact topic: a wildcard subscription"
        " (`a/#`, `a/+`) gets none (mosquitto sends every match). Retain flag on delivery, and an"
        " empty retained payload clearing the topic, are as with mosquitto.",
        "Retained messages live in a DETS file in the node's own data dir (per node: in a"
        " cluster not replicated, RECIPE.md). It is written after 2 s without retained changes"
        " (mqtt.retained_message_store_dets_sync_interval), so a SIGKILL loses those retained"
        " within the last ~2 s (mosquitto as in helpers.Broker loses those of the last ~1 s).",
        "A persistent session (clean_session=False) is a durable queue: QoS 1 messages are on"
        " disk when PUBACKed, so after a SIGKILL right after the PUBACK the client reconnects"
        " with session_present=1 and gets all of them, with dup=1 (mosquitto: dup=0).",
        "QoS 0 messages are queued for an offline persistent session too (mosquitto by default"
        " drops them), but in memory only: a SIGKILL loses them.",
        "'.' in a topic is a level separator, like '/' (AMQP topic-exchange words): a PUBLISH to"
        " `a/b.c` is delivered as topic `a/b/c`, matches `a/b/c` and `a/+/+` but not `a/+`, and a"
        " PUBLISH to `a.b` reaches subscribers of `a/b`. mosquitto keeps '.' as a character.",
    )

    def __init__(
        self,
        workdir: Path,
        *,
        template: Path | None = None,
        ready_timeout: float = READY_TIMEOUT,
        node_name: str = NODE_NAME,
        cluster: _Shared | None = None,
    ) -> None:
        self.host = HOST
        self.port = late_bound_port()  # MQTT
        self.amqp_port = late_bound_port()
        self.dist_port = late_bound_port()  # Erlang distribution (rabbitmqctl, cluster peers)
        self.node_name = node_name
        self.ready_timeout = ready_timeout
        name = node_name.split("@", maxsplit=1)[0]
        self.dir = workdir / ("rabbitmq" if cluster is None else name)
        self.mnesia_dir = self.dir / "mnesia"
        self.log_dir = self.dir / "log"
        self.conf = self.dir / "rabbitmq.conf"
        self.server_log = self.log_dir / "server.out"  # the wrapper's stdout and stderr
        for d in (self.mnesia_dir, self.log_dir, self.dir / "conf.d"):
            d.mkdir(parents=True, exist_ok=True)
        # A cluster's nodes share one epmd and one cookie (their HOME); a lone node owns both.
        self._owns_epmd = cluster is None
        if cluster is None:
            cluster = _Shared.make(self.dir)
        self._shared = cluster
        self.home, self.epmd_port, self.epmd_log = cluster.home, cluster.epmd_port, cluster.epmd_log
        self.conf.write_text(
            f"listeners.tcp.default = {HOST}:{self.amqp_port}\n"
            f"mqtt.listeners.tcp.default = {HOST}:{self.port}\n"
            "mqtt.allow_anonymous = true\n"
        )
        (self.dir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        (self.dir / "rabbitmq-env.conf").write_text("")  # instead of /etc/rabbitmq's
        if template is not None:
            self._copy_template(template)
        self.proc: subprocess.Popen[bytes] | None = None  # the rabbitmq-server wrapper
        self.epmd: subprocess.Popen[bytes] | None = None
        self._beam: tuple[int, int] | None = None  # beam.smp's PID and starttime
        self._sessions: set[int] = set()  # the sessions of every process the node ran
        self.start_seconds: list[float] = []  # how long each start() took until CONNACK

    def _copy_template(self, template: Path) -> None:
        """Copy a stopped node's data dir. Ra (the Raft library behind the MQTT plugin's
        client-ID tracking) writes the absolute data dir into each Raft server's `config` file,
        and a server started from a copy that still names the template's dir fails to boot
        (enoent on a log segment): point those at our dir."""
        shutil.copytree(
            template, self.mnesia_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.pid")
        )
        for config in self.mnesia_dir.glob("*/*/*/*/config"):  # NODE/{coordination,quorum}/NODE/UID
            text = config.read_text()
            config.write_text(text.replace(f'"{template}/', f'"{self.mnesia_dir}/'))

    def _env(self) -> dict[str, str]:
        d = self.dir
        loopback_dist = "-kernel inet_dist_use_interface {127,0,0,1}"
        return {
            **_clean_env(),
            "HOME": str(self.home),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": HOST,
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.node_name,
            "RABBITMQ_NODE_IP_ADDRESS": HOST,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.mnesia_dir),
            "RABBITMQ_LOG_BASE": str(self.log_dir),
            "RABBITMQ_CONFIG_FILE": str(self.conf),
            "RABBITMQ_CONFIG_FILES": str(d / "conf.d" / "*.conf"),  # not /etc/rabbitmq/conf.d
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),  # does not exist
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            # Our epmd is already up; erl must not start a daemon one that would outlive us.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": f"{loopback_dist} -start_epmd false",
            "RABBITMQ_CTL_ERL_ARGS": loopback_dist,
        }

    # -- state ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return (
            self.proc is not None
            and self.proc.poll() is None
            and self._beam is not None
            and _alive(*self._beam)
        )

    @property
    def proc_pid(self) -> int:
        """The beam.smp (Erlang VM) PID: the process that kill/freeze/thaw signal."""
        assert self._beam is not None, "broker not started"
        return self._beam[0]

    # -- lifecycle -----------------------------------------------------------------------------

    def _start_epmd(self) -> None:
        if not self._owns_epmd or (self.epmd is not None and self.epmd.poll() is None):
            return
        self.epmd = self._shared.start_epmd()

    def start(self) -> None:
        """Start the node; return once an MQTT CONNECT is answered with CONNACK 0."""
        if self.running:
            raise RuntimeError("broker already running")
        if shutil.which("epmd") is None or server_program() is None:
            raise RuntimeError("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
        self._end_node("crash")  # what is left of a node that died by itself
        started = time.monotonic()
        self._start_epmd()
        with self.server_log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(SERVER)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env=self._env(),
                start_new_session=True,  # no terminal signals from ours
            )
        try:
            self._wait_ready(started)
        except BaseException:
            self.close()
            raise
        self.start_seconds.append(time.monotonic() - started)

    def _wait_ready(self, started: float) -> None:
        assert self.proc is not None
        deadline = started + self.ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"rabbitmq-server exited ({self.proc.returncode}) before MQTT was up:\n"
                    f"{self.log()}"
                )
            if mqtt_connack(self.port, timeout=1.0) == 0:
                break
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"RabbitMQ MQTT on {self.host}:{self.port} gave no CONNACK 0 within "
                    f"{self.ready_timeout:g}s:\n{self.log()}"
                )
            time.sleep(0.05)
        wrapper = self.proc.pid
        beams = [
            (pid, stat.starttime)
            for pid, stat in _all_stats().items()
            if stat.ppid == wrapper and stat.comm == "beam.smp" and stat.state != "Z"
        ]
        if len(beams) != 1:
            raise RuntimeError(f"expected one beam.smp under {wrapper}, found {beams}")
        self._beam = beams[0]

    def _end_node(self, how: Literal["crash", "stop", "close"]) -> None:
        """End the wrapper and every process under it; return once none of them exists.
        "crash": SIGKILL beam.smp first. "stop": SIGTERM to the wrapper, which stops beam.
        "close": SIGSTOP beam (or it starts inet_gethost again), then SIGKILL leaves first.
        Orphans (erl_child_setup and inet_gethost outlive beam) become our children while this
        runs and are reaped here, not left to PID 1 as zombies."""
        proc = self.proc
        if proc is None:
            return
        beam = self._beam if self._beam is not None and _alive(*self._beam) else None
        with _orphans_to_us():
            if how == "close" and beam is not None:
                os.kill(beam[0], signal.SIGSTOP)
                with contextlib.suppress(TimeoutError):
                    wait_until(lambda: process_state(beam[0]) in "TZ", 2.0, "beam.smp to stop")
            tree = _descendants(proc.pid)  # before the wrapper exits and orphans them
            self._sessions.update(s.session for p in [proc.pid, *tree] if (s := _stat(p)))
            if how == "stop" and proc.poll() is None:
                if beam is not None:
                    os.kill(beam[0], signal.SIGCONT)  # a frozen node cannot stop
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(30)  # else: SIGKILL below
            if how == "crash" and beam is not None:
                os.kill(beam[0], signal.SIGKILL)
                wait_until(lambda: not _alive(*beam), 10.0, f"beam.smp {beam[0]} to die")
            for pid, starttime in reversed(tree.items()):  # children before their parents
                if _alive(pid, starttime):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)

            def reaped() -> bool:
                for pid, starttime in tree.items():
                    stat = _stat(pid)
                    if stat is not None and stat.starttime == starttime:
                        if stat.state != "Z" or stat.ppid != os.getpid():
                            return False  # still running, or its own parent reaps it
                        with contextlib.suppress(ChildProcessError):
                            os.waitpid(pid, 0)
                return True

            wait_until(reaped, 10.0, "RabbitMQ's processes to end")
        self.proc = None
        self._beam = None

    def kill(self) -> None:
        """SIGKILL beam.smp (no goodbye to any client, nothing flushed); return once the MQTT
        port refuses connections. The data dir and epmd stay for `start()`."""
        self._end_node("crash")
        wait_until(lambda: not port_open(self.port), 10.0, f"port {self.port} to refuse")

    def stop(self) -> None:
        """Graceful stop: SIGTERM to the wrapper, which stops beam (about 1 s)."""
        self._end_node("stop")

    def restart(self) -> None:
        """kill(), then start() on the same ports and data dir."""
        self.kill()
        self.start()

    def reconfigure(self, *lines: str) -> None:
        """Append lines to rabbitmq.conf (its own syntax, not mosquitto's) and restart."""
        with self.conf.open("a") as conf:
            conf.write("".join(f"{line}\n" for line in lines))
        self.restart()

    def freeze(self) -> None:
        """SIGSTOP beam.smp: TCP still connects (kernel backlog), nothing answers."""
        os.kill(self.proc_pid, signal.SIGSTOP)
        wait_until(lambda: process_state(self.proc_pid) == "T", 5.0, "beam.smp to stop")

    def thaw(self) -> None:
        os.kill(self.proc_pid, signal.SIGCONT)
        wait_until(lambda: process_state(self.proc_pid) != "T", 5.0, "beam.smp to continue")

    def log(self) -> str:
        """The wrapper's output and every RabbitMQ log file, each under a header."""
        parts = []
        for path in [self.server_log, *sorted(self.log_dir.glob("*.log"))]:
            if path.exists():
                parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    def close(self) -> None:
        """Kill the node and its epmd (works on a frozen node too). Idempotent."""
        self._end_node("close")
        if self.epmd is not None and self.epmd.poll() is None:
            self.epmd.kill()
            self.epmd.wait(5)
        # Should anything of the node have escaped us to PID 1 (which reaps zombies within
        # ~1.5 s here), wait for that: once we return, no process of any session the node
        # made exists, not even a zombie.
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(
            stat.session in self._sessions for stat in _all_stats().values()
        ):
            time.sleep(0.05)


def make_template(workdir: Path, ready_timeout: float = READY_TIMEOUT) -> Path:
    """Boot a node on an empty data dir once, stop it gracefully and return its data dir, to be
    passed as `RabbitBroker(template=...)`: later nodes then skip the slow first boot."""
    node = RabbitBroker(workdir, ready_timeout=ready_timeout)
    try:
        node.start()
        node.stop()
    finally:
        node.close()
    return node.mnesia_dir


CTL = SERVER.with_name("rabbitmqctl")


def _answers(port: int) -> bool:
    return mqtt_connack(port) == 0


class RabbitCluster:
    """`size` RabbitMQ nodes (n1@localhost, n2@localhost, ...) joined into one cluster, on free
    loopback ports, sharing one epmd and one cookie. Each node is a `RabbitBroker`, so it can be
    killed and started again alone. Three nodes, because the MQTT plugin's client-id tracking
    is a Raft cluster: with two, one node left has no majority and a restart takes ~105 s.

    Measured here (2 vCPUs): the nodes boot in parallel on empty data dirs and join in ~25-40 s
    (each first boot waits for Raft peers), which is why it is a session fixture."""

    def __init__(self, workdir: Path, size: int = 3, ready_timeout: float = 120.0) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.shared = _Shared.make(workdir)
        self.nodes = [
            RabbitBroker(
                workdir,
                node_name=f"n{i + 1}@localhost",
                cluster=self.shared,
                ready_timeout=ready_timeout,
            )
            for i in range(size)
        ]
        self.epmd: subprocess.Popen[bytes] | None = None
        self.up_seconds = 0.0

    def start(self) -> None:
        started = time.monotonic()
        self.epmd = self.shared.start_epmd()
        errors: list[BaseException] = []

        def boot(node: RabbitBroker) -> None:
            try:
                node.start()
            except BaseException as exc:  # re-raised below, in the caller's thread
                errors.append(exc)

        threads = [threading.Thread(target=boot, args=(n,), name=n.node_name) for n in self.nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        first = self.nodes[0].node_name
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first)
            self.ctl(node, "start_app")
            wait_until(functools.partial(_answers, node.port), 60.0, f"{node.node_name} MQTT")
        self.up_seconds = time.monotonic() - started

    def ctl(self, node: RabbitBroker, *args: str, timeout: float = 60.0) -> str:
        """rabbitmqctl against `node`; its output (raises on failure)."""
        done = subprocess.run(
            [str(CTL), "-n", node.node_name, *args],
            env=node._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        if self.epmd is not None and self.epmd.poll() is None:
            self.epmd.kill()
            self.epmd.wait(5)
