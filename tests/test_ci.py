"""tests/ci.py: a test of a real part skips for want of it, except in CI, where it fails."""

from __future__ import annotations

import pytest
from ci import in_ci, skip_or_fail


@pytest.mark.parametrize("value", ["true", "1", "yes", "TRUE"])
def test_in_ci_a_missing_part_fails_the_test(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci()
    with pytest.raises(pytest.fail.Exception, match="CI=true: this test must run, but needs x"):
        skip_or_fail("needs x")


@pytest.mark.parametrize("value", [None, "", "0", "false", "False"])
def test_elsewhere_a_missing_part_skips_the_test(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert not in_ci()
    with pytest.raises(pytest.skip.Exception, match="needs x"):
        skip_or_fail("needs x")
