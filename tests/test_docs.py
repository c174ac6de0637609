"""The README, the docs site's pages and the changelog agree with the code on facts a test can
check."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import gateway
from gateway.app_config import load_config

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def test_readme_states_the_package_version() -> None:
    (stated,) = re.findall(r"Status: version (\S+) ", _read("README.md"))
    assert stated == gateway.__version__


def test_the_changelog_starts_with_the_package_version() -> None:
    versions = re.findall(r"^## \[([^\]]+)\]", _read("CHANGELOG.md"), flags=re.MULTILINE)
    assert versions[0] == gateway.__version__


def test_shutdown_steps_are_numbered_without_gaps() -> None:
    page = _read("docs/architecture.md")
    section = page.split("On SIGTERM or\nSIGINT the shutdown runs in this order:", 1)[1]
    steps = re.findall(r"^(\d+)\. ", section.split("\n\n", 2)[1], flags=re.MULTILINE)
    assert [int(n) for n in steps] == list(range(1, len(steps) + 1))


def _block(page: str, kind: str) -> str:
    """The first ```kind block of a docs page."""
    return _read(page).split(f"```{kind}\n", 1)[1].split("```", 1)[0]


def test_the_sensor_stream_examples_run_as_shown(tmp_path: Path) -> None:
    """The `gateway decode` examples print what the page says (but the time stamps)."""
    config = tmp_path / "gateway.yaml"
    config.write_text("gateway: {id: gw1}\n" + _block("docs/streams.md", "yaml"), "utf-8")
    console = _block("docs/streams.md", "console")
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
    config.write_text("gateway: {id: gw1}\n" + _block("docs/homeassistant.md", "yaml"), "utf-8")
    cfg = load_config(config)
    assert cfg.homeassistant.discovery
    assert [d.display_name for d in cfg.devices] == ["Boiler room", "Kitchen"]


# -- links outside the site (mkdocs build --strict checks those inside it) ----------------------


def _anchors(page: Path) -> set[str]:
    """The ids MkDocs gives a page's headings (its default slugs), and its explicit ids."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    ids = set(re.findall(r'<a id="([^"]+)">', text))
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\s-]", "", heading.lower()).strip()
        ids.add(re.sub(r"[-\s]+", "-", slug))
    return ids


@pytest.mark.parametrize("name", ["README.md", "CHANGELOG.md"])
def test_links_from_the_top_level_files_resolve(name: str) -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", _read(name))
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert local
    for link in local:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        if name == "CHANGELOG.md" and path == "docs/reference.md":
            continue  # generated when the site is built (docs/hooks/config_reference.py)
        assert target.is_file(), f"{name}: {link}: no such file"
        if anchor:
            assert anchor in _anchors(target), f"{name}: {link}: no such anchor"


def test_the_readme_is_a_front_page() -> None:
    assert len(_read("README.md").splitlines()) <= 160
    for page in ("getting-started.md", "configuration.md", "delivery.md", "architecture.md"):
        assert f"(docs/{page}" in _read("README.md")
