"""The gateway against a real Home Assistant (issue 23, "Proof"): `scripts/ha_e2e.py`'s
scenarios as tests. Opt-in (`pytest -m homeassistant_real`): each run starts Home Assistant
(~5-20 s) and takes a minute; skipped with the reason when Home Assistant is not installed
(`scripts/ha-e2e.sh --setup-only` installs it, once, under the user's cache dir)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import ha_e2e

pytestmark = [pytest.mark.homeassistant_real, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ha_e2e.Outcome]]:
    if "homeassistant_real" not in (request.config.getoption("-m") or ""):
        pytest.skip("opt-in: run with -m homeassistant_real (starts a real Home Assistant)")
    python = ha_e2e.cache_dir() / "venv" / "bin" / "python"
    if not (ha_e2e.cache_dir() / "ready").exists() or not python.exists():
        pytest.skip(f"Home Assistant {ha_e2e.HA_VERSION} is not installed: scripts/ha-e2e.sh "
                    "--setup-only installs it")  # fmt: skip
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
