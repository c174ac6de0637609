"""The shipped systemd unit: `systemd-analyze verify` is silent, the hardening score is good, and
the unit agrees with the gateway's defaults and with the sysusers.d file.

`verify` exits 0 on warnings (unknown keys, bad values), so any output is a failure. It also
fails when ExecStart's program does not exist, so the unit is checked as a copy whose ExecStart
points at a program that exists here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import GatewaySection, MetricsSection

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "gateway.service"
SYSUSERS = ROOT / "systemd" / "gateway.sysusers"
MAX_EXPOSURE = 3.0  # systemd-analyze security: "OK" is below 4.0; we want better
# fds the gateway needs besides HTTP clients: MQTT, serial ports, the outbox, D-Bus, logs.
FDS_BESIDES_HTTP = 1024

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (systemd)"
)


def unit_values(key: str) -> list[str]:
    pattern = re.compile(rf"^{re.escape(key)}=(.*)$", re.MULTILINE)
    return pattern.findall(UNIT.read_text(encoding="utf-8"))


@pytest.fixture
def checkable_unit(tmp_path: Path) -> Path:
    """A copy of the unit whose ExecStart program exists on this machine."""
    text = UNIT.read_text(encoding="utf-8")
    text, n = re.subn(r"^ExecStart=\S+", f"ExecStart={sys.executable}", text, flags=re.MULTILINE)
    assert n == 1
    copy = tmp_path / UNIT.name
    copy.write_text(text, encoding="utf-8")
    return copy


def test_verify_prints_nothing(checkable_unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(checkable_unit)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_security_exposure_is_low(checkable_unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(checkable_unit)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_unit_matches_the_gateway() -> None:
    assert unit_values("Type") == ["notify"]
    (exec_start,) = unit_values("ExecStart")
    assert re.fullmatch(r"/\S+/gateway run -c /\S+\.yaml", exec_start)
    assert unit_values("ExecReload") == ["/bin/kill -HUP $MAINPID"]
    # Exit code 2 (unusable config) must not be restarted in a loop.
    assert unit_values("RestartPreventExitStatus") == ["2"]
    (stop_timeout,) = unit_values("TimeoutStopSec")
    seconds = float(stop_timeout.removesuffix("s"))
    assert seconds > GatewaySection.model_fields["shutdown_timeout"].default
    # The gateway pings while it makes progress; a stall must be noticed before systemd's
    # deadline only if it is real: WatchdogSec above the gateway's own stall_timeout.
    (watchdog,) = unit_values("WatchdogSec")
    assert float(watchdog.removesuffix("s")) > GatewaySection.model_fields["stall_timeout"].default
    assert unit_values("Restart") == ["on-failure"]  # a watchdog timeout is a failure


def test_sysusers_declares_every_supplementary_group() -> None:
    groups = {g for line in unit_values("SupplementaryGroups") for g in line.split()}
    declared = {
        fields[1]
        for line in SYSUSERS.read_text(encoding="utf-8").splitlines()
        if (fields := line.split()) and fields[0] == "g"
    }
    assert groups
    assert groups <= declared


def _size(value: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    return int(value[:-1]) * units[value[-1]] if value[-1] in units else int(value)


def test_the_unit_bounds_fds_memory_and_tasks() -> None:
    """LimitNOFILE leaves room for MQTT, the ports and the outbox even with the HTTP endpoint at
    its largest connection cap; memory and tasks are bounded so a leak ends in a restart."""
    (nofile,) = unit_values("LimitNOFILE")
    soft = int(nofile.split(":")[0])
    largest_cap = MetricsSection.model_fields["max_connections"].metadata
    cap = max(m.le for m in largest_cap if hasattr(m, "le"))
    assert soft >= cap + FDS_BESIDES_HTTP
    (high,) = unit_values("MemoryHigh")
    (most,) = unit_values("MemoryMax")
    assert 0 < _size(high) < _size(most)
    (tasks,) = unit_values("TasksMax")
    assert int(tasks) >= 32
