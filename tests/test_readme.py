"""The README agrees with the code on facts a test can check."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import gateway
from gateway.config import load_config

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_readme_states_the_package_version() -> None:
    (stated,) = re.findall(r"Status: version (\S+) ", README)
    assert stated == gateway.__version__


def test_shutdown_steps_are_numbered_without_gaps() -> None:
    section = README.split("On SIGTERM or\nSIGINT the shutdown runs in this order:", 1)[1]
    steps = re.findall(r"^(\d+)\. ", section.split("\n\n", 2)[1], flags=re.MULTILINE)
    assert [int(n) for n in steps] == list(range(1, len(steps) + 1))


def _block(heading: str, kind: str) -> str:
    """The first ```kind block after a `## heading`."""
    section = README.split(f"\n## {heading}\n", 1)[1]
    return section.split(f"```{kind}\n", 1)[1].split("```", 1)[0]


def test_the_sensor_stream_examples_run_as_shown(tmp_path: Path) -> None:
    """The `gateway decode` examples print what the README says (but the time stamps)."""
    config = tmp_path / "gateway.yaml"
    config.write_text("gateway: {id: gw1}\n" + _block("Sensor streams", "yaml"), "utf-8")
    console = _block("Sensor streams", "console")
    runs = [chunk.split("\n", 1) for chunk in console.split("$ gateway ")[1:]]
    assert len(runs) == 3
    for command, expected in runs:
        args = shlex.split(command.replace("gateway.yaml", str(config)))
        result = subprocess.run(
            [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, check=True
        )
        stamp = re.compile(r'"ts": [0-9.]+')
        assert stamp.sub('"ts": T', result.stdout) == stamp.sub('"ts": T', expected)


def test_the_home_assistant_example_is_a_valid_config(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("gateway: {id: gw1}\n" + _block("Home Assistant", "yaml"), "utf-8")
    cfg = load_config(config)
    assert cfg.homeassistant.discovery
    assert [d.display_name for d in cfg.devices] == ["Boiler room", "Kitchen"]
