"""The Dockerfile, built and run with podman: the image runs as a non-root user, reads a serial
device (a pty standing in for --device), publishes to the broker, passes its HEALTHCHECK
(/healthz), keeps its state in a volume and stops cleanly on SIGTERM (`podman stop`, exit 0).

Needs root, podman (with runc) and mmdebstrap, which scripts/setup.sh installs; it skips
without them, except in CI, where it fails (tests/ci.py). No container registry is reachable
here, so the `python:3.11-slim` base is built locally (scripts/base-image.sh: Debian 12's
Python 3.11 with mmdebstrap), once per machine: setup.sh builds it, and so does this test when
it is missing. The test then takes about a minute (a wheelhouse, the build, the run).

podman reads tests/containers.conf (CONTAINERS_CONF), not the machine's configuration: runc,
since crun refuses hosts with hybrid cgroups, and limits below this machine's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
from ci import skip_or_fail
from helpers import (
    Broker,
    SerialPair,
    Subscriber,
    free_port,
    send_until_seen,
    unique,
    wait_until,
)
from httpprobe import get

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "localhost/iot-gateway:test"
# podman's configuration for the test, not the machine's: see the file.
PODMAN_ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "tests" / "containers.conf")}

# The base image's build (scripts/base-image.sh) is bounded by its own timeout.
pytestmark = pytest.mark.timeout(900)


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (podman, mmdebstrap)"
    for program in ("podman", "runc", "mmdebstrap"):
        if shutil.which(program) is None:
            return f"needs {program} (scripts/setup.sh installs podman, runc and mmdebstrap)"
    return None


@pytest.fixture(scope="module", autouse=True)
def _real_parts() -> None:
    if (reason := _skip_reason()) is not None:
        skip_or_fail(reason)


def podman(*args: str, timeout: float = 300, check: bool = True) -> str:
    result = subprocess.run(
        ["podman", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=PODMAN_ENV,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {result.returncode}\n{result.stderr}")
    return result.stdout.strip()


def ensure_base_image() -> None:
    """python:3.11-slim, built once per machine where no registry is reachable; at once if kept."""
    result = subprocess.run(
        [ROOT / "scripts" / "base-image.sh"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise AssertionError(f"scripts/base-image.sh: {result.returncode}\n{result.stderr}")


def is_ready(url: str) -> bool:
    try:
        return get(url).status == 200
    except urllib.error.URLError:  # not listening yet
        return False


def wheelhouse(workdir: Path) -> Path:
    """Wheels of the package's dependencies and setuptools, downloaded here (offline build)."""
    src, wheels = workdir / "src", workdir / "wheels"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "gateway", src / "gateway", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--wheel-dir", str(wheels), str(src)], check=True, timeout=300)
    subprocess.run([*pip, "download", "--dest", str(wheels), "setuptools>=68"], check=True)
    return wheels


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, float]]:
    """The image, built from this checkout; removed afterwards, so that CI runs on one machine
    do not pile up images in podman's storage (the base image stays: it is built once)."""
    workdir = tmp_path_factory.mktemp("image")
    timings: dict[str, float] = {}
    started = time.monotonic()
    ensure_base_image()
    timings["base image"] = time.monotonic() - started
    started = time.monotonic()
    wheels = wheelhouse(workdir)
    timings["wheelhouse"] = time.monotonic() - started
    started = time.monotonic()
    try:
        podman(
            "build",
            "--pull=never",
            "--format=docker",  # OCI images drop HEALTHCHECK
            "--layers=false",  # no intermediate images left behind
            f"--build-context=wheels={wheels}",
            "-t",
            IMAGE,
            str(ROOT),
        )
        timings["build"] = time.monotonic() - started
        yield timings
    finally:
        podman("rmi", "--force", IMAGE, check=False)


def test_the_image_runs_as_a_non_root_user_is_healthy_and_stops_cleanly(
    image: dict[str, float],
    tmp_path: Path,
    broker: Broker,
    serial_pair: SerialPair,
    subscriber: Subscriber,
) -> None:
    inspect = json.loads(podman("image", "inspect", IMAGE))[0]
    config = inspect["Config"]
    assert config["User"] == "10001"
    assert config["StopSignal"] == "SIGTERM"
    assert "/var/lib/gateway" in config["Volumes"]
    assert "urllib" in " ".join(inspect["Healthcheck"]["Test"])
    size_mb = inspect["Size"] / 1e6

    os.chmod(serial_pair.realpath, 0o660)
    os.chown(serial_pair.realpath, -1, 20)  # dialout's gid in Debian (and in the image)
    port = free_port()
    (tmp_path / "config.yaml").write_text(
        "gateway: {id: ctr, shutdown_timeout: 3}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, keepalive: 5}}\n"
        f"metrics: {{host: 127.0.0.1, port: {port}}}\n"
        "devices:\n"
        "  - {id: boiler, type: serial, port: /dev/ttyUSB0}\n",
        encoding="utf-8",
    )
    name, volume = f"gw-test-{os.getpid()}-{unique()}", f"gw-state-{os.getpid()}-{unique()}"
    try:  # a failed run may still have created the container and the volume
        started = time.monotonic()
        podman(
            "run",
            "-d",
            "--name",
            name,
            "--network=host",  # the test's broker is on the host's loopback
            # No systemd here to time the periodic checks: the test runs the HEALTHCHECK itself.
            "--health-interval=disable",
            # A real adapter is passed with --device; a pty only opens through its own devpts
            # instance, so it is bind-mounted and its major (136) allowed instead.
            "-v",
            f"{serial_pair.realpath}:/dev/ttyUSB0",
            "--device-cgroup-rule=c 136:* rw",
            "-v",
            f"{tmp_path / 'config.yaml'}:/etc/gateway/config.yaml:ro",
            "-v",
            f"{volume}:/var/lib/gateway",
            "-e",
            f"GATEWAY_HEALTHZ_URL=http://127.0.0.1:{port}/healthz",
            IMAGE,
        )
        wait_until(lambda: is_ready(f"http://127.0.0.1:{port}/readyz"), 30, "/readyz 200")
        timings = {**image, "run to ready": time.monotonic() - started}
        assert podman("exec", name, "id", "-u") == "10001"
        assert podman("healthcheck", "run", name, check=False) in ("", "healthy")
        send_until_seen(serial_pair, subscriber, "gateway", "boiler")
        assert "outbox.sqlite3" in podman("exec", name, "ls", "/var/lib/gateway").split()

        started = time.monotonic()
        podman("stop", "--time", "20", name)
        timings["stop"] = time.monotonic() - started
        state = json.loads(podman("inspect", name))[0]["State"]
        assert state["ExitCode"] == 0
        logs = subprocess.run(
            ["podman", "logs", name], capture_output=True, text=True, check=False, env=PODMAN_ENV
        )
        assert "gateway stopped" in logs.stdout + logs.stderr
        subscriber.wait_for(lambda m: m.topic == "gateway/ctr/status" and m.text == "offline")
        print(
            f"container: image {size_mb:.0f} MB; "
            + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
        )
    finally:
        podman("rm", "--force", "--volumes", name, check=False)
        podman("volume", "rm", "-f", volume, check=False)
