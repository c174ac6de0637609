"""The gateway against a real Home Assistant (issue 23, "Proof"): `scripts/ha_e2e.py`'s
scenarios as tests. One run starts mosquitto, Home Assistant (~5 s) and the gateway, and plays
every scenario (~20 s). `scripts/setup.sh` installs Home Assistant once per machine under the
user's cache dir (`scripts/ha-e2e.sh --setup-only`, about a minute; it needs Python 3.13);
without it the tests skip with the reason, and fail in CI (`tests/ci.py`)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import ha_e2e
from ci import skip_or_fail

pytestmark = [pytest.mark.homeassistant_real, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def outcomes(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, ha_e2e.Outcome]]:
    python = ha_e2e.cache_dir() / "venv" / "bin" / "python"
    if not (ha_e2e.cache_dir() / "ready").exists() or not python.exists():
        skip_or_fail(
            f"Home Assistant {ha_e2e.HA_VERSION} is not installed: scripts/ha-e2e.sh "
            "--setup-only installs it (scripts/setup.sh does, where Python 3.13 is)"
        )
    with contextlib.ExitStack() as stack:
        found = ha_e2e.run_all(python, tmp_path_factory.mktemp("ha-e2e"), stack)
        yield {o.name: o for o in found}


def failed(outcomes: dict[str, ha_e2e.Outcome], defects: bool) -> list[str]:
    return [
        f"{o.name}: {o.detail}"
        for o in outcomes.values()
        if ("(defect" in o.name) == defects and not o.ok
    ]


def test_the_defects_stay_fixed_against_a_real_home_assistant(
    outcomes: dict[str, ha_e2e.Outcome],
) -> None:
    assert sum("(defect" in name for name in outcomes) == 2
    assert failed(outcomes, defects=True) == []


def test_controls_work_from_a_real_home_assistant(outcomes: dict[str, ha_e2e.Outcome]) -> None:
    assert sum("(defect" not in name for name in outcomes) >= 7
    assert failed(outcomes, defects=False) == []
