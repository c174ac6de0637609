"""The README agrees with the code on facts a test can check."""

from __future__ import annotations

import re
from pathlib import Path

import gateway

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_readme_states_the_package_version() -> None:
    (stated,) = re.findall(r"Status: version (\S+) ", README)
    assert stated == gateway.__version__


def test_shutdown_steps_are_numbered_without_gaps() -> None:
    section = README.split("On SIGTERM or\nSIGINT the shutdown runs in this order:", 1)[1]
    steps = re.findall(r"^(\d+)\. ", section.split("\n\n", 2)[1], flags=re.MULTILINE)
    assert [int(n) for n in steps] == list(range(1, len(steps) + 1))
