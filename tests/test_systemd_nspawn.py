"""The shipped unit under a real systemd: boot this machine's /usr in `systemd-nspawn` (a
throwaway container, volatile root, private network), start `gateway.service` with its
hardening, dynamic user and sysusers.d groups, and watch it become active, reload, stop cleanly,
and get restarted by systemd after a watchdog timeout (the daemon frozen with SIGSTOP).

Root and systemd-nspawn (`apt-get install systemd-container`, which scripts/setup.sh does) only;
skipped otherwise, except in CI, where a skip is a failure (tests/ci.py). The unit
is used as shipped, with a drop-in that points ExecStart at this checkout (the system's
python3, this checkout and the venv's packages on PYTHONPATH) and shortens WatchdogSec so the
test is quick. Each step's duration is printed (`pytest -s`) and bounded.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ci import skip_or_fail
from helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = Path("/usr/bin/python3")  # inside the container only /usr is the host's
WATCHDOG_SEC = 3
UNIT = "gateway.service"


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn boots a container)"
    for program in ("systemd-nspawn", "nsenter"):
        if shutil.which(program) is None:
            return f"needs {program} (apt-get install -y systemd-container util-linux)"
    if not Path("/usr/lib/systemd/systemd").exists():
        return "needs systemd in /usr/lib/systemd (apt-get install -y systemd)"
    if not SYSTEM_PYTHON.exists():
        return f"needs {SYSTEM_PYTHON}"
    version = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if version != str(sys.version_info[:2]):
        return f"{SYSTEM_PYTHON} is {version}, the venv {sys.version_info[:2]}: packages differ"
    return None


pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", autouse=True)
def _real_parts() -> None:
    if (reason := _skip_reason()) is not None:
        skip_or_fail(reason)


CONFIG = """\
gateway: {id: nspawn, shutdown_timeout: 2}
mqtt: {host: 127.0.0.1, port: 1883, backoff: {initial: 0.2, max: 1}}  # no broker: backs off
metrics: {host: 127.0.0.1, port: 9108}
devices:
  - {id: boiler, type: serial, port: /dev/ttyUSB7, backoff: {initial: 0.2, max: 1}}
"""

DROP_IN = f"""\
[Service]
ExecStart=
ExecStart={SYSTEM_PYTHON} -m gateway run -c /etc/gateway/config.yaml
Environment=PYTHONPATH=/opt/gateway/src:/opt/gateway/site
WatchdogSec={WATCHDOG_SEC}s
RestartSec=500ms
"""


class Container:
    """A booted systemd-nspawn container; commands run inside with nsenter."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log_path = workdir / "boot.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader = 0

    def boot(self) -> None:
        w = self.workdir
        (w / "config.yaml").write_text(CONFIG, encoding="utf-8")
        (w / "test.conf").write_text(DROP_IN, encoding="utf-8")
        site = sysconfig.get_paths()["purelib"]
        binds = {
            ROOT: "/opt/gateway/src",
            Path(site): "/opt/gateway/site",
            ROOT / "systemd" / "gateway.service": "/etc/systemd/system/gateway.service",
            w / "test.conf": "/etc/systemd/system/gateway.service.d/test.conf",
            ROOT / "systemd" / "gateway.sysusers": "/etc/sysusers.d/gateway.conf",
            w / "config.yaml": "/etc/gateway/config.yaml",
        }
        command = [
            "systemd-nspawn",
            "-D",
            "/",
            "--volatile=yes",
            "--register=no",
            "--keep-unit",
            f"--machine=gwtest{os.getpid()}",
            "--console=pipe",
            "--private-network",
            *(f"--bind-ro={src}:{dst}" for src, dst in binds.items()),
            "-b",
            "systemd.firstboot=no",
            "systemd.mask=mosquitto.service",
            "systemd.mask=systemd-networkd-wait-online.service",
            f"systemd.wants={UNIT}",
        ]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self.leader = wait_until(self._find_leader, 20, "the container's systemd")

    def _find_leader(self) -> int | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"nspawn exited {self.proc.returncode}:\n{self.boot_log()}")
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        for pid in children.read_text().split():
            if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                return int(pid)
        return None

    def run(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-a", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{args} exited {result.returncode}: {result.stderr}")
        return result.stdout

    def show(self, *props: str, check: bool = True) -> dict[str, str]:
        """Unit properties; with check=False, {} while systemd does not answer yet (booting)."""
        out = self.run("systemctl", "show", UNIT, *(f"--property={p}" for p in props), check=check)
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self) -> str:
        return self.run("journalctl", "--no-pager", "-o", "cat", "-u", UNIT, check=False)

    def wait_active(self, timeout: float = 30) -> dict[str, str]:
        def active() -> dict[str, str] | None:
            props = ("ActiveState", "SubState", "MainPID", "NRestarts", "StatusText")
            state = self.show(*props, check=False)
            if state.get("ActiveState") == "failed":
                raise AssertionError(f"{UNIT} failed:\n{self.journal()}")
            return state if state.get("ActiveState") == "active" else None

        return wait_until(active, timeout, f"{UNIT} active")

    def http(self, path: str) -> tuple[int, str]:
        """GET on the gateway's endpoint, from inside the container's network namespace."""
        code = (
            "import sys, urllib.request, urllib.error\n"
            "try:\n"
            f"    r = urllib.request.urlopen('http://127.0.0.1:9108{path}', timeout=5)\n"
            "except urllib.error.HTTPError as e:\n"
            "    r = e\n"
            "print(r.status, r.read().decode())\n"
        )
        result = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-n", str(SYSTEM_PYTHON), "-c", code],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        status, _, body = result.stdout.partition(" ")
        return int(status), body

    def boot_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # nspawn asks the container's systemd to power off
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Container]:
    c = Container(tmp_path)
    try:
        c.boot()
        yield c
    except BaseException:
        print(f"--- boot log ---\n{c.boot_log()}\n--- journal ---\n{c.journal()}")
        raise
    finally:
        c.close()


def test_the_unit_starts_reloads_stops_and_is_restarted_by_the_watchdog(
    container: Container,
) -> None:
    timings: dict[str, float] = {}

    started = time.monotonic()
    state = container.wait_active()
    timings["boot to active"] = time.monotonic() - started
    assert state["SubState"] == "running"
    assert state["StatusText"].endswith(", outbox 0"), state
    pid = state["MainPID"]
    user = container.run("ps", "-o", "user=,group=,supgid=", "-p", pid).split()
    assert user[0] != "root", user  # DynamicUser
    status, body = container.http("/healthz")
    assert (status, body) == (200, '{"status": "ok", "reasons": []}\n')
    status, body = container.http("/readyz")
    assert status == 503  # no broker in the container
    assert "mqtt not connected" in body

    started = time.monotonic()
    container.run("systemctl", "reload", UNIT)
    timings["reload"] = time.monotonic() - started
    wait_until(lambda: "reload: 0 link(s) to stop" in container.journal(), 10, "the reload")
    assert container.wait_active()["MainPID"] == pid  # same process

    started = time.monotonic()
    container.run("systemctl", "stop", UNIT)
    timings["stop"] = time.monotonic() - started
    stopped = container.show("ActiveState", "Result", "ExecMainStatus")
    assert stopped == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
    assert "gateway stopped" in container.journal()

    container.run("systemctl", "start", UNIT)
    state = container.wait_active()
    assert state["NRestarts"] == "0"
    container.run("systemctl", "kill", "--kill-who=main", "--signal=SIGSTOP", UNIT)
    frozen = time.monotonic()

    def restarted() -> dict[str, str] | None:
        now = container.show("ActiveState", "MainPID", "NRestarts")
        ok = now["NRestarts"] == "1" and now["ActiveState"] == "active"
        return now if ok else None

    after = wait_until(restarted, 30, "systemd to restart the frozen gateway")
    timings["SIGSTOP to restarted"] = time.monotonic() - frozen
    assert after["MainPID"] != state["MainPID"]
    journal = container.journal()
    assert "Watchdog timeout" in journal, journal
    assert "Failed with result 'watchdog'" in journal
    assert "Fatal Python error: Aborted" in journal  # faulthandler: the stack where it hung
    assert timings["SIGSTOP to restarted"] >= WATCHDOG_SEC - 0.5
    print("nspawn timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()))
