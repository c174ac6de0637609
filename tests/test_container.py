"""The Dockerfile, built and run with podman: the image runs as a non-root user, reads a serial
device (a pty standing in for --device), publishes to the broker, passes its HEALTHCHECK
(/healthz), keeps its state in a volume and stops cleanly on SIGTERM (`podman stop`, exit 0).

It runs whenever podman, mmdebstrap and the locally built base image are there (about a
minute). Building that base image takes 2-3 minutes more (mmdebstrap, since no container
registry is reachable here), so on a machine without it the test is opt-in:

    GATEWAY_TEST_CONTAINER=1 ./scripts/test.sh -k container

Needs root, podman and mmdebstrap (`apt-get install -y podman mmdebstrap`). The base image is
built once and kept as `python:3.11-slim` (Debian 12's Python 3.11, like the official image).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest
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
BASE = "docker.io/library/python:3.11-slim"
IMAGE = "localhost/iot-gateway:test"


def _exists(image: str) -> bool:
    return subprocess.run(["podman", "image", "exists", image], check=False).returncode == 0


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (podman, mmdebstrap)"
    for program in ("podman", "mmdebstrap"):
        if shutil.which(program) is None:
            return f"needs {program} (apt-get install -y podman mmdebstrap)"
    if os.environ.get("GATEWAY_TEST_CONTAINER") != "1" and not _exists(BASE):
        # With the base image at hand the test takes about a minute and runs by default.
        return "no local base image: building it takes 2-3 min; set GATEWAY_TEST_CONTAINER=1"
    return None


pytestmark = [
    pytest.mark.skipif((reason := _skip_reason()) is not None, reason=reason or ""),
    pytest.mark.timeout(600),
]


def podman(*args: str, timeout: float = 300, check: bool = True) -> str:
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {result.returncode}\n{result.stderr}")
    return result.stdout.strip()


def ensure_base_image(workdir: Path) -> None:
    """python:3.11-slim stand-in: Debian 12 with python3, venv and `python`, built locally."""
    if _exists(BASE):
        return
    rootfs = workdir / "rootfs.tar"
    packages = "python3,python3-venv,python-is-python3,ca-certificates,passwd"
    subprocess.run(
        ["mmdebstrap", "--variant=apt", f"--include={packages}", "bookworm", str(rootfs)],
        check=True,
        capture_output=True,
        timeout=400,
    )
    podman("import", "--change", 'CMD ["python3"]', str(rootfs), BASE)
    rootfs.unlink()


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
def image(tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    workdir = tmp_path_factory.mktemp("image")
    timings: dict[str, float] = {}
    started = time.monotonic()
    ensure_base_image(workdir)
    timings["base image"] = time.monotonic() - started
    started = time.monotonic()
    wheels = wheelhouse(workdir)
    timings["wheelhouse"] = time.monotonic() - started
    started = time.monotonic()
    podman(
        "build",
        "--pull=never",
        "--format=docker",  # OCI images drop HEALTHCHECK
        f"--build-context=wheels={wheels}",
        "-t",
        IMAGE,
        str(ROOT),
    )
    timings["build"] = time.monotonic() - started
    return timings


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
    started = time.monotonic()
    podman(
        "run",
        "-d",
        "--name",
        name,
        "--network=host",  # the test's broker is on the host's loopback
        # This machine's limits are below podman's defaults (setrlimit fails otherwise).
        "--ulimit=nofile=1024:1024",
        "--ulimit=nproc=1024:1024",
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
    try:
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
        logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True, check=False)
        assert "gateway stopped" in logs.stdout + logs.stderr
        subscriber.wait_for(lambda m: m.topic == "gateway/ctr/status" and m.text == "offline")
        print(
            f"container: image {size_mb:.0f} MB; "
            + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
        )
    finally:
        podman("rm", "--force", "--volumes", name, check=False)
        podman("volume", "rm", "-f", volume, check=False)
