"""Tests of real parts that a machine may lack (podman, systemd-nspawn, root): they skip with the
reason on a developer's machine, and fail in CI, where scripts/setup.sh installs every part: a
test that is skipped in CI checks nothing, and its skip would hide a broken setup."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """CI=true (or any value but empty, 0 and false), as CI services and `.ci/run`'s callers set."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def skip_or_fail(reason: str) -> NoReturn:
    """Skip for `reason`; in CI, fail with it instead."""
    if in_ci():
        pytest.fail(f"CI=true: this test must run, but {reason}", pytrace=False)
    pytest.skip(reason)
