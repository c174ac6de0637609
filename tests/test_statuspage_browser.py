"""The status page in a real browser: Debian's chromium, headless, driven by selenium through
Debian's chromedriver (both given by path: selenium-manager never downloads anything), against
the daemon with mosquitto and two pty devices.

The page loads and shows both devices with their last values; new values, an unplugged device
and a killed broker appear without a reload; on a phone-sized window the tables stack. The
screenshots are saved in the test's tmp dir; with UPDATE_DOCS_SCREENSHOT=1 the first one is
copied to docs/status-page.png (the README's picture).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    FAST_BACKOFF,
    Broker,
    Daemon,
    SerialPairFactory,
    gateway_config,
    serial_device,
    wait_until,
)
from httpprobe import endpoint, status, wait_link_state

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver (scripts/setup.sh does)"
DOCS = Path(__file__).resolve().parent.parent / "docs"
INJECTION = "<img src=x onerror=window.__pwned=1>"

pytestmark = pytest.mark.timeout(120)

if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(f"needs Debian's chromium and chromedriver: {INSTALL}", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (test extra)")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium-manager, should it run: no downloads
    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(arg)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_page(driver: WebDriver, check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Wait for the page (as the browser shows it now) to satisfy `check`."""
    try:
        return wait_until(check, timeout, what)
    except TimeoutError:
        body = driver.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"{what}; the page shows:\n{body}") from None


# Read in one script call each: the page swaps its <main> every 2 s, so an element found by one
# WebDriver call may be gone by the next.
def text_of(driver: WebDriver, element_id: str) -> str:
    text = driver.execute_script(
        "const e = document.getElementById(arguments[0]); return e ? e.innerText : '';",
        element_id,
    )
    return str(text)


def row_text(driver: WebDriver, device: str) -> str:
    return text_of(driver, f"device-{device}")


def row_state(driver: WebDriver, device: str) -> str | None:
    state = driver.execute_script(
        "const e = document.getElementById(arguments[0]); return e ? e.dataset.state : null;",
        f"device-{device}",
    )
    return None if state is None else str(state)


def css(driver: WebDriver, selector: str, prop: str) -> str:
    value = driver.execute_script(
        "return getComputedStyle(document.querySelector(arguments[0]))[arguments[1]];",
        selector,
        prop,
    )
    return str(value)


def test_the_status_page_follows_devices_and_broker_live(
    broker: Broker,
    make_serial_pair: SerialPairFactory,
    daemon: Daemon,
    browser: WebDriver,
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    boiler, door = make_serial_pair("GW0"), make_serial_pair("GW1")
    devices = [
        serial_device("boiler", boiler, {"temp": {"unit": "°C"}, "hum": {"unit": "%"}}),
        serial_device("door", door, decoder="json", name="Front door"),
    ]
    config = gateway_config(broker, devices, gateway_id="edge-1")
    config["mqtt"]["backoff"] = dict(FAST_BACKOFF)
    daemon.start(config)
    base = endpoint(daemon)
    docs = os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1"
    temps = [21.5, 21.75, 22.25, 22.0, 22.5, 23.0] if docs else [21.5, 22.25]
    for link in ("mqtt", "serial:boiler", "serial:door"):
        wait_link_state(base, link, "up")  # the ports are open: nothing written is lost
    boiler.write(f"temp={temps[0]},hum=40\n".encode())
    door.write(json.dumps({"open": False, "note": INJECTION, "battery": 97}).encode() + b"\n")
    wait_until(
        lambda: all(status(base)["devices"][d]["sensors"] for d in ("boiler", "door")),
        10,
        "readings of both devices in /status",
    )

    browser.get(f"{base}/")
    browser.execute_script("window.__loaded = 1")  # gone if the page reloads
    assert "21.5 °C" in row_text(browser, "boiler")  # the server-rendered first view
    assert "40 %" in row_text(browser, "boiler")
    door_row = row_text(browser, "door")
    assert "Front door" in door_row
    assert INJECTION in door_row  # shown as text, not made an element
    assert "97" in door_row
    assert text_of(browser, "broker-state") == "connected"

    for temp in temps[1:]:  # the ring keeps a point every 2.5 s: a sparkline needs two
        time.sleep(2.6)
        boiler.write(f"temp={temp},hum=41\n".encode())
    wait_page(
        browser,
        lambda: f"{temps[-1]:g} °C" in row_text(browser, "boiler"),
        6,
        "the new value without a reload",
    )
    assert browser.find_elements(By.CSS_SELECTOR, "#device-boiler svg.spark polyline")
    assert browser.execute_script("return window.__pwned") is None
    browser.save_screenshot(str(tmp_path / "status-page.png"))
    if docs:
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(tmp_path / "status-page.png", DOCS / "status-page.png")

    boiler.unplug()
    unplugged = time.monotonic()
    wait_page(browser, lambda: row_state(browser, "boiler") != "up", 5, "boiler down")
    down = row_text(browser, "boiler")
    assert "down" in down or "connecting" in down
    assert "offline" in down
    print(f"unplugged -> shown down in {time.monotonic() - unplugged:.1f}s")
    assert row_state(browser, "door") == "up"

    broker.kill()
    killed = time.monotonic()
    wait_page(
        browser,
        lambda: text_of(browser, "broker-state") == "disconnected",
        8,
        "the broker shown disconnected",
    )
    broker_line = text_of(browser, "gateway")
    assert re.search(r"disconnected for [\d.]+ \w+: \S", broker_line), broker_line  # why
    print(f"broker killed -> shown disconnected in {time.monotonic() - killed:.1f}s")
    assert browser.execute_script("return window.__loaded") == 1  # never reloaded
    browser.save_screenshot(str(tmp_path / "status-page-down.png"))

    # A phone: the device table stacks (its header hidden, each row a card).
    browser.set_window_size(390, 844)
    assert css(browser, "table.devices thead", "display") == "none"
    assert css(browser, "#device-door td", "display") == "block"
    browser.save_screenshot(str(tmp_path / "status-page-phone.png"))
    print(f"browser test body took {time.monotonic() - started:.1f}s; screenshots in {tmp_path}")
